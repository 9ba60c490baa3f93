"""Hugging Face models in the loop (model.kind=hf), without a network: a tiny random GPT-2 (with a padded embedding)
and a tiny Llama-style model, each with a BPE tokenizer trained here, saved with save_pretrained to a temporary
folder and loaded through --model.name=DIR. The adapter's contract, beam search and prompted generation on them,
2-generation runs on tinyshakespeare writing every key and TensorBoard tag the built-in GPT writes, the init modes,
resume, and one-line errors for a missing model or tokenizer.

Run: python -m pytest tests/test_hf.py -q
"""
from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from models import ModelConfig, build_model  # noqa: E402
from models.decoding import beam_decode  # noqa: E402
from models.sampling import SampleConfig, _to_documents, generate_continuations, generate_reference  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE = os.path.join(ROOT, "..", "shared", "corpora", "tinyshakespeare.txt")
needs_corpus = pytest.mark.skipif(not os.path.exists(SHAKESPEARE), reason="../shared/corpora/tinyshakespeare.txt is absent")
EOS = "<|endoftext|>"
TEXT = ["First Citizen: before we proceed any further, hear me speak.", "All: speak, speak.",
        "You are all resolved rather to die than to famish?", "Resolved. resolved.",
        "First, you know Caius Marcius is chief enemy to the people."] * 20


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    docs = TEXT
    if os.path.exists(SHAKESPEARE):
        with open(SHAKESPEARE, encoding="utf-8") as f:
            docs = [f.read(200_000)]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=400, special_tokens=[EOS], show_progress=False,
                                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=EOS, bos_token=EOS)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """{"gpt2": DIR, "llama": DIR}: random tiny checkpoints with their tokenizer, as save_pretrained writes them."""
    root = tmp_path_factory.mktemp("hf")
    tok = _train_tokenizer()
    v, eos = len(tok), tok.eos_token_id
    configs = {
        # 3 padded embedding rows past the tokenizer, as OPT-125m has: their logits must never be sampled
        "gpt2": transformers.GPT2Config(vocab_size=v + 3, n_positions=128, n_embd=32, n_layer=2, n_head=2,
                                        bos_token_id=eos, eos_token_id=eos),
        "llama": transformers.LlamaConfig(vocab_size=v, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                          bos_token_id=eos, eos_token_id=eos, pad_token_id=None,
                                          tie_word_embeddings=False),
    }
    out = {}
    for name, cfg in configs.items():
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(cfg)
        with torch.no_grad():  # sharper than HF's init, so that sampled text varies
            for p in model.parameters():
                if p.dim() >= 2:
                    p.mul_(5.0)
        d = root / name
        model.save_pretrained(str(d))
        tok.save_pretrained(str(d))
        out[name] = str(d)
    return out


def _model(d, block=64, vocab=None):
    tok = transformers.AutoTokenizer.from_pretrained(d)
    cfg = ModelConfig(kind="hf", name=d, block_size=block, vocab_size=vocab or len(tok))
    return build_model(cfg, torch.Generator().manual_seed(0)).eval(), tok.eos_token_id


