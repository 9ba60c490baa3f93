"""The closed loop: train generation 0 on real data, then retrain on a mix of real data and the model's own samples.

`RunConfig` (training/runconfig.py) composes every component's config; `prepare(cfg)` (training/prepare.py) loads
and checks everything that can be wrong with the user's input before anything is written; `run_loop(prep,
run_dir)` runs the generations, resumable: a generation whose folder has a DONE marker is never redone. Per
generation g:

    mix (data/mixing.py) -> init (warm: model g−1 | scratch | pretrained) -> train (the budget of `loop.budget`,
    or train.epochs) -> evaluate on the fixed real val windows -> sample at T (kept as token ids: the next
    generation's synthetic share and this generation's measures; unconditional documents, or with
    sample.prompt_tokens=K continuations of K-token blocks of generation 0's real set) -> measure the samples
    -> metrics.jsonl + TensorBoard -> model.pt -> DONE

The model is the built-in GPT (model.kind=gpt) or any Hugging Face causal LM (model.kind=hf, model.name; its own
tokenizer becomes the run's: tokenizer.kind=auto resolves to pretrained with that name). loop.init picks where each
generation starts: `warm` from model g−1 (generation 0: a seeded init, or for kind hf the pretrained weights);
`scratch` new weights every generation (seeded per generation; for kind hf the checkpoint's architecture);
`pretrained` every generation from the same start: for kind hf the checkpoint's pretrained weights (Shumailov et
al.'s protocol), for kind gpt generation 0's trained weights (generation 0 plays the part of pretraining on real
text).

Training budget per generation (`train_steps`), as the protocols define it: `steps` trains a fixed number of
optimizer steps (generation 0's `loop.first_steps` at generation 0 and at every `scratch` generation, which starts
from new weights as generation 0 did; `train.steps` at later generations); `epochs` scales those steps by
the generation's pool (steps × pool tokens / mix.tokens_per_generation: the same epochs over a pool that grows);
`auto` is `epochs` under `accumulate` (Gerstgrasser et al. 2024: each model trained over all accumulated data) and
`steps` under `replace` and `accumulate-subsample` (Kazdan et al. 2024: compute held fixed). `train.epochs=E`
instead trains E epochs over each generation's training set, whatever its size (Shumailov et al.'s recipe). The
directory is held by a lock (training/runlock.py) while the loop runs; config.json records the resolved numerics
(training/numerics.py) and env.json one record per start.

Run it with `closedloop run --preset debug`; tested in tests/test_loop.py.
"""
from __future__ import annotations

import math
import os
import sys
import time

import numpy as np
import torch

from data.mixing import assemble, fit_documents, synthetic_stream
from models import build_model
from training import board, distributed, numerics
from training import rundir as ck
from training.config import diff, flatten, to_dict
from training.environment import environment
from training.measures.model_on_samples import bpc_of, budget_ids
from training.measures.real_text import evaluate
from training.measures.registry import register
from training.measures.sample_text import sample_metrics, zipf_figure
from training.measures.truth import excess_bpc, sample_truth
from training.prepare import Prepared
from training.records import RunLogger, append_env, read_metrics, write_metrics
from training.runconfig import RunConfig
from training.runlock import NAME as LOCK_NAME, acquire_lock
from training.samples import prompt_blocks, sample_tokens, sampling_goal
from training.trainer import autocast_dtype, epoch_steps, setup_backend, train
from training.verdict import verdict_so_far

# The keys this module records itself (the measures register theirs in training/measures/).
register("train/loss", "nats/token", "training loss, mean since the previous record", per_step=True)
register("train/lr", "lr", "learning rate", per_step=True)
register("train/global_step", "steps", "optimizer steps since generation 0, at the end of this generation")
register("train/final_loss", "nats/token", "the last recorded training loss of this generation")
# Wall-clock figures live under time/: everything else in a record is reproducible from the seed.
register("time/train_tokens_per_s", "tokens/s", "training throughput, all processes")
register("time/train_mfu", "ratio", "model FLOP utilisation against the device's peak (GPUs with a known peak)")
register("mix/real_tokens", "tokens", "real tokens in this generation's training set")
register("mix/synthetic_tokens", "tokens", "synthetic tokens (the models' own samples) in this generation's training set")
register("mix/real_distinct_tokens", "tokens", "real tokens of this generation's training set counted once per "
         "position of the real source (below mix/real_tokens only where a wrapped corpus repeats text in the pool)")
