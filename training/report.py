"""Sweep report: `closedloop report runs/<sweep>` (also written at the end of every sweep).

Writes into the sweep folder:
- `summary.csv`: one row per point: a column per axis, `name`, `status` (done | failed), `error`, `verdict`,
  the final value of every measure under its metric name, and `<metric>@g<k>` for the main measures per generation;
- `summary.md`: the same points aggregated over seeds: mean and 95% interval (Student t) of the main measures'
  final values and of the change of val/entropy since generation 0, with the verdicts counted;
- figures, PNG and PDF: `measures.*` (main measures against generation, one line per setting, a band over seeds),
  `phase.*` (temperature × fresh fraction, colour = change of a measure from generation 0 to the last, marker =
  verdict, with the categorical theory's predicted boundary), `workflows.*` (when the grid has mix.workflow);
- TensorBoard: an HParams session for every finished point, grouped over seeds by setting, and the sweep-level
  run `_sweep/` (the figures as images, summary.md as text, the HParams experiment), so TensorBoard alone tells
  the story (training/board.py lays it out).
Tested in tests/test_sweep.py.
"""
from __future__ import annotations

import csv
import math
import os
from collections import Counter, defaultdict

import numpy as np

from training import rundir as ck
from training.sweep import SHORT, load_grid, log_path
from training.records import read_metrics

MAIN = ["val/entropy", "val/bpc", "samples/distinct_2", "samples/word_entropy", "truth/excess_bpc", "samples/ref_bpc"]
# Two-sided 95% quantiles of Student's t for 1..10 degrees of freedom (beyond: the normal 1.96).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
MARKERS = {"collapse": "v", "heat death": "^", "drift": "D", "stable": "o", "undetermined": "P", "failed": "X"}


def load_points(sweep_dir: str):
    """(grid, rows): rows hold the point, its status, error, records and verdict."""
    grid = load_grid(os.path.join(sweep_dir, "sweep.yaml"))
    rows = []
    for p in grid.points:
        d = os.path.join(sweep_dir, p.name)
        failed = os.path.exists(log_path(d, "failed"))
        summary = ck.read_json(os.path.join(d, "summary.json")) if os.path.exists(os.path.join(d, "summary.json")) else {}
        status = "failed" if failed else ("done" if summary else "missing")
        error = open(log_path(d, "failed")).read().strip() if failed else ""
        verdict = (summary.get("verdict") or {}).get("verdict", "") if status == "done" else ""
        rows.append({"point": p, "status": status, "error": error, "verdict": verdict,
                     "records": read_metrics(os.path.join(d, "metrics.jsonl")) if status == "done" else []})
    return grid, rows


def write_report(sweep_dir: str, measure: str = "val/entropy") -> list[str]:
    """Write summary.csv, summary.md, the figures and the HParams; returns the files written."""
    grid, rows = load_points(sweep_dir)
    files = [_write_csv(sweep_dir, grid, rows), _write_md(sweep_dir, grid, rows)]
    files += _figures(sweep_dir, grid, rows, measure)
    files.append(_sweep_run(sweep_dir, files, _hparams(sweep_dir, grid, rows)))
    return files


def _final(records: list[dict]) -> dict:
    return {k: v for k, v in records[-1].items() if isinstance(v, (int, float)) and not k.startswith("time/")} if records else {}


def _write_csv(sweep_dir, grid, rows) -> str:
    keys = sorted({k for r in rows for k in _final(r["records"])} - {"generation"})
    gens = max((len(r["records"]) for r in rows), default=0)
    per_gen = [f"{m}@g{g}" for m in MAIN[:3] for g in range(gens)]
    header = [*grid.axes, "name", "status", "error", "verdict", "generations", *keys, *per_gen]
    path = os.path.join(sweep_dir, "summary.csv")
    with open(path + ".tmp", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            fin, recs = _final(r["records"]), r["records"]
            w.writerow([*(r["point"].values[a] for a in grid.axes), r["point"].name, r["status"], r["error"],
                        r["verdict"], len(recs), *(fin.get(k, "") for k in keys),
                        *((recs[g].get(m, "") if g < len(recs) else "") for m in MAIN[:3] for g in range(gens))])
    os.replace(path + ".tmp", path)
    return path


def _settings(grid, rows):
    """Points grouped by their non-seed axis values (the seeds of one setting)."""
    axes = [a for a in grid.axes if a != "seed"]
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r["point"].values[a] for a in axes)].append(r)
    return axes, groups


