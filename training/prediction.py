"""The categorical theory's prediction for a run's own data: what the loop should do, from its generation-0 model.

The real next-token distributions of a run are unknown; its generation-0 model, trained on real data only, is the
best estimate available. So H_c = θ_0,c, the generation-0 model's next-token distribution on each of up to
`contexts` scored real val contexts (evenly spread over the run's fixed val windows), and each context follows the
paper's mean-field map with the run's T and λ (training/theory.py: `context_predictions` per generation,
`context_equilibria` for the rest point and its stability). The map assumes a full refit with infinitely many
samples, pure temperature sampling (sample.top_k/top_p are ignored) and no capacity limit: where a neural run and
its prediction part, that is a finding about those assumptions.

- `gen0(run_dir)`: H (log θ_0, (C, V)), the real next tokens, the config, and generation 0's measured val/loss,
  val/bpc.
- `predict(h, T, λ, G, workflow)`: predicted records per generation (`val/entropy` bits, `val/top1`, `val/bpc`
  bits/char, the excess nats/token) and the run verdict (training/verdict.py) applied to them, the same rule the
  measured run gets, plus the equilibrium: its mean entropy (bits), largest ρ and the share of stable contexts.
- `boundary(h, temperatures, λ grid, G, workflow)`: per T the smallest λ whose predicted trajectory is `stable`.
- `record(run_dir, pred)`: `theory/*` keys into the run's metrics.jsonl and TensorBoard (once).

Used by `closedloop theory --from-run RUN` (training/theory_cli.py) and by every sweep report (training/report.py).
Tests: `python -m pytest tests/test_theory.py tests/test_sweep.py`.
"""
from __future__ import annotations

import math
import os

import numpy as np

from training import theory as th
from training import verdict as vd
from training.measures.registry import register

register("theory/entropy", "bits", "predicted val/entropy: the mean-field map from the generation-0 model")
register("theory/top1", "probability", "predicted val/top1: the mean-field map from the generation-0 model")
register("theory/excess_nll", "nats/token", "predicted rise of val/loss since generation 0")
register("theory/bpc", "bits/char", "predicted val/bpc: the mean-field map from the generation-0 model")

SWEEP_CONTEXTS = 1024  # contexts per run in sweep reports (the CLI default is 4096): the C-means settle well before
MAX_ELEMENTS = 8_000_000  # C · V float64 values held at once (64 MB): a 50k-token vocabulary gets ~160 contexts