# --- the contract --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_forward_contract_and_cache(hf_dirs, arch):
    model, eot = _model(hf_dirs[arch])
    V = model.config.vocab_size
    idx = torch.randint(0, V, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(idx)
        assert logits.shape == (3, 20, V) and logits.dtype == torch.float32  # padded rows (gpt2) dropped
        tgt = idx.roll(-1, 1)
        tgt[:, -1] = -1
        per = model(idx, tgt, reduction="none")
        assert per.shape == (3, 20) and (per[:, -1] == 0).all()
        assert model(idx, tgt).item() == pytest.approx(per[:, :-1].mean().item(), rel=1e-5)
        cache = model.new_kv_cache(3)
        steps = [model(idx[:, :12], kv_cache=cache)]
        for t in range(12, 20):
            steps.append(model(idx[:, t:t + 1], kv_cache=cache))
        assert cache.pos == 20
        torch.testing.assert_close(torch.cat(steps, 1), logits, atol=1e-4, rtol=1e-4)
        with pytest.raises(ValueError, match="exceeds model.block_size=64"):
            model(torch.zeros(1, 65, dtype=torch.long))
    assert model.flops_per_token() > 6 * model.num_params(exclude_position=True)


def test_cache_keyword_of_older_transformers_works(hf_dirs):
    """forward's cache keyword is `cache` in transformers 5.2x and `past_key_values` before (our GPU machine has
    5.17): the adapter reads it from the signature; the old name (still accepted, deprecated) gives the same steps."""
    model, _ = _model(hf_dirs["gpt2"])
    assert model._cache_arg == "cache"
    idx = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(2))
    model._cache_arg = "past_key_values"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation of past_key_values
        cache = model.new_kv_cache(2)
        steps = [model(idx[:, :8], kv_cache=cache)] + [model(idx[:, t:t + 1], kv_cache=cache) for t in range(8, 12)]
        torch.testing.assert_close(torch.cat(steps, 1), model(idx), atol=1e-4, rtol=1e-4)


def test_scratch_is_seeded_and_differs_from_pretrained(hf_dirs):
    cfg = ModelConfig(kind="hf", name=hf_dirs["llama"], block_size=32, vocab_size=300)
    a = build_model(cfg, torch.Generator().manual_seed(1), scratch=True).state_dict()
    b = build_model(cfg, torch.Generator().manual_seed(1), scratch=True).state_dict()
    c = build_model(cfg, torch.Generator().manual_seed(2), scratch=True).state_dict()
    p = build_model(cfg, torch.Generator().manual_seed(1)).state_dict()
    k = "hf.model.layers.0.mlp.up_proj.weight"
    assert torch.equal(a[k], b[k]) and not torch.equal(a[k], c[k]) and not torch.equal(a[k], p[k])


# --- decoding on HF models ------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_prompted_continuations_have_k_tokens(hf_dirs, arch):
    model, eot = _model(hf_dirs[arch], block=32)
    K = 16
    prompts = np.random.default_rng(0).integers(eot + 1, model.config.vocab_size, size=(10, K))
    cfg = SampleConfig(prompt_tokens=K, batch_size=4)
    out = generate_continuations(model, prompts, cfg, eot, torch.Generator().manual_seed(3))
    assert len(out) == 10
    for c in out:  # exactly K tokens, or fewer when the model emitted EOT (not kept)
        assert len(c) <= K and eot not in c
    ref = generate_reference(model, 0, cfg, eot, torch.Generator().manual_seed(3), prompts=prompts)
    assert all(np.array_equal(a, b) for a, b in zip(out, ref))  # cached == full recompute, same draws
    beams = SampleConfig(prompt_tokens=K, batch_size=4, num_beams=5)
    b1 = generate_continuations(model, prompts, beams, eot, torch.Generator().manual_seed(3))
    b2 = generate_continuations(model, prompts, beams, eot, torch.Generator().manual_seed(99))
    assert all(np.array_equal(a, b) and len(a) <= K for a, b in zip(b1, b2))  # deterministic


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_beam_of_one_is_greedy_and_cache_matches_recompute(hf_dirs, arch):
    model, eot = _model(hf_dirs[arch], block=16)
    K = 8
    prompts = np.random.default_rng(1).integers(eot + 1, model.config.vocab_size, size=(4, K))
    greedy = generate_continuations(model, prompts, SampleConfig(temperature=0, prompt_tokens=K), eot,
                                    torch.Generator())
    with torch.inference_mode():
        one = beam_decode(model, torch.as_tensor(prompts), K, 1, eot)
        start = torch.full((2, 1), eot)
        five = beam_decode(model, start, 30, 5, eot, stop_at_eot=False)  # 30 tokens cross context cuts (block 16)
        five_ref = beam_decode(model, start, 30, 5, eot, use_cache=False, stop_at_eot=False)
    assert all(np.array_equal(g, b) for g, b in zip(greedy, _to_documents(one, eot, K)))
    assert torch.equal(five, five_ref)


