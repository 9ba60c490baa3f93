"""Real corpora and subword tokenizers: table files, the hub offline, BPE and pretrained tokenizers, bits per
character on one axis, the memory-mapped token cache, and 2-generation runs on tinyshakespeare (when present).

Run: python -m pytest tests/test_sources.py -q
"""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import pytest
import torch

from data import corpus as corpus_mod
from data.corpus import CorpusConfig, load_corpus, split_documents
from data.mixing import MixConfig, RealSource
from data.tokencache import cache_path, token_arrays
from data.tokenizer import CharTokenizer, TokenizerConfig, build_tokenizer, load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE = os.path.join(ROOT, "..", "shared", "corpora", "tinyshakespeare.txt")
DOCS = [f"Story {i}: the cat saw {i % 7} birds, café 日本 🙂.\nLine two of {i}." for i in range(40)]


def _write_table(path, docs, ext):
    rows = [{"id": i, "text": d} for i, d in enumerate(docs)] + [{"id": -1, "text": ""}]  # an empty row: skipped
    if ext == ".jsonl":
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    elif ext == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    else:
        import pyarrow as pa

        table = pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})
        if ext == ".csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, str(path))
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, str(path))
    return str(path)


@pytest.mark.parametrize("ext", [".jsonl", ".json", ".csv", ".parquet"])
def test_table_sources(tmp_path, ext):
    path = _write_table(tmp_path / f"c{ext}", DOCS, ext)
    cfg = CorpusConfig(path=path, val_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    assert cfg.resolved_kind == "table"
    a, b = load_corpus(cfg), load_corpus(cfg)
    assert sorted(a.train_docs + a.val_docs) == sorted(DOCS)
    assert a.val_docs == b.val_docs and a.train_docs == b.train_docs and a.fingerprint == b.fingerprint
    assert len(a.val_docs) == 10  # round(0.25 · 41 rows), none of them the empty row
    with pytest.raises(ValueError, match=r"no column 'body' \(it has: id, text\)"):
        load_corpus(CorpusConfig(path=path, text_column="body", cache_dir=str(tmp_path / "cache")))


def test_table_bad_inputs(tmp_path):
    cache = str(tmp_path / "cache")
    path = _write_table(tmp_path / "c.jsonl", DOCS, ".jsonl")
    with pytest.raises(ValueError, match="corpus.split='validation' does not exist.*only 'train'"):
        load_corpus(CorpusConfig(path=path, split="validation", cache_dir=cache))
    empty = tmp_path / "e.parquet"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_corpus(CorpusConfig(path=str(empty), cache_dir=cache))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(CorpusConfig(path=str(tmp_path / "nope.csv"), cache_dir=cache))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{not json', encoding="utf-8")
    with pytest.raises(ValueError, match="could not be read as jsonl"):
        load_corpus(CorpusConfig(path=str(bad), cache_dir=cache))


def test_hub_dataset_offline_fails_at_once(tmp_path):
    from data.hfcorpus import hub_reachable

    if hub_reachable():
        pytest.skip("the hub is reachable here: this test is about a machine without network")
    t = time.perf_counter()
    with pytest.raises(ValueError) as e:
        load_corpus(CorpusConfig(hf="Salesforce/wikitext", hf_config="wikitext-2-raw-v1", cache_dir=str(tmp_path)))
    assert time.perf_counter() - t < 10
    msg = str(e.value)
    assert "Salesforce/wikitext" in msg and "--corpus.path=FILE" in msg and "\n" not in msg


def test_text_stream_across_chunk_boundaries(tmp_path, monkeypatch):
    # Tiny read chunks: separators, CRLF pairs and multi-byte characters straddle chunk boundaries.
    text = "\r\n\r\n".join(DOCS) + "\n \n\n" + "\n\n".join(DOCS[:5]) + "\n"
    p = tmp_path / "c.txt"
    p.write_bytes(text.encode("utf-8"))
    monkeypatch.setattr(corpus_mod, "_CHUNK", 7)
    assert list(corpus_mod._stream_documents(str(p), "strict")) == split_documents(text)


# --- tokenizers -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bpe():
    return build_tokenizer(TokenizerConfig(kind="bpe", vocab_size=300), DOCS * 3)


def test_bpe_round_trip_save_load(bpe, tmp_path):
    assert bpe.vocab_size == 300 and bpe.kind == "bpe"
    docs = DOCS[:5] + ["unseen wörds ✓ and a literal <|eot|> inside", ""]
    ids = bpe.encode_docs(docs)
    assert ids.dtype == np.int32 and (ids == bpe.eot_id).sum() == len(docs)  # the literal <|eot|> is text
    assert bpe.decode_docs(ids) == docs
    assert len(bpe.encode(DOCS[0])) < len(DOCS[0])  # merges were learnt
    path = str(tmp_path / "tokenizer.json")
    bpe.save(path)
    back = load_tokenizer(path)
    assert back.fingerprint == bpe.fingerprint
    np.testing.assert_array_equal(back.encode_docs(docs), ids)
    assert build_tokenizer(TokenizerConfig(kind="bpe", vocab_size=300), DOCS * 3).fingerprint == bpe.fingerprint


def test_bpe_char_count_is_exact(bpe):
    for d in DOCS[:3] + ["🙂", "日本語", "a\u00e9b"]:
        ids = bpe.encode(d)
        assert bpe.char_count(ids) == len(d)
    ids = bpe.encode("🙂")  # an unseen 4-byte character: split into byte tokens, counted once in total
    assert len(ids) > 1 and sum(bpe.char_count([i]) for i in ids) == 1
    assert bpe.char_count(bpe.encode_docs(DOCS)) == sum(len(d) + 1 for d in DOCS)


class Uniform(torch.nn.Module):
    """A model of uniform next-token probabilities: ln V nats = log2 V bits per token."""

    def __init__(self, vocab, block):
        super().__init__()
        self.vocab, self.config = vocab, type("C", (), {"block_size": block})()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx, targets=None):
        return torch.zeros(*idx.shape, self.vocab) + 0 * self.w


def test_uniform_model_bpc_char_and_bpe_on_one_axis(bpe):
    from training.measures.real_text import eval_windows, evaluate

    char = CharTokenizer.fit(DOCS)
    out = {}
    for tok in (char, bpe):
        ids = tok.encode_docs(DOCS)
        x, y = eval_windows(ids, 16, len(ids) - 1)
        scored = y[y >= 0]
        chars = tok.char_count(scored)
        r = evaluate(Uniform(tok.vocab_size, 16), x, y, chars, torch.device("cpu"))
        assert r["val/loss"] / math.log(2) == pytest.approx(math.log2(tok.vocab_size), rel=1e-5)
        assert r["val/bpc"] == pytest.approx(len(scored) * math.log2(tok.vocab_size) / chars, rel=1e-5)
        out[tok.kind] = (len(ids), chars)
    # Both count the same characters of the same text (the first token, never a target, aside).
    total = sum(len(d) + 1 for d in DOCS)
    assert total - out["char"][1] == 1 and 1 <= total - out["bpe"][1] <= len(DOCS[0])
    assert out["bpe"][0] < out["char"][0]


def test_pretrained_from_local_folder(bpe, tmp_path):
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path / "hf_tok"
    # A tokenizer without an eos token: one is added and becomes EOT.
    PreTrainedTokenizerFast(tokenizer_object=bpe.tk).save_pretrained(str(folder))
    tok = build_tokenizer(TokenizerConfig(kind="pretrained", name=str(folder)), [])
    assert tok.kind == "pretrained" and tok.vocab_size >= bpe.vocab_size
    ids = tok.encode_docs(DOCS[:4])
    assert tok.decode_docs(ids) == DOCS[:4]
    assert tok.char_count(ids) == sum(len(d) + 1 for d in DOCS[:4])
    run = tmp_path / "run"
    run.mkdir()
    tok.save(str(run / "tokenizer.json"))
    back = load_tokenizer(str(run / "tokenizer.json"))
    assert back.eot_id == tok.eot_id and back.fingerprint == tok.fingerprint
    np.testing.assert_array_equal(back.encode_docs(DOCS[:4]), ids)


def test_pretrained_hub_name_offline_fails_at_once():
    from data.hfcorpus import hub_reachable

    if hub_reachable():
        pytest.skip("the hub is reachable here")
    t = time.perf_counter()
    with pytest.raises(ValueError, match="tokenizer.name='some-org/no-such-tokenizer'.*--tokenizer.name=PATH"):
        build_tokenizer(TokenizerConfig(kind="pretrained", name="some-org/no-such-tokenizer"), [])
    assert time.perf_counter() - t < 10


# --- token cache --------------------------------------------------------------------------------------------
def test_token_cache_reused_and_rebuilt(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("\n\n".join(DOCS), encoding="utf-8")
    cache = str(tmp_path / "cache")
    cfg = CorpusConfig(path=str(p), cache_dir=cache)
    c = load_corpus(cfg)
    tok = CharTokenizer.fit(c.train_docs)
    train, val = token_arrays(c, tok, cache)
    assert isinstance(train, np.memmap) and train.dtype == np.uint16
    np.testing.assert_array_equal(train, tok.encode_docs(c.train_docs))
    np.testing.assert_array_equal(val, tok.encode_docs(c.val_docs))
    bin_path = os.path.join(cache_path(c, tok, cache), "train.bin")
    before = os.stat(bin_path).st_mtime_ns
    time.sleep(0.01)
    train2, _ = token_arrays(load_corpus(cfg), tok, cache)
    assert os.stat(bin_path).st_mtime_ns == before  # reused, not rewritten
    np.testing.assert_array_equal(train2, train)
    p.write_text("\n\n".join(DOCS[:-1] + ["a changed last document"]), encoding="utf-8")
    c3 = load_corpus(cfg)
    assert c3.fingerprint != c.fingerprint
    assert cache_path(c3, tok, cache) != cache_path(c, tok, cache)
    train3, val3 = token_arrays(c3, tok, cache)
    assert len(train3) + len(val3) != len(train) + len(val)
    # A memory-mapped train split feeds fresh real data from the next document start on, wrapping when reuse is
    # allowed; the share's last document is ended by EOT.
    cfg_mix = MixConfig(fresh_fraction=1.0, tokens_per_generation=len(train) // 2 + 1, allow_reuse=True)
    src = RealSource(c, tok, cfg_mix, 0, stream=train)
    assert src.generations_supported() is None
    p2 = src.portion(1)
    b = cfg_mix.tokens_per_generation
    start = next(i for i in range(b, len(train) + 1) if i == len(train) or train[i - 1] == tok.eot_id) % len(train)
    want = np.concatenate([train[start:], train[:start]])[:b]
    np.testing.assert_array_equal(p2[:-1], want[:-1])
    assert p2[-1] == tok.eot_id


# --- end to end on tinyshakespeare ---------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.exists(SHAKESPEARE), reason="../shared/corpora/tinyshakespeare.txt is absent")
@pytest.mark.parametrize("tokenizer", [["--tokenizer.kind=char"], ["--tokenizer.kind=bpe", "--tokenizer.vocab_size=2048"]])
def test_tinyshakespeare_two_generations(tmp_path, capsys, tokenizer):
    from training.cli import main

    out = tmp_path / "run"
    args = ["run", "--preset", "debug", "--out", str(out), f"--corpus.path={SHAKESPEARE}",
            f"--corpus.cache_dir={tmp_path / 'cache'}", "--loop.generations=2", "--loop.progress=false",
            "--loop.first_steps=60", "--train.steps=30", "--mix.fresh_fraction=0.5", *tokenizer]
    assert main(args) == 0, capsys.readouterr().err
    recs = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["generation"] for r in recs] == [0, 1]
    assert all(0 < r["val/bpc"] < 8 for r in recs)
    config = json.load(open(out / "config.json"))
    assert set(config["fingerprint"]) == {"corpus", "tokenizer", "random_streams"}
    assert load_tokenizer(str(out / "tokenizer.json")).fingerprint == config["fingerprint"]["tokenizer"]
    assert main(args) == 0  # resumes: all done, tokenizer reloaded


@pytest.mark.parametrize("args,needle", [
    (["--corpus.text_column=body"], "no column 'body' (it has: id, text)"),
    (["--corpus.split=test"], "corpus.split='test' does not exist"),
    (["--corpus.val_fraction=0.02", "--model.block_size=128"], "real val split has"),
])
def test_cli_bad_table_inputs(tmp_path, capsys, args, needle):
    from training.cli import main

    path = _write_table(tmp_path / "c.jsonl", DOCS, ".jsonl")
    out = tmp_path / "run"
    code = main(["run", "--preset", "debug", "--out", str(out), f"--corpus.path={path}", "--loop.progress=false",
                 f"--corpus.cache_dir={tmp_path / 'cache'}", *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