register("train/steps", "steps", "optimizer steps of this generation (its budget: loop.budget)")
register("train/tokens", "tokens", "tokens trained on in this generation: steps × batch_size × block_size")
register("train/epochs", "epochs", "passes over this generation's training set: train/tokens / its size")
register("samples/truncated_rate", "ratio", "share of sampled documents cut by sample.max_new_tokens")
for _stage in ("data", "train", "eval", "sample", "measure"):
    register(f"time/{_stage}_s", "s", f"seconds spent on {_stage} in this generation")

# Purposes of the per-generation random streams (a run is reproducible from `seed`).
_INIT, _TRAIN, _SAMPLE, _MIX, _DROPOUT = 1, 2, 3, 4, 5
# Keys that may change when a run is resumed: they extend it or change speed, not what is learned.
RESUMABLE_KEYS = {"loop.generations", "loop.progress", "train.threads", "corpus.cache_dir"}


def generator(seed: int, g: int, purpose: int, index: int | None = None) -> torch.Generator:
    """The CPU generator of one purpose at generation g (and of item `index`, e.g. a sampling batch)."""
    key = [seed, g, purpose] if index is None else [seed, g, purpose, index]
    state = np.random.SeedSequence(key).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


# How the run's random streams are derived from its seed. A new scheme changes what a resumed run would sample, so
# it is part of the config a run directory is checked against. 2: one generator per sampling batch (DDP splits them).
# 3: tokens drawn by inverse CDF, one uniform per row (models.sampling.draw), not torch.multinomial.
# 4: every document of a training stream ends with EOT (real portions from document starts, ids.npy holds the
# synthetic stream after mix.cut_samples), the budget of loop.budget, sampling until loop.bleu_docs documents.
RANDOM_STREAMS = 4


def budget_policy(cfg: RunConfig) -> str:
    """loop.budget with `auto` resolved: epochs under accumulate, steps under replace and accumulate-subsample."""
    if cfg.loop.budget != "auto":
        return cfg.loop.budget
    return "epochs" if cfg.mix.workflow == "accumulate" else "steps"


def train_steps(cfg: RunConfig, g: int, pool_tokens: int) -> int:
    """Optimizer steps of generation g on a training set of pool_tokens tokens (see the module docstring)."""
    fixed = cfg.loop.first_steps or cfg.train.steps
    steps = fixed if (g == 0 or cfg.loop.init == "scratch") else cfg.train.steps
    if budget_policy(cfg) == "epochs":
        steps = max(1, round(steps * pool_tokens / cfg.mix.tokens_per_generation))
    return steps


def resolved_config(prep: Prepared) -> dict:
    return {**to_dict(prep.cfg),
            "resolved": {**numerics.resolve(prep.cfg, prep.device), "loop.budget": budget_policy(prep.cfg)},
            "fingerprint": {"corpus": prep.corpus.fingerprint, "tokenizer": prep.tokenizer.fingerprint,
                            "random_streams": RANDOM_STREAMS}}


def check_resume(prep: Prepared, run_dir: str) -> int:
    """Generations already done in run_dir (0 if new); refuses a run directory made with another config, or one
    whose `auto` numerics resolve otherwise on this machine (training/numerics.py)."""
    path = os.path.join(run_dir, "config.json")
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ValueError(f"--out {run_dir} is a file, not a directory")
    if not os.path.exists(path):
        if os.path.isdir(run_dir) and set(os.listdir(run_dir)) - {LOCK_NAME}:
            raise ValueError(f"{run_dir} exists and is not a closedloop run directory; pick another --out or pass --overwrite")
        return 0
    stored = ck.read_json(path)
    old, new = flatten_json(stored), flatten_json(resolved_config(prep))
    # The numerics requests may change (an explicit value accepts another machine's resolution); their
    # resolution is compared below. The resolved record itself is never part of the config diff. An option added
    # after the directory was made is absent from its config.json; at its default it changes nothing.
    skip = RESUMABLE_KEYS | set(numerics.KEYS)
    defaults = flatten_json(to_dict(RunConfig()))
    changed = [k for k in diff(old, new) if k not in skip and not k.startswith("resolved.")
               and not (k not in old and k in defaults and new.get(k) == defaults[k])]
    if changed:
        shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed[:6])
        raise ValueError(f"{run_dir} was run with another config: {shown}; pass --overwrite to start afresh or pick another --out")
    numerics.check(stored.get("resolved"), numerics.resolve(prep.cfg, prep.device), flatten(prep.cfg), run_dir)
    return ck.completed_generations(run_dir)


