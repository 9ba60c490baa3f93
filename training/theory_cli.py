"""`closedloop theory ...`: the paper's categorical model from the command line, and its overlay on a neural run.

    closedloop theory equilibrium --h 0.35,0.25,0.2,0.12,0.08 --temperature 0.7 --fresh-fraction 0.3
    closedloop theory phase --h uniform --n 5 --temperatures 0.5,0.7,0.9 --fresh-fractions 0:1:0.01 --out DIR
    closedloop theory simulate --h uniform --n 10 --samples 100 --temperature 1 --fresh-fraction 0 \\
        --workflow replace --seeds 500 --until-fixation
    closedloop theory --from-run RUN

`equilibrium` and `simulate --until-fixation` print one JSON object (null stands for an infinite value, e.g.
KL(H‖θ_e) once θ_e is a corner); `phase` writes DIR/phase.csv and
DIR/phase.png; `simulate` without --until-fixation writes DIR/trajectories.csv and .png with --out.
`--from-run RUN` adds `theory/entropy` (bits) and `theory/excess_nll` (nats/token) to every generation's record of
RUN/metrics.jsonl and to RUN's TensorBoard, beside the measured `val/entropy` and `val/loss` − its generation-0 value.
The math is in training/theory.py; tests: `/tmp/probe-venv/bin/python -m pytest tests/test_theory.py -q`.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys

import numpy as np

from training import theory as th


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # the closedloop CLI turns ValueError into one line and exit status 2
        raise ValueError(f"theory: {message}")


def _floats(text: str, opt: str, grid: bool = False) -> np.ndarray:
    """Comma-separated numbers, or (grid=True) START:STOP:STEP, both ends included."""
    try:
        if grid and ":" in text:
            a, b, step = (float(x) for x in text.split(":"))
            if not (step > 0 and b >= a and math.isfinite(b - a)):
                raise ValueError
            vals = a + step * np.arange(int(math.floor((b - a) / step + 1e-9)) + 1)
        else:
            vals = np.array([float(x) for x in text.split(",")])
    except ValueError:
        form = "comma-separated numbers or START:STOP:STEP" if grid else "comma-separated numbers"
        raise ValueError(f"{opt} expects {form}, got {text!r}") from None
    if not np.all(np.isfinite(vals)):
        raise ValueError(f"{opt} expects finite numbers, got {text!r}")
    return np.round(vals, 10)


def _dumps(obj) -> str:
    """Strict JSON: non-finite floats (inf) become null."""
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return [clean(v) for v in x] if isinstance(x, (list, tuple)) else x

    return json.dumps(clean(obj))


def _h(args) -> np.ndarray:
    if args.h == "uniform":
        if args.n is None or args.n < 1:
            raise ValueError(f"--h uniform needs --n (number of outcomes) >= 1, got {args.n}")
        return np.full(args.n, 1.0 / args.n)
    return th.check_distribution(_floats(args.h, "--h"), "--h")


def _temps(values, opt):
    return [th.check_temperature(float(t), opt) for t in values]


def _fracs(values, opt):
    return [th.check_fraction(float(x), opt) for x in values]


def build_parser() -> _Parser:
    p = _Parser(prog="closedloop theory", description="The paper's closed-loop model of one categorical.")
    p.add_argument("--from-run", metavar="RUN", help="overlay the predictions on a run directory")
    p.add_argument("--contexts", type=int, default=4096, help="--from-run: real val contexts used (evenly spread)")
    sub = p.add_subparsers(dest="command")
    for name, text in (("equilibrium", "θ_e(λ, T), its entropy, KL(H‖θ_e) and stability (JSON)"),
                       ("phase", "the T × λ phase diagram of the mean-field map (CSV + PNG)"),
                       ("simulate", "finite-sample trajectories (CSV + PNG) or the time to fixation (JSON)")):
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("--h", required=True, help="real distribution H: comma-separated probabilities or 'uniform'")
        s.add_argument("--n", type=int, help="number of outcomes for --h uniform")
        if name == "phase":
            s.add_argument("--temperatures", required=True, help="T values: a,b,c or START:STOP:STEP")
            s.add_argument("--fresh-fractions", required=True, help="λ values: a,b,c or START:STOP:STEP, in [0, 1]")
            s.add_argument("--max-iterations", type=int, default=20_000, help="mean-field generations per start")
            s.add_argument("--out", required=True, help="folder for phase.csv and phase.png")
            continue
        s.add_argument("--temperature", type=float, required=name == "equilibrium", default=1.0, help="T >= 0")
        s.add_argument("--fresh-fraction", type=float, required=name == "equilibrium", default=0.0, help="λ in [0, 1]")
        if name == "simulate":
            s.add_argument("--samples", type=int, default=100, help="N: samples per generation")
            s.add_argument("--workflow", default="replace", choices=th.WORKFLOWS)
            s.add_argument("--seeds", type=int, default=100, help="independent runs simulated together")
            s.add_argument("--generations", type=int, default=None,
                           help="generations (default 50); with --until-fixation the cap (default 100000)")
            s.add_argument("--fit-rate", type=float, default=1.0, help="refit a fraction of the way, in (0, 1]")
            s.add_argument("--noise", type=float, default=0.0, help="std of zero-mean fitting noise per outcome")
            s.add_argument("--seed", type=int, default=0, help="seed of the numpy generator")
            s.add_argument("--until-fixation", action="store_true", help="run until one outcome remains (λ = 0)")
            s.add_argument("--out", help="folder for trajectories.csv and trajectories.png")
    return p


def cmd_theory(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    if args.from_run is not None:
        if args.command:
            raise ValueError("theory: --from-run takes no subcommand")
        return overlay(args.from_run, args.contexts)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    h = _h(args)
    if args.command == "equilibrium":
        t = th.check_temperature(args.temperature, "--temperature")
        lam = th.check_fraction(args.fresh_fraction, "--fresh-fraction")
        print(_dumps(th.equilibrium(h, t, lam)))
        return 0
    if args.command == "phase":
        return phase(h, _temps(_floats(args.temperatures, "--temperatures", True), "--temperatures"),
                     _fracs(_floats(args.fresh_fractions, "--fresh-fractions", True), "--fresh-fractions"),
                     args.out, args.max_iterations)
    return simulate(h, args)


def phase(h, temps, lams, out: str, max_iter: int) -> int:
    rows = th.phase_table(h, temps, lams, max_iter=max_iter)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "phase.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    critical = th.critical_fresh_fraction(temps, h)
    uniform = bool(np.allclose(h, 1.0 / len(h)))
    fold = th.collapse_fold_fresh_fraction(temps, len(h)) if uniform else None
    _phase_png(rows, h, temps, lams, os.path.join(out, "phase.png"), uniform)
    print(_dumps({"csv": os.path.join(out, "phase.csv"), "png": os.path.join(out, "phase.png"),
                      "temperatures": list(temps), "critical_fresh_fraction": critical.tolist(),
                      "collapse_fold_fresh_fraction": None if fold is None else fold.tolist()}))
    return 0


def _phase_png(rows, h, temps, lams, path, uniform) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ent = np.array([r["entropy"] for r in rows]).reshape(len(temps), len(lams))  # nats, worse of the two starts
    h_ent, top = float(th.entropy(h)), math.log(len(h))
    if top - h_ent > 1e-9:  # red: collapsed below H's entropy; blue: heated above it
        norm = matplotlib.colors.TwoSlopeNorm(vmin=0.0, vcenter=h_ent, vmax=top)
    else:
        norm = matplotlib.colors.Normalize(vmin=0.0, vmax=top)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    if len(temps) > 1 and len(lams) > 1:
        mesh = ax.pcolormesh(temps, lams, ent.T, shading="nearest", cmap="RdBu", norm=norm)
    else:
        tt, ll = np.meshgrid(temps, lams, indexing="ij")
        mesh = ax.scatter(tt.ravel(), ll.ravel(), c=ent.ravel(), cmap="RdBu", norm=norm, marker="s")
    fig.colorbar(mesh, ax=ax, label=f"entropy of θ, nats (worse start; H: {h_ent:.3f})")
    fine = np.linspace(min(temps), max(temps), 200) if len(temps) > 1 else np.array(temps)
    ax.plot(fine, th.critical_fresh_fraction(fine, h), "k-", lw=2, label="predicted boundary λ*(T): ρ = 1")
    if uniform:
        ax.plot(fine, th.collapse_fold_fresh_fraction(fine, len(h)), "k--", lw=1.5,
                label="collapsed state ceases to exist (bistable below)")
    else:
        ax.plot(fine, np.clip(1 - fine, 0, 1), "k:", lw=1.5, label="1 − T (uniform H)")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("fresh fraction λ")
    ax.set_ylim(min(lams) - 0.005, max(lams) + 0.005)
    ax.set_title(f"mean-field closed loop, n = {len(h)}" + (", uniform H" if uniform else ""))
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def simulate(h, args) -> int:
    t = th.check_temperature(args.temperature, "--temperature")
    lam = th.check_fraction(args.fresh_fraction, "--fresh-fraction")
    for opt, v in (("--samples", args.samples), ("--seeds", args.seeds), ("--generations", args.generations or 1)):
        if v < 1:
            raise ValueError(f"{opt} must be >= 1, got {v}")
    if not 0 < args.fit_rate <= 1:
        raise ValueError(f"--fit-rate must be in (0, 1], got {args.fit_rate}")
    if not args.noise >= 0:
        raise ValueError(f"--noise must be >= 0, got {args.noise}")
    if args.until_fixation and (lam > 0 or args.workflow != "replace"):
        raise ValueError("--until-fixation needs --fresh-fraction 0 and --workflow replace (otherwise no outcome is lost)")
    rng = np.random.default_rng(args.seed)
    kw = dict(workflow=args.workflow, fit_rate=args.fit_rate, noise=args.noise)
    if args.until_fixation:
        cap = args.generations or 100_000
        fix = th.simulate(h, t, lam, args.samples, cap, args.seeds, rng, until_fixation=True, **kw)["fixation"]
        done = fix[fix >= 0]
        print(_dumps({
            "mean_generations_to_fixation": float(done.mean()) if done.size else None,
            "sem": float(done.std(ddof=1) / math.sqrt(done.size)) if done.size > 1 else None,
            "median_generations_to_fixation": float(np.median(done)) if done.size else None,
            "wright_fisher_prediction": th.wright_fisher_fixation_time(h, args.samples),
            "wright_fisher_applies": t == 1 and args.fit_rate == 1 and args.noise == 0,
            "fixed_seeds": int(done.size), "seeds": args.seeds, "generation_cap": cap}))
        return 0
    gens = args.generations or 50
    theta = th.simulate(h, t, lam, args.samples, gens, args.seeds, rng, **kw)["theta"]  # (G, S, n)
    mf = th.mean_field_trajectory(h, h, t, lam, gens, args.workflow, args.fit_rate)  # (G, n)
    ent, mf_ent = th.entropy(theta), th.entropy(mf)  # (G, S), (G,) nats
    result = {"generations": gens, "mean_entropy": ent.mean(axis=1).tolist(), "mean_field_entropy": mf_ent.tolist(),
              "final_mean_kl": float(th.kl(h, theta[-1]).mean()), "final_mean_top1": float(theta[-1].max(-1).mean())}
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        result["csv"], result["png"] = _trajectories(theta, mf, h, args, os.path.join(args.out, "trajectories"))
    print(_dumps(result))
    return 0


def _trajectories(theta, mf, h, args, stem) -> tuple[str, str]:
    """One CSV row per (source, seed, generation): source `sample` (seed 0…S−1) or `mean_field` (seed −1)."""
    n = theta.shape[-1]
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "seed", "generation", "entropy", "kl", "top1", *[f"p_{i}" for i in range(n)]])
        for src, arr in (("sample", theta), ("mean_field", mf[:, None])):
            ent, div = th.entropy(arr), th.kl(h, arr)
            for s in range(arr.shape[1]):
                for g in range(arr.shape[0]):
                    w.writerow([src, s if src == "sample" else -1, g, f"{ent[g, s]:.10g}", f"{div[g, s]:.10g}",
                                f"{arr[g, s].max():.10g}", *(f"{x:.10g}" for x in arr[g, s])])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ent = th.entropy(theta)
    ax.plot(ent[:, :20], color="0.7", lw=0.6)
    ax.plot(ent.mean(axis=1), "k-", lw=2, label=f"mean of {theta.shape[1]} seeds (N = {args.samples})")
    ax.plot(th.entropy(mf), "r--", lw=2, label="mean-field map")
    ax.set_xlabel("generation")
    ax.set_ylabel("entropy of θ, nats")
    ax.set_title(f"T = {args.temperature:g}, λ = {args.fresh_fraction:g}, {args.workflow}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=120)
    plt.close(fig)
    return stem + ".csv", stem + ".png"


def overlay(run_dir: str, contexts: int) -> int:
    """Predict `theory/entropy` and `theory/excess_nll` per generation of a run and record them in the run.

    θ_0 = the generation-0 model's next-token distributions on up to `contexts` scored real val contexts (evenly
    spread over the run's fixed val windows), and H_c = θ_0: that model is the best estimate of the real next-token
    distribution available. Each context follows the mean-field map with the run's λ and T (replace), or the
    growing-pool recursion (accumulate; accumulate-subsample in expectation). The map assumes a full refit with
    infinitely many samples, pure temperature sampling (sample.top_k/top_p are ignored) and no model capacity limit."""
    from training import rundir as ck

    if not os.path.isdir(run_dir):
        raise ValueError(f"--from-run {run_dir}: no such run directory")
    if not os.path.exists(os.path.join(run_dir, "config.json")):
        raise ValueError(f"--from-run {run_dir}: not a closedloop run directory (no config.json)")
    if not ck.is_done(run_dir, 0):
        raise ValueError(f"--from-run {run_dir}: generation 0 is not finished (no gen_000/DONE)")
    if contexts < 1:
        raise ValueError(f"--contexts must be >= 1, got {contexts}")
    log_theta0, targets, cfg = _gen0_distributions(run_dir, contexts)
    pred = th.context_predictions(log_theta0, targets, cfg.sample.temperature, cfg.mix.fresh_fraction,
                                  cfg.loop.generations, cfg.mix.workflow)
    _record(run_dir, pred)
    if cfg.sample.top_k or cfg.sample.top_p < 1:
        print("closedloop theory: note: the prediction ignores sample.top_k and sample.top_p", file=sys.stderr)
    print(_dumps({"run": run_dir, "contexts": int(len(targets)), "temperature": cfg.sample.temperature,
                      "fresh_fraction": cfg.mix.fresh_fraction, "workflow": cfg.mix.workflow,
                      "theory/entropy": pred["entropy"].tolist(), "theory/excess_nll": pred["excess_nll"].tolist()}))
    return 0


def _gen0_distributions(run_dir: str, contexts: int):
    """log θ_0 (C, V) float64 on up to `contexts` scored val positions, their real next tokens (C,), the config."""
    import torch

    from models import build_model
    from training import rundir as ck
    from training.config import from_dict
    from training.loop import RunConfig, prepare

    saved = ck.read_json(os.path.join(run_dir, "config.json"))
    fingerprint = saved.pop("fingerprint", None)
    prep = prepare(from_dict(RunConfig, saved), run_dir)  # reloads the corpus and tokenizer.json, same val windows
    if fingerprint and fingerprint.get("corpus") not in (None, prep.corpus.fingerprint):
        raise ValueError(f"--from-run {run_dir}: the corpus changed since the run (fingerprint differs)")
    model = build_model(prep.cfg.model, torch.Generator().manual_seed(0), scratch=True)  # then generation 0's weights
    model.load_state_dict(ck.load_state(os.path.join(ck.gen_dir(run_dir, 0), "model.pt")))
    model.to(prep.device).eval()
    block = prep.val_y.shape[1]
    scored = np.flatnonzero(prep.val_y.reshape(-1) >= 0)
    if len(scored) > contexts:  # deterministic, evenly spread over the val windows
        scored = scored[np.round(np.linspace(0, len(scored) - 1, contexts)).astype(int)]
    win, pos = np.divmod(scored, block)
    wins = np.unique(win)
    out = np.empty((len(scored), model.config.vocab_size))
    with torch.inference_mode():
        for i in range(0, len(wins), 64):
            rows = wins[i:i + 64]
            logits = model(torch.from_numpy(prep.val_x[rows]).to(prep.device))  # (b, block, V)
            logp = torch.log_softmax(logits.float(), dim=-1).double().cpu().numpy()
            k = np.flatnonzero(np.isin(win, rows))
            out[k] = logp[np.searchsorted(rows, win[k]), pos[k]]
    return out, prep.val_y.reshape(-1)[scored], prep.cfg


def _record(run_dir: str, pred: dict) -> None:
    """Add the keys to the existing generation records of metrics.jsonl (atomic rewrite) and to TensorBoard."""
    from training.records import RunLogger, read_metrics, write_metrics

    def val(x):
        return float(x) if math.isfinite(x) else None

    path = os.path.join(run_dir, "metrics.jsonl")
    records = read_metrics(path)
    for r in records:
        g = r.get("generation")
        if isinstance(g, int) and 0 <= g < len(pred["entropy"]):
            r["theory/entropy"], r["theory/excess_nll"] = val(pred["entropy"][g]), val(pred["excess_nll"][g])
    if records:
        write_metrics(path, records)
    log = RunLogger(run_dir)
    try:
        for g in range(len(pred["entropy"])):
            log.scalars(g, {"theory/entropy": pred["entropy"][g], "theory/excess_nll": pred["excess_nll"][g]})
    finally:
        log.close()
