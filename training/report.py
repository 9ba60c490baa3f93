"""Sweep report: `closedloop report runs/<sweep>` (also written at the end of every sweep).

Every finished point first gets the categorical theory's prediction from its own generation-0 model
(training/prediction.py: predicted trajectory, its verdict by the same rule, the equilibrium and its stability),
recorded in the point (`theory/*` in metrics.jsonl and TensorBoard). Then, into the sweep folder:
- `summary.csv`: one row per point: a column per axis, `name`, `status` (done | failed), `error`, `verdict`,
  `theory_verdict`, `theory_shift`, the predicted equilibrium (`theory_eq_entropy` bits, `theory_rho_max`,
  `theory_stable_share`), the final value of every measure under its metric name, and `<metric>@g<k>` per
  generation for the main measures (and theory/entropy);
- `summary.md`: the points aggregated per setting over seeds: mean and 95% interval (Student t) of the main
  measures' final values and of the change of val/entropy since generation 0, the majority verdict with its
  agreement (`stable 2/3`; a tie names both) and the majority predicted verdict;
- `phase.csv` (grids over sample.temperature and mix.fresh_fraction): per temperature the measured critical λ (the
  smallest λ whose setting's majority verdict is `stable`, and per seed the smallest stable λ: min and max), the
  predicted one for the run's own H (the smallest λ whose predicted trajectory is `stable`, on a grid of step
  0.02, from each seed's generation-0 model: mean, min, max) and the uniform-H boundary max(0, 1 − T);
- figures, PNG and PDF: `measures.*` (main measures against generation, one line per setting, a band over seeds),
  `phase.*` (T × λ, measured beside predicted: colour = change of a measure since generation 0, marker = the
  setting's majority verdict; the boundaries: measured, predicted for the run's own H, uniform H), `workflows.*`
  (when the grid has mix.workflow);
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
from training.measures import main_keys
from training.records import read_metrics
from training.sweep import SHORT, load_grid, log_path

MAIN = main_keys()  # val/entropy, val/bpc, samples/distinct_2, samples/word_entropy, truth/excess_bpc, ...
LAMBDA_STEP = 0.02  # the λ grid of the predicted boundary
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
        rows.append({"point": p, "status": status, "error": error, "verdict": verdict, "sweep_dir": sweep_dir,
                     "records": read_metrics(os.path.join(d, "metrics.jsonl")) if status == "done" else []})
    return grid, rows


def write_report(sweep_dir: str, measure: str = "val/entropy", say=None) -> list[str]:
    """Write summary.csv, summary.md, phase.csv, the figures and the HParams; returns the files written."""
    grid, rows = load_points(sweep_dir)
    bounds = _predictions(rows, grid, say or (lambda s: None))
    files = [_write_csv(sweep_dir, grid, rows), _write_md(sweep_dir, grid, rows)]
    phase = _phase_table(grid, rows, bounds)
    if phase:
        files.append(_write_phase_csv(sweep_dir, phase))
    files += _figures(sweep_dir, grid, rows, measure, phase)
    files.append(_sweep_run(sweep_dir, files, _hparams(sweep_dir, grid, rows)))
    return files


def _final(records: list[dict]) -> dict:
    return {k: v for k, v in records[-1].items() if isinstance(v, (int, float)) and not k.startswith("time/")} if records else {}


def _write_csv(sweep_dir, grid, rows) -> str:
    keys = sorted({k for r in rows for k in _final(r["records"])} - {"generation"})
    gens = max((len(r["records"]) for r in rows), default=0)
    per_gen_keys = [*MAIN[:3], "theory/entropy"]
    per_gen = [f"{m}@g{g}" for m in per_gen_keys for g in range(gens)]
    theory = ["theory_verdict", "theory_shift", "theory_eq_entropy", "theory_rho_max", "theory_stable_share"]
    header = [*grid.axes, "name", "status", "error", "verdict", *theory, "generations", *keys, *per_gen]
    path = os.path.join(sweep_dir, "summary.csv")
    with open(path + ".tmp", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            fin, recs, th = _final(r["records"]), r["records"], r.get("theory") or {}
            w.writerow([*(r["point"].values[a] for a in grid.axes), r["point"].name, r["status"], r["error"],
                        r["verdict"], th.get("verdict", ""), *(_num(th.get(k)) for k in
                                                               ("shift", "eq_entropy", "rho_max", "stable_share")),
                        len(recs), *(fin.get(k, "") for k in keys),
                        *((recs[g].get(m, "") if g < len(recs) else "") for m in per_gen_keys for g in range(gens))])
    os.replace(path + ".tmp", path)
    return path


def _num(x) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.6g}"


def majority(labels: list[str]) -> tuple[str, str]:
    """The most common label and its agreement, e.g. ("stable", "2/3"); a tie names every tied label
    ("collapse / drift", "1/2"). Never one seed's label as the setting's."""
    if not labels:
        return "", "0/0"
    counts = Counter(labels).most_common()
    best = counts[0][1]
    return " / ".join(sorted(v for v, k in counts if k == best)), f"{best}/{len(labels)}"


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
    cols = [*MAIN[:4], "Δ val/entropy", "Δ theory/entropy"]
    lines = [f"# Sweep {os.path.basename(os.path.normpath(sweep_dir))}", "",
             f"{len(rows)} points, {sum(r['status'] == 'done' for r in rows)} done, "
             f"{sum(r['status'] == 'failed' for r in rows)} failed. Final values, mean ± 95% interval over seeds; "
             "verdict: the majority over seeds and its agreement; theory: the majority verdict of the categorical "
             "map's prediction from each seed's generation-0 model (training/prediction.py).", "",
             "| " + " | ".join([*axes, "seeds", *cols, "verdict", "theory", "all verdicts"]) + " |",
             "|" + "---|" * (len(axes) + len(cols) + 4)]
    for key, rs in groups.items():
        done = [r for r in rs if r["status"] == "done"]
        cells = []
        for c in cols:
            if c == "Δ val/entropy":
                vals = [change(r["records"], "val/entropy") for r in done]
            elif c == "Δ theory/entropy":
                vals = [float(r["theory"]["entropy"][-1] - r["theory"]["entropy"][0]) for r in done if r.get("theory")]
            else:
                vals = [r["records"][-1].get(c) for r in done]
            m, h = mean_ci(vals)
            cells.append("—" if math.isnan(m) else f"{m:.3f}" + ("" if math.isnan(h) else f" ± {h:.3f}"))
        verdicts = Counter(r["verdict"] or r["status"] for r in rs)
        name, agree = majority([r["verdict"] for r in done])
        t_name, t_agree = majority([r["theory"]["verdict"] for r in done if r.get("theory")])
        lines.append("| " + " | ".join([*map(str, key), f"{len(done)}/{len(rs)}", *cells,
                                         f"**{name}** {agree}" if name else "—",
                                         f"{t_name} {t_agree}" if t_name else "—",
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


def _figures(sweep_dir, grid, rows, measure, phase) -> list[str]:
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
        files += _phase(sweep_dir, rows, measure, phase, plt)
    if "mix.workflow" in grid.axes:
        files += _workflows(sweep_dir, rows, plt)
    return files


def _phase(sweep_dir, rows, measure, phase, plt) -> list[str]:
    """T × λ, measured (left) beside predicted from each run's generation-0 model (right): colour = mean change of
    `measure` since generation 0 (right: of the predicted entropy), marker = the setting's majority verdict; lines:
    the measured critical λ, the predicted one for the run's own H (mean over seeds, band min–max) and the
    uniform-H boundary λ* = max(0, 1 − T)."""
    cells = defaultdict(list)
    for r in rows:
        v = r["point"].values
        cells[(float(v["sample.temperature"]), float(v["mix.fresh_fraction"]))].append(r)
    fig, axs = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, side in zip(axs, ("measured", "predicted")):
        pts = []
        for (t, lam), rs in cells.items():
            done = [r for r in rs if r["status"] == "done"]
            if side == "measured":
                ch = [c for r in done if (c := change(r["records"], measure)) is not None]
                name, agree = majority([r["verdict"] for r in done]) if done else ("failed", "")
            else:
                th = [r["theory"] for r in done if r.get("theory")]
                ch = [float(p["entropy"][-1] - p["entropy"][0]) for p in th]
                name, agree = majority([p["verdict"] for p in th]) if th else ("n/a", "")
            pts.append((t, lam, float(np.mean(ch)) if ch else math.nan, name, agree))
        lim = max([abs(c) for *_, c, _, _ in pts if math.isfinite(c)] or [1.0])
        sc = None
        for name in sorted({p[3] for p in pts}):
            sel = [p for p in pts if p[3] == name]
            sc = ax.scatter([p[0] for p in sel], [p[1] for p in sel], c=[p[2] for p in sel], cmap="coolwarm",
                            vmin=-lim, vmax=lim, marker=MARKERS.get(name, "s"), s=110, edgecolors="k", label=name)
            for p in sel:
                if p[4] and len(set(p[4].split("/"))) > 1:  # not unanimous (2/3, not 3/3): say so
                    ax.annotate(p[4], (p[0], p[1]), textcoords="offset points", xytext=(0, -16), ha="center",
                                fontsize=6)
        what = measure if side == "measured" else "theory/entropy"
        if sc is not None:
            fig.colorbar(sc, ax=ax, label=f"change of {what} since generation 0")
        ts = [p["temperature"] for p in phase]
        ax.plot(ts, [p["uniform_h_critical_lambda"] for p in phase], "k--", lw=1, label="λ* uniform H (1 − T)")
        pred = np.array([p["predicted_critical_lambda"] for p in phase], dtype=float)
        ax.plot(ts, pred, "g-", lw=1.5, label="λ* predicted, the run's own H")
        ax.fill_between(ts, [p["predicted_min"] for p in phase], [p["predicted_max"] for p in phase], color="g",
                        alpha=0.15)
        ax.plot(ts, [p["measured_critical_lambda"] for p in phase], "m:", lw=1.5, marker="_",
                label="λ* measured (majority stable)")
        ax.set_xlabel("temperature T")
        ax.set_title(f"{side}" + (" (each seed's generation-0 model, mean-field map)" if side == "predicted" else ""),
                     fontsize=9)
        ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=6, loc="upper right")
    axs[0].set_ylabel("fresh fraction λ")
    fig.tight_layout()
    return _save(fig, sweep_dir, "phase")


def _gen0_key(point_dir: str) -> str:
    """Points whose generation 0 is the same (same weights, same tokenizer) share one set of H distributions."""
    import hashlib

    h = hashlib.sha256()
    for name in (os.path.join("gen_000", "model.pt"), "tokenizer.json"):
        with open(os.path.join(point_dir, name), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _predictions(rows, grid, say) -> list[np.ndarray]:
    """Give every finished point its prediction (row["theory"], recorded in the point); returns, for a T × λ
    grid, one predicted boundary per distinct generation 0 (one per seed), at the grid's temperatures."""
    from training import prediction

    phase_grid = "sample.temperature" in grid.axes and "mix.fresh_fraction" in grid.axes
    temps = sorted({float(t) for t in grid.axes.get("sample.temperature", [])})
    lams = np.round(np.arange(0.0, 1.0 + LAMBDA_STEP / 2, LAMBDA_STEP), 10)
    cache, bounds = {}, {}
    for r in rows:
        r["theory"] = None
        if r["status"] != "done":
            continue
        d = os.path.join(r["sweep_dir"], r["point"].name)
        cfg = ck.read_json(os.path.join(d, "config.json"))
        t, lam, wf = cfg["sample"]["temperature"], cfg["mix"]["fresh_fraction"], cfg["mix"]["workflow"]
        try:
            key = _gen0_key(d)
            if key not in cache:
                cache[key] = prediction.gen0(d, prediction.SWEEP_CONTEXTS)
            h = cache[key]
            pred = prediction.predict(h, t, lam, len(r["records"]), wf)
            prediction.record(d, pred)
        except Exception as e:  # noqa: BLE001: a prediction that cannot be made leaves the measured report intact
            say(f"  no theory prediction for {r['point'].name}: {type(e).__name__}: {str(e).splitlines()[0]}")
            continue
        r["theory"] = pred
        r["records"] = read_metrics(os.path.join(d, "metrics.jsonl"))  # now with theory/* per generation
        bkey = (key, len(r["records"]), wf)
        if phase_grid and bkey not in bounds:
            bounds[bkey] = prediction.boundary(h, temps, lams, len(r["records"]), wf)
    return list(bounds.values())