# --- runs ----------------------------------------------------------------------------------------------------
def _run(tmp_path, name, model_dir, *extra, generations=2):
    from training.cli import main

    out = tmp_path / name
    args = ["run", "--preset", "debug", "--out", str(out), f"--corpus.path={SHAKESPEARE}",
            f"--corpus.cache_dir={tmp_path / 'cache'}", f"--loop.generations={generations}", "--loop.progress=false",
            "--loop.first_steps=6", "--train.steps=4", "--train.lr=1e-3", "--mix.fresh_fraction=0.5",
            "--mix.tokens_per_generation=4000", "--sample.max_new_tokens=48", "--loop.measure_chars=2000",
            "--loop.eval_tokens=2000", "--model.block_size=64"]
    if model_dir is not None:
        args += ["--model.kind=hf", f"--model.name={model_dir}"]
    return main(args + list(extra)), out


def _keys_and_tags(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recs = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    tags = {t for kind in ("scalars", "images", "histograms", "tensors") for t in acc.Tags()[kind]}
    return recs, {k for r in recs for k, v in r.items() if v is not None}, tags


@pytest.fixture(scope="module")
def gpt_reference(tmp_path_factory):
    """The keys and tags of the built-in GPT on the same corpus and budget."""
    tmp = tmp_path_factory.mktemp("ref")
    code, out = _run(tmp, "gpt", None)
    assert code == 0
    return _keys_and_tags(out)


@needs_corpus
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_two_generations_write_every_key_and_tag(hf_dirs, gpt_reference, tmp_path, capsys, arch):
    code, out = _run(tmp_path, arch, hf_dirs[arch])
    assert code == 0, capsys.readouterr().err
    recs, keys, tags = _keys_and_tags(out)
    _, ref_keys, ref_tags = gpt_reference
    assert [r["generation"] for r in recs] == [0, 1]
    assert ref_keys - keys == set() and ref_tags - tags == set()
    assert all(0 < r["val/bpc"] < 20 and r["val/ppl"] > 1 for r in recs)
    config = json.load(open(out / "config.json"))
    assert config["model"]["kind"] == "hf" and config["tokenizer"] == {**config["tokenizer"], "kind": "pretrained",
                                                                        "name": hf_dirs[arch]}
    for g in (0, 1):
        state = torch.load(out / f"gen_{g:03d}" / "model.pt", weights_only=True)
        assert any(k.startswith("hf.") for k in state)
    # resume: the last generation redone gives the same record; a finished run is left alone
    os.remove(out / "gen_001" / "DONE")
    assert _run(tmp_path, arch, hf_dirs[arch])[0] == 0
    again = [json.loads(line) for line in open(out / "metrics.jsonl")]
    strip = lambda r: {k: v for k, v in r.items() if not k.startswith(("time/", "train/tokens_per_s"))}  # noqa: E731
    assert [strip(r) for r in again] == [strip(r) for r in recs]


@needs_corpus
@pytest.mark.parametrize("arch,extra", [("gpt2", ["--sample.num_beams=5"]),
                                        ("llama", ["--sample.prompt_tokens=64", "--model.block_size=128",
                                                   "--sample.repetition_penalty=1.3"])])
def test_beam_and_prompted_runs(hf_dirs, tmp_path, capsys, arch, extra):
    code, out = _run(tmp_path, arch, hf_dirs[arch], *extra, generations=1)
    assert code == 0, capsys.readouterr().err
    ids = np.load(out / "gen_000" / "ids.npy")
    docs = (out / "gen_000" / "samples.txt").read_text()
    assert len(ids) >= 2000 and docs.strip()
    rec = json.loads(open(out / "metrics.jsonl").readline())
    # continuations that reach their 64 tokens count as cut (their lengths: test_prompted_continuations_have_k_tokens)
    assert rec["samples/truncated_rate"] > 0


def _start_weights(monkeypatch):
    """Record a copy of the weights every generation starts from."""
    from training import loop

    starts = []
    real = loop.initial_model

    def spy(cfg, run_dir, g):
        m = real(cfg, run_dir, g)
        starts.append({k: v.clone() for k, v in m.state_dict().items()})
        return m

    monkeypatch.setattr(loop, "initial_model", spy)
    return starts


@needs_corpus
@pytest.mark.parametrize("arch", ["gpt2", None])
def test_init_pretrained_starts_every_generation_from_the_same_weights(hf_dirs, tmp_path, monkeypatch, arch):
    starts = _start_weights(monkeypatch)
    code, out = _run(tmp_path, "p", hf_dirs[arch] if arch else None, "--loop.init=pretrained", generations=3)
    assert code == 0 and len(starts) == 3
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(starts[1], starts[2])
    trained0 = torch.load(out / "gen_000" / "model.pt", weights_only=True)
    if arch:  # the checkpoint's pretrained weights, every generation (generation 0 too)
        assert same(starts[0], starts[1]) and not same(trained0, starts[1])
    else:  # the built-in GPT: generation 0's trained model
        assert same(trained0, starts[1]) and not same(starts[0], starts[1])


@needs_corpus
def test_init_warm_continues_from_the_previous_generation(hf_dirs, tmp_path, monkeypatch):
    starts = _start_weights(monkeypatch)
    code, out = _run(tmp_path, "w", hf_dirs["llama"])
    assert code == 0
    trained0 = torch.load(out / "gen_000" / "model.pt", weights_only=True)
    assert all(torch.equal(trained0[k], starts[1][k]) for k in trained0)


# --- bad input: one line, exit 2, nothing written ------------------------------------------------------------
def test_missing_model_or_tokenizer_is_one_line(hf_dirs, tmp_path, capsys):
    from training.cli import main

    no_tok = tmp_path / "no_tok"
    shutil.copytree(hf_dirs["gpt2"], no_tok)
    for f in os.listdir(no_tok):
        if "token" in f or f in ("vocab.json", "merges.txt"):
            os.remove(no_tok / f)
    cases = [(str(tmp_path / "nowhere"), "model.name="), (str(no_tok), "tokenizer.name="),
             (str(tmp_path), "is not a saved model"), ("some-org/no-such-model", "model.name='some-org/no-such-model'")]
    for name, needle in cases:
        out = tmp_path / "run"
        code = main(["run", "--preset", "debug", "--out", str(out), "--model.kind=hf", f"--model.name={name}",
                     "--loop.progress=false"])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


@pytest.mark.parametrize("args,needle", [
    (["--model.kind=hf"], "model.kind=hf needs --model.name"),
    (["--model.name=gpt2"], "model.name='gpt2' is for model.kind=hf"),
    (["--model.kind=hf", "--model.name=x", "--tokenizer.kind=char"], "not tokenizer.kind=char"),
    (["--train.grad_checkpointing=true"], "train.grad_checkpointing=true is for model.kind=hf"),
    (["--sample.num_beams=0"], "sample.num_beams"),
    (["--loop.init=pretrained", "--loop.init=cold"], "loop.init"),
])
def test_bad_model_options_are_one_line(tmp_path, capsys, args, needle):
    from training.cli import main

    out = tmp_path / "run"
    code = main(["run", "--preset", "debug", "--out", str(out), "--loop.progress=false", *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_block_size_beyond_the_checkpoint_is_refused(hf_dirs, tmp_path, capsys):
    from training.cli import main

    out = tmp_path / "run"
    code = main(["run", "--preset", "debug", "--out", str(out), "--model.kind=hf", f"--model.name={hf_dirs['gpt2']}",
                 "--model.block_size=256", "--loop.progress=false"])
    err = capsys.readouterr().err
    assert code == 2 and "exceeds the 128 positions" in err and not out.exists()


def test_shumailov_recipe_lists_its_points(capsys):
    from training.cli import main

    assert main(["sweep", os.path.join(ROOT, "sweeps", "shumailov.yaml"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 10  # 2 regimes x 5 seeds
    assert all("--model.name=facebook/opt-125m" in line and "--sample.num_beams=5" in line for line in lines)