def flatten_json(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_json(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def run_loop(prep: Prepared, run_dir: str, argv: list[str] | None = None, locked: bool = False) -> dict:
    """Run (or resume) the closed loop in run_dir; returns the summary written to summary.json.

    The run directory is locked while the loop runs (rank 0 takes it; locked=True: the caller holds it).
    Under torchrun only rank 0 writes and returns the summary; the other ranks return {"generations": n} (the
    number run here)."""
    own = None if locked else acquire_lock(run_dir, _say)
    try:
        return _run_locked(prep, run_dir, argv)
    finally:
        if own is not None:
            own.release()


def _run_locked(prep: Prepared, run_dir: str, argv: list[str] | None) -> dict:
    cfg, tok = prep.cfg, prep.tokenizer
    main = distributed.is_main()
    start = check_resume(prep, run_dir)
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    records = [r for r in read_metrics(metrics_path) if r["generation"] < start]
    global_step = records[-1]["train/global_step"] if records else 0
    distributed.barrier()  # every rank has read the run directory before rank 0 writes to it
    setup_backend(cfg.train, prep.device)  # before env.json, which records its CPU kernel choice
    if main:
        os.makedirs(run_dir, exist_ok=True)
        resolved = resolved_config(prep)
        ck.write_json(os.path.join(run_dir, "config.json"), resolved)
        append_env(os.path.join(run_dir, "env.json"),
                   {**environment(prep.device, argv), "world_size": distributed.world_size(),
                    "first_generation": start, "resolved": resolved["resolved"]})
        if start == 0:
            tok.save(os.path.join(run_dir, "tokenizer.json"))
        write_metrics(metrics_path, records)  # drop the record of a generation that did not reach DONE
    log = RunLogger(run_dir if main else None, purge_step=global_step + 1 if start > 0 else None)
    t_run = time.perf_counter()
    try:
        for g in range(start, cfg.loop.generations):
            rec = run_generation(prep, run_dir, g, global_step, log)
            global_step = rec["train/global_step"]
            if main:
                v = verdict_so_far([*records, rec], uniform_bits=math.log2(tok.vocab_size))
                rec["verdict"] = v["verdict"]
                log.text("verdict", f"generation {g}: **{v['verdict']}** ({v['reason']})", g)
                records.append(rec)
                write_metrics(metrics_path, records)
                log.flush()
                ck.mark_done(run_dir, g)  # last: a generation without DONE is redone whole
                _say(generation_line(rec, time.perf_counter() - t_run))
            distributed.barrier()  # the next generation reads this one's ids.npy and model.pt
    finally:
        log.close()
    if not main:
        return {"generations": cfg.loop.generations - start}
    summary = summarize(records, cfg)
    summary["verdict"] = verdict_so_far(records, uniform_bits=math.log2(tok.vocab_size)) if records else None
    ck.write_json(os.path.join(run_dir, "summary.json"), summary)
    board.write_run_hparams(run_dir, flatten(cfg), records, (summary["verdict"] or {}).get("verdict"))
    return summary


def mix_generation(prep: Prepared, run_dir: str, g: int) -> tuple[np.ndarray, dict]:
    """Generation g's training stream and provenance counts: exact shares of EOT-ended documents; synthetic tokens
    are the ids model k−1 sampled (its ids.npy, after mix.cut_samples), never re-encoded."""
    cfg, eot = prep.cfg, prep.tokenizer.eot_id
    pooled = cfg.mix.workflow != "replace"
    ks = range(g + 1) if pooled else [g]
    if pooled and cfg.mix.real_data == "fixed":
        ks = [0]  # the pool holds generation 0's real set once
    empty = np.zeros(0, np.int32)
    real = [prep.real.portion(k) if k in ks else empty for k in range(g + 1)]
    origin = [prep.real.origin(k) if k in ks else [] for k in range(g + 1)]
    synth = [empty] + [
        fit_documents(np.load(os.path.join(ck.gen_dir(run_dir, k - 1), "ids.npy")), cfg.mix.synthetic_tokens(k), eot)
        if (pooled or k == g) else empty for k in range(1, g + 1)]
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, g, _MIX]))
    return assemble(g, cfg.mix, real, synth, eot, rng, real_origin=origin)