def _phase_table(grid, rows, bounds) -> list[dict]:
    """phase.csv's rows (T × λ grids only): per temperature the measured and predicted critical λ."""
    if not ("sample.temperature" in grid.axes and "mix.fresh_fraction" in grid.axes):
        return []
    temps = sorted({float(t) for t in grid.axes["sample.temperature"]})
    out = []
    for i, t in enumerate(temps):
        at_t = [r for r in rows if float(r["point"].values["sample.temperature"]) == t and r["status"] == "done"]
        by_lam = defaultdict(list)
        for r in at_t:
            by_lam[float(r["point"].values["mix.fresh_fraction"])].append(r)
        stable = [lam for lam in sorted(by_lam) if majority([r["verdict"] for r in by_lam[lam]])[0] == "stable"]
        per_seed = defaultdict(list)  # seed -> the λ values where that seed's run is stable
        for r in at_t:
            if r["verdict"] == "stable":
                per_seed[r["point"].values.get("seed", 0)].append(float(r["point"].values["mix.fresh_fraction"]))
        seeds = [min(v) for v in per_seed.values()]
        pred = np.array([b[i] for b in bounds], dtype=float)
        ok = pred[np.isfinite(pred)]
        out.append({"temperature": t,
                    "measured_critical_lambda": stable[0] if stable else math.nan,
                    "measured_seed_min": min(seeds) if seeds else math.nan,
                    "measured_seed_max": max(seeds) if seeds else math.nan,
                    "seeds_with_a_stable_lambda": f"{len(seeds)}/{len({r['point'].values.get('seed', 0) for r in at_t})}",
                    "predicted_critical_lambda": float(ok.mean()) if ok.size else math.nan,
                    "predicted_min": float(ok.min()) if ok.size else math.nan,
                    "predicted_max": float(ok.max()) if ok.size else math.nan,
                    "uniform_h_critical_lambda": max(0.0, 1.0 - t)})
    return out


def _write_phase_csv(sweep_dir, phase) -> str:
    path = os.path.join(sweep_dir, "phase.csv")
    with open(path + ".tmp", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(phase[0]))
        w.writeheader()
        for row in phase:
            w.writerow({k: (_num(v) if isinstance(v, float) else v) for k, v in row.items()})
    os.replace(path + ".tmp", path)
    return path


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
        # an axis of regimes (a mapping of options per value) is no option itself: its value is the regime's name
        hp = {**board.run_hparams(flat), **{n: board.hparam_value(flat[n] if n in flat else r["point"].values[n])
                                            for n in names}}
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