def gen0(run_dir: str, contexts: int) -> dict:
    """{"log_h" (C, V) float64, "targets" (C,), "cfg", "loss0" nats/token, "bpc0" bits/char, "uniform_bits"}."""
    import torch

    from models import build_model
    from training import rundir as ck
    from training.config import from_dict
    from training.prepare import prepare
    from training.runconfig import RunConfig
    from training.records import read_metrics
    from training.trainer import cpu_onednn

    saved = ck.read_json(os.path.join(run_dir, "config.json"))
    fingerprint = saved.pop("fingerprint", None)
    saved.pop("resolved", None)  # resolved numerics (when recorded) are not options
    prep = prepare(from_dict(RunConfig, saved), run_dir)  # reloads the corpus and tokenizer.json, same val windows
    if fingerprint and fingerprint.get("corpus") not in (None, prep.corpus.fingerprint):
        raise ValueError(f"{run_dir}: the corpus changed since the run (fingerprint differs)")
    model = build_model(prep.cfg.model, torch.Generator().manual_seed(0), scratch=True)  # then generation 0's weights
    model.load_state_dict(ck.load_state(os.path.join(ck.gen_dir(run_dir, 0), "model.pt")))
    model.to(prep.device).eval()
    if prep.device.type == "cpu":
        cpu_onednn(False)  # fp32 on torch's own kernels, as the run computed: the same bits on every CPU family
    vocab = model.config.vocab_size
    contexts = max(1, min(contexts, MAX_ELEMENTS // vocab))
    block = prep.val_y.shape[1]
    scored = np.flatnonzero(prep.val_y.reshape(-1) >= 0)
    if len(scored) > contexts:  # deterministic, evenly spread over the val windows
        scored = scored[np.round(np.linspace(0, len(scored) - 1, contexts)).astype(int)]
    win, pos = np.divmod(scored, block)
    wins = np.unique(win)
    out = np.empty((len(scored), vocab))
    with torch.inference_mode():
        for i in range(0, len(wins), 64):
            rows = wins[i:i + 64]
            logits = model(torch.from_numpy(prep.val_x[rows]).to(prep.device))  # (b, block, V)
            logp = torch.log_softmax(logits.float(), dim=-1).double().cpu().numpy()
            k = np.flatnonzero(np.isin(win, rows))
            out[k] = logp[np.searchsorted(rows, win[k]), pos[k]]
    first = next((r for r in read_metrics(os.path.join(run_dir, "metrics.jsonl")) if r.get("generation") == 0), {})
    return {"log_h": out, "targets": prep.val_y.reshape(-1)[scored], "cfg": prep.cfg,
            "loss0": first.get("val/loss"), "bpc0": first.get("val/bpc"), "uniform_bits": math.log2(vocab)}


def predict(h: dict, temperature: float, fresh_fraction: float, generations: int, workflow: str = "replace",
            equilibrium: bool = True) -> dict:
    """The prediction for one setting from `gen0`'s output: per-generation arrays `entropy` (bits), `top1`,
    `excess_nll` (nats/token), `bpc` (bits/char: generation 0's measured val/bpc scaled by the predicted loss,
    bpc_0 · (loss_0 + excess)/loss_0, i.e. the same characters per token), the predicted `verdict` and its `shift`
    (bits), and with `equilibrium` the rest point's `eq_entropy` (bits), `rho_max`, `stable_share`."""
    p = th.context_predictions(h["log_h"], h["targets"], temperature, fresh_fraction, generations, workflow)
    loss0, bpc0 = h.get("loss0"), h.get("bpc0")
    bpc = (bpc0 * (loss0 + p["excess_nll"]) / loss0) if loss0 and bpc0 else np.full(generations, np.nan)
    records = [{"generation": g, "val/entropy": float(p["entropy"][g]), "val/top1": float(p["top1"][g]),
                "val/bpc": float(bpc[g]) if math.isfinite(bpc[g]) else None} for g in range(generations)]
    v = vd.verdict(records, uniform_bits=h["uniform_bits"])
    out = {"entropy": p["entropy"], "top1": p["top1"], "excess_nll": p["excess_nll"], "bpc": bpc,
           "verdict": v["verdict"], "shift": v["shift"]}
    if equilibrium:
        eq = th.context_equilibria(h["log_h"], temperature, fresh_fraction, max_iter=2000, tol=1e-9)
        out.update(eq_entropy=eq["entropy"], rho_max=eq["rho_max"], stable_share=eq["stable_share"])
    return out


def boundary(h: dict, temperatures, fresh_fractions, generations: int, workflow: str = "replace") -> np.ndarray:
    """Per temperature, the smallest λ of `fresh_fractions` whose predicted trajectory the verdict calls `stable`
    (nan when none is): the predicted critical fresh fraction for this run's own H, on the same rule and the same
    number of generations as the measured runs."""
    lams = np.sort(np.asarray(fresh_fractions, dtype=float))
    out = []
    for t in np.atleast_1d(np.asarray(temperatures, dtype=float)):
        stable = [lam for lam in lams if predict(h, float(t), float(lam), generations, workflow, False)["verdict"]
                  == "stable"]
        out.append(stable[0] if stable else math.nan)
    return np.array(out)


def record(run_dir: str, pred: dict, say=None) -> None:
    """Add theory/entropy (bits), theory/top1, theory/excess_nll (nats/token) and theory/bpc (bits/char) to the
    existing generation records of metrics.jsonl (atomic rewrite), and to TensorBoard once (a THEORY marker keeps
    a second report from writing the same points again), holding the run directory's lock: a run still writing
    there is refused with one line (ValueError)."""
    from training.runlock import RunLock

    with RunLock(run_dir) as lock:
        note = lock.acquire()
        if note and say:
            say(note)
        _rewrite(run_dir, pred)


def _rewrite(run_dir: str, pred: dict) -> None:
    from training import rundir as ck
    from training.records import RunLogger, read_metrics, write_metrics

    def val(x):
        return float(x) if x is not None and math.isfinite(x) else None

    keys = {"theory/entropy": "entropy", "theory/top1": "top1", "theory/excess_nll": "excess_nll", "theory/bpc": "bpc"}
    path = os.path.join(run_dir, "metrics.jsonl")
    records = read_metrics(path)
    n = len(pred["entropy"])
    changed = False
    for r in records:
        g = r.get("generation")
        if isinstance(g, int) and 0 <= g < n:
            new = {k: val(pred[src][g]) for k, src in keys.items()}
            changed |= any(r.get(k) != v for k, v in new.items())
            r.update(new)
    if changed:  # a report run again leaves a finished point's files untouched
        write_metrics(path, records)
    marker = os.path.join(run_dir, "THEORY")
    if os.path.exists(marker):
        return
    log = RunLogger(run_dir)
    try:
        for g in range(n):
            log.scalars(g, {k: pred[src][g] for k, src in keys.items()})
    finally:
        log.close()
    ck.write_text(marker, "")