def run_generation(prep: Prepared, run_dir: str, g: int, global_step: int, log: RunLogger) -> dict:
    cfg, tok, device = prep.cfg, prep.tokenizer, prep.device
    main = distributed.is_main()
    gdir = ck.fresh_gen_dir(run_dir, g) if main else ck.gen_dir(run_dir, g)
    times = {}
    # --- data ---------------------------------------------------------------------------------------------
    t = time.perf_counter()
    ids, counts = mix_generation(prep, run_dir, g)
    times["time/data_s"] = time.perf_counter() - t
    # --- model ----------------------------------------------------------------------------------------------
    model = initial_model(cfg, run_dir, g)
    model.to(device)
    steps = epoch_steps(cfg.train.epochs, len(ids), cfg.train.batch_size, cfg.model.block_size) \
        if cfg.train.epochs else train_steps(cfg, g, len(ids))
    # Dropout draws from torch's global generator: seed it per generation so runs (and resumes) reproduce, and per
    # rank under DDP so that ranks do not repeat one mask pattern (with dropout a DDP run matches one process in
    # distribution, not bit for bit).
    torch.manual_seed(int(generator(cfg.seed, g, _DROPOUT).initial_seed()) + distributed.rank())
    # train/generation at the first and last step of each generation: a staircase marking where it starts
    log.scalars(global_step + 1, {"train/generation": g})
    res = train(model, ids, cfg.train, generator(cfg.seed, g, _TRAIN), device, steps=steps, log=log.scalars,
                step_offset=global_step, progress=cfg.loop.progress and main, desc=f"gen {g} train")
    log.scalars(global_step + steps, {"train/generation": g})
    times["time/train_s"] = res["seconds"]
    if not math.isfinite(res["loss"]):
        raise ValueError(f"training diverged at generation {g} (train loss {res['loss']}); lower --train.lr or "
                         "raise --train.warmup_steps, then run the same command to redo this generation")
    # --- model on real text (rank 0) ------------------------------------------------------------------------
    t = time.perf_counter()
    amp = autocast_dtype(cfg.train, device)
    trained = steps * cfg.train.batch_size * cfg.model.block_size
    rec: dict = {"generation": g, "train/global_step": global_step + steps, "train/steps": steps,
                 "train/tokens": trained, "train/epochs": trained / len(ids), "train/final_loss": res["loss"],
                 "time/train_tokens_per_s": res["tokens_per_s"], "time/train_mfu": res.get("mfu"), **counts}
    if main:
        rec.update(evaluate(model, prep.val_x, prep.val_y, prep.val_chars, device, autocast_dtype=amp))
        rec.pop("nats_sum", None)
        rec.pop("n_tokens", None)
        if prep.truth_docs is not None:
            rec["truth/excess_bpc"], rec["truth/model_bpc"] = excess_bpc(model, prep.truth_docs, prep.truth_nats,
                                                                         tok, device)
    times["time/eval_s"] = time.perf_counter() - t
    # --- sample (split over ranks): the next generation's synthetic share and the measures' documents --------
    t = time.perf_counter()
    # bf16 decoding pays on CUDA; on a CPU the casts cost more than the small decode matmuls gain (scripts/bench.py)
    sample_amp = amp if device.type == "cuda" else None
    prompts = prompt_blocks(prep.real.portion(0), cfg.sample.prompt_tokens) if cfg.sample.prompt_tokens else None
    docs_ids = sample_tokens(model, cfg.sample, tok.eot_id, sampling_goal(cfg, tok),
                             lambda i: generator(cfg.seed, g, _SAMPLE, i), device, sample_amp,
                             cfg.loop.progress and main, f"gen {g} sample", prompts)
    if not main:
        return rec
    # A sample is cut when it reaches its cap (sample.max_new_tokens, or K for a prompted continuation)
    ended = [len(d) < cfg.sample.doc_cap for d in docs_ids]
    # The next generation's synthetic share: every document ended by EOT; a cut one kept or dropped (mix.cut_samples)
    ck.write_npy(os.path.join(gdir, "ids.npy"), synthetic_stream(docs_ids, ended, cfg.mix.cut_samples, tok.eot_id))
    docs = [tok.decode(d) for d in docs_ids]
    ck.write_text(os.path.join(gdir, "samples.txt"), "\n\n".join(docs) + "\n")
    times["time/sample_s"] = time.perf_counter() - t
    t = time.perf_counter()
    rec.update(sample_metrics(docs, cfg.loop.measure_chars, prep.real_stats, bleu_docs=cfg.loop.bleu_docs))
    if prep.corpus.language is not None:
        rec.update(sample_truth(docs, ended, cfg.loop.measure_chars, prep.corpus.language))
    rec["samples/truncated_rate"] = 1.0 - float(np.mean(ended))
    measured, measured_ended = budget_ids(docs_ids, ended, cfg.loop.measure_chars, tok.char_count)
    rec["samples/self_bpc"], _ = bpc_of(model, measured, measured_ended, tok, device, amp)
    ref = model
    if g > 0:  # Shumailov's measure: the generation-0 model's surprise at this generation's text
        ref = build_model(cfg.model, generator(cfg.seed, 0, _INIT), scratch=True)
        ref.load_state_dict(ck.load_state(os.path.join(ck.gen_dir(run_dir, 0), "model.pt")))
        ref.to(device)
    rec["samples/ref_bpc"], per_doc = bpc_of(ref, measured, measured_ended, tok, device, amp)
    # Per-run histogram and image cards under views/, a group name that sorts after every scalar group in
    # TensorBoard, so the per-generation curves come first
    log.histogram("views/ref_bpc_per_doc", per_doc, g)
    log.figure("views/zipf", zipf_figure(docs, cfg.loop.measure_chars, prep.real_stats.train_counts,
                                           f"generation {g}, T = {cfg.sample.temperature}"), g)
    times["time/measure_s"] = time.perf_counter() - t
    rec.update(times)
    rec = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}
    log.scalars(g, {k: v for k, v in rec.items() if k != "generation"})
    if cfg.loop.text_samples:
        log.samples("samples/text", board.run_header(flatten(cfg), g), docs[: cfg.loop.text_samples], g)
    ck.save_model(os.path.join(gdir, "model.pt"), model)
    return rec