def mean_ci(xs) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (nan with fewer than 2 values)."""
    xs = np.asarray([x for x in xs if x is not None and math.isfinite(x)], dtype=float)
    if len(xs) == 0:
        return math.nan, math.nan
    if len(xs) == 1:
        return float(xs[0]), math.nan
    df = len(xs) - 1
    t = T975[df - 1] if df <= len(T975) else 1.96
    return float(xs.mean()), float(t * xs.std(ddof=1) / math.sqrt(len(xs)))


def change(records: list[dict], key: str) -> float | None:
    """Last minus first value of a measure (None where either is missing: a NaN is stored as null)."""
    first, last = records[0].get(key), records[-1].get(key)
    return None if first is None or last is None else last - first


def _write_md(sweep_dir, grid, rows) -> str:
    axes, groups = _settings(grid, rows)
    cols = [*MAIN[:4], "Δ val/entropy"]
    lines = [f"# Sweep {os.path.basename(os.path.normpath(sweep_dir))}", "",
             f"{len(rows)} points, {sum(r['status'] == 'done' for r in rows)} done, "
             f"{sum(r['status'] == 'failed' for r in rows)} failed. Final values, mean ± 95% interval over seeds.", "",
             "| " + " | ".join([*axes, "seeds", *cols, "verdicts"]) + " |",
             "|" + "---|" * (len(axes) + len(cols) + 2)]
    for key, rs in groups.items():
        done = [r for r in rs if r["status"] == "done"]
        cells = []
        for c in cols:
            if c == "Δ val/entropy":
                vals = [change(r["records"], "val/entropy") for r in done]
            else:
                vals = [r["records"][-1].get(c) for r in done]
            m, h = mean_ci(vals)
            cells.append("—" if math.isnan(m) else f"{m:.3f}" + ("" if math.isnan(h) else f" ± {h:.3f}"))
        verdicts = Counter(r["verdict"] or r["status"] for r in rs)
        lines.append("| " + " | ".join([*map(str, key), f"{len(done)}/{len(rs)}", *cells,
                                         ", ".join(f"{v} ×{n}" for v, n in verdicts.items())]) + " |")
    path = os.path.join(sweep_dir, "summary.md")
    ck.write_text(path, "\n".join(lines) + "\n")
    return path


def _save(fig, sweep_dir, stem) -> list[str]:
    import matplotlib.pyplot as plt

    paths = [os.path.join(sweep_dir, f"{stem}.{ext}") for ext in ("png", "pdf")]
    for p in paths:
        fig.savefig(p, dpi=120)
    plt.close(fig)
    return paths


def _figures(sweep_dir, grid, rows, measure) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    axes, groups = _settings(grid, rows)
    files = []
    fig, axs = plt.subplots(2, 3, figsize=(13, 7))
    for ax, m in zip(axs.flat, MAIN):
        for key, rs in groups.items():
            curves = [[rec.get(m) for rec in r["records"]] for r in rs if r["status"] == "done"]
            curves = [c for c in curves if c and all(v is not None for v in c)]
            if not curves:
                continue
            n = min(map(len, curves))
            arr = np.array([c[:n] for c in curves], dtype=float)
            line, = ax.plot(range(n), arr.mean(0), marker=".", label=",".join(f"{SHORT.get(a, a.split('.')[-1])}={v}"
                                                                              for a, v in zip(axes, key)))
            if len(arr) > 1:
                ax.fill_between(range(n), arr.min(0), arr.max(0), color=line.get_color(), alpha=0.2)
        ax.set_title(m, fontsize=10)
        ax.set_xlabel("generation")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    handles, labels = axs.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    files += _save(fig, sweep_dir, "measures")
    if "sample.temperature" in grid.axes and "mix.fresh_fraction" in grid.axes:
        files += _phase(sweep_dir, rows, measure, plt)
    if "mix.workflow" in grid.axes:
        files += _workflows(sweep_dir, rows, plt)
    return files


def _phase(sweep_dir, rows, measure, plt) -> list[str]:
    """T × λ: colour = mean change of `measure` from generation 0 to the last; marker = majority verdict."""
    cells = defaultdict(list)
    for r in rows:
        v = r["point"].values
        cells[(float(v["sample.temperature"]), float(v["mix.fresh_fraction"]))].append(r)
    fig, ax = plt.subplots(figsize=(6, 4.6))
    pts = []
    for (t, lam), rs in cells.items():
        ch = [c for r in rs if r["status"] == "done" and (c := change(r["records"], measure)) is not None]
        verdict = Counter(r["verdict"] or r["status"] for r in rs).most_common(1)[0][0]
        pts.append((t, lam, float(np.mean(ch)) if ch else math.nan, verdict))
    lim = max([abs(c) for *_, c, _ in pts if math.isfinite(c)] or [1.0])
    for verdict in sorted({p[3] for p in pts}):
        sel = [p for p in pts if p[3] == verdict]
        sc = ax.scatter([p[0] for p in sel], [p[1] for p in sel], c=[p[2] for p in sel], cmap="coolwarm",
                        vmin=-lim, vmax=lim, marker=MARKERS.get(verdict, "s"), s=110, edgecolors="k", label=verdict)
    fig.colorbar(sc, ax=ax, label=f"change of {measure} since generation 0")
    ts = np.linspace(min(p[0] for p in pts), max(p[0] for p in pts), 200)
    try:  # the categorical model's stability boundary for a uniform H (1 − T for any number of outcomes)
        from training.theory import critical_fresh_fraction

        ax.plot(ts, critical_fresh_fraction(ts, np.full(8, 1.0 / 8)), "k--", lw=1, label="theory: λ* (uniform H)")
    except (ImportError, ValueError):
        ax.plot(ts, np.clip(1 - ts, 0, 1), "k--", lw=1, label="theory: λ* = 1 − T")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("fresh fraction λ")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _save(fig, sweep_dir, "phase")


def _workflows(sweep_dir, rows, plt) -> list[str]:
    fig, axs = plt.subplots(1, 2, figsize=(10, 4))
    by = defaultdict(list)
    for r in rows:
        if r["status"] == "done":
            by[str(r["point"].values["mix.workflow"])].append(r["records"])
    for ax, m in zip(axs, ("val/entropy", "val/bpc")):
        for wf, runs in sorted(by.items()):
            n = min(len(x) for x in runs)
            arr = np.array([[rec.get(m) for rec in x[:n]] for x in runs], dtype=float)
            ax.plot(range(n), np.nanmean(arr, 0), marker=".", label=wf)
        ax.set_title(m)
        ax.set_xlabel("generation")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, sweep_dir, "workflows")


def _hparams(sweep_dir: str, grid, rows):
    """One HParams session per finished point, replacing the one its run wrote: hparams = the run's settings plus
    every swept option but the seed, group = the setting (its seeds share one averaged row), final metrics with
    Δ val/entropy and the verdict code. Returns the sweep's experiment: T, λ and every swept option but the seed
    as discrete domains (checkbox filters), the main measures, Δ val/entropy and the verdict as metric columns."""
    from training import board
    from training.loop import flatten_json

    names = list(board.AXES)
    names += [a for a in grid.axes if a != "seed" and a not in names]
    domains, present = {n: [] for n in names}, set()
    for r in rows:
        if r["status"] != "done":
            continue
        d = os.path.join(sweep_dir, r["point"].name)
        flat = flatten_json(ck.read_json(os.path.join(d, "config.json")))
        hp = {**board.run_hparams(flat), **{n: board.hparam_value(flat[n]) for n in names}}
        board.write_hparams(d, hp, board.setting_name(hp, names), board.final_metrics(r["records"], r["verdict"]),
                            r["records"][-1]["generation"])
        for n in names:
            domains[n].append(hp[n])
        present |= set(r["records"][-1])
    display = {n: board.DISPLAY.get(n) or SHORT.get(n) or n.split(".")[-1] for n in names}
    return board.experiment(domains, display, board.metric_tags(present), first=names)


def _sweep_run(sweep_dir: str, files: list[str], experiment_pb) -> str:
    """The sweep-level run `<sweep>/_sweep/`, rewritten with the report: the PNG figures as images
    (`sweep/phase`, `sweep/measures`, ...), summary.md as text (`sweep/summary`) and the HParams experiment."""
    from training import board

    images = {f"sweep/{os.path.splitext(os.path.basename(f))[0]}": f for f in files if f.endswith(".png")}
    with open(os.path.join(sweep_dir, "summary.md"), encoding="utf-8") as f:
        summary = f.read()
    return board.write_sweep_run(sweep_dir, images, {"sweep/summary": summary}, experiment_pb)