def initial_model(cfg: RunConfig, run_dir: str, g: int) -> torch.nn.Module:
    """The model generation g starts from (on the CPU), by loop.init (see the module docstring)."""
    init = cfg.loop.init
    if init == "scratch":
        return build_model(cfg.model, generator(cfg.seed, g, _INIT), scratch=True)
    if g == 0 or (init == "pretrained" and cfg.model.kind == "hf"):
        return build_model(cfg.model, generator(cfg.seed, 0, _INIT))  # kind hf: the pretrained weights
    # warm: model g−1; pretrained for the built-in GPT: generation 0's trained model. Built as an architecture only
    # (kind hf: without reading the checkpoint's weights), then loaded.
    model = build_model(cfg.model, generator(cfg.seed, 0, _INIT), scratch=True)
    model.load_state_dict(ck.load_state(os.path.join(ck.gen_dir(run_dir, g - 1 if init == "warm" else 0), "model.pt")))
    return model


def summarize(records: list[dict], cfg: RunConfig) -> dict:
    """Final figures, change since generation 0 and least-squares slope per generation of each measure."""
    if not records:
        return {"generations": 0}
    keys = [k for k, v in records[-1].items() if isinstance(v, (int, float)) and k.split("/")[0] in
            ("val", "samples", "truth", "mix")]
    gens = np.array([r["generation"] for r in records], dtype=float)
    change, slope = {}, {}
    for k in keys:
        ys = np.array([r.get(k) if r.get(k) is not None else np.nan for r in records], dtype=float)
        ok = np.isfinite(ys)
        change[k] = float(ys[-1] - ys[0]) if ok[0] and ok[-1] else None
        slope[k] = float(np.polyfit(gens[ok], ys[ok], 1)[0]) if ok.sum() >= 2 else None
    return {"generations": len(records), "temperature": cfg.sample.temperature,
            "fresh_fraction": cfg.mix.fresh_fraction, "workflow": cfg.mix.workflow,
            "first": records[0], "final": records[-1], "change": change, "slope_per_generation": slope}


def generation_line(rec: dict, elapsed: float) -> str:
    def f(k, fmt=".3f"):
        v = rec.get(k)
        return "n/a" if v is None else format(v, fmt)

    extra = f"  excess {f('truth/excess_bpc')} bpc" if "truth/excess_bpc" in rec else ""
    return (f"gen {rec['generation']:>3}  val/bpc {f('val/bpc')}  val/entropy {f('val/entropy')} bits  "
            f"distinct_2 {f('samples/distinct_2')}{extra}  elapsed {elapsed:.1f}s")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
