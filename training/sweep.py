"""Sweeps: run a grid of closed-loop settings in one command, resumable, on one machine or a Ray cluster.

    closedloop sweep sweeps/phase.yaml [--out DIR] [--workers N] [--per-gpu K] [--backend local|ray]
                     [--address ADDR] [--dry-run]

The grid file names a base preset, overrides, and axes (any dotted option, `seed` included):

    preset: debug
    overrides: {loop.generations: 3}
    axes: {sample.temperature: [0.6, 1.5], mix.fresh_fraction: [0.0, 0.5], seed: [0, 1]}

An axis may also list settings that go together (a regime): each value a mapping of options, with an optional
`name` for the point's folder and the report (default: its position, 0, 1, ...):

    axes: {regime: [{name: no-real, mix.fresh_fraction: 0.0, train.epochs: 5},
                    {name: keep10, mix.fresh_fraction: 0.1, train.epochs: 10}], seed: [0, 1]}

Every point is an ordinary run directory `DIR/<name>` (name like `T=0.6,lambda=0,seed=1`) run by its own
`closedloop run` process, so a point resumes like any run: a sweep run again skips finished points and resumes
unfinished ones. On CPU each worker gets its share of the cores as torch threads (never oversubscribed); on CUDA
points are placed on GPUs round-robin, `--per-gpu` points sharing one. A point that fails is recorded
(`DIR/_logs/<name>.failed` holds its error, `.log` its output) and the others go on; the exit status is the number of failed points.
At the end `summary.csv`, `summary.md` and the figures are written (training/report.py).
Tested in tests/test_sweep.py.
"""
from __future__ import annotations

import itertools
import os
import queue
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from training import rundir as ck

SHORT = {"sample.temperature": "T", "mix.fresh_fraction": "lambda", "mix.workflow": "workflow", "seed": "seed"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Point:
    name: str
    values: dict  # axis key -> value (as given in the grid file)
    args: list  # `closedloop run` arguments, without --out


@dataclass
class Grid:
    path: str
    preset: str
    overrides: dict
    axes: dict
    points: list


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)


def load_grid(path: str) -> Grid:
    """Read and validate a grid file: every point's config is built (and checked) before anything runs."""
    import yaml

    from training import presets
    from training.config import apply_overrides

    if not os.path.isfile(path):
        raise FileNotFoundError(f"sweep file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            spec = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    unknown = set(spec) - {"preset", "overrides", "axes", "names"}
    if not isinstance(spec, dict) or unknown:
        raise ValueError(f"{path}: top-level keys are preset, overrides, axes, names; got {sorted(unknown)}")
    preset = str(spec.get("preset", "default"))
    overrides = {str(k): _fmt(v) for k, v in (spec.get("overrides") or {}).items()}
    axes = spec.get("axes") or {}
    if not isinstance(axes, dict) or not axes or not all(isinstance(v, list) and v for v in axes.values()):
        raise ValueError(f"{path}: `axes` must map options to non-empty lists of values")
    short = {**SHORT, **(spec.get("names") or {})}
    base = presets.get(preset)
    points = []
    for combo in itertools.product(*axes.values()):
        values, opts = {}, dict(overrides)
        for (axis, v), i in zip(zip(axes, combo), _positions(axes, combo)):
            if isinstance(v, dict):  # a regime: several options at once
                settings = {str(k): _fmt(x) for k, x in v.items() if k != "name"}
                if not settings:
                    raise ValueError(f"{path}: a value of axis {axis!r} sets no option")
                opts.update(settings)
                values[axis] = str(v.get("name", i))
            else:
                opts[axis] = _fmt(v)
                values[axis] = v
        try:
            apply_overrides(base, opts)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        name = ",".join(f"{short.get(k, k.split('.')[-1])}={_fmt(v)}" for k, v in values.items()).replace(os.sep, "_")
        points.append(Point(name, values, ["--preset", preset, *[f"--{k}={v}" for k, v in opts.items()]]))
    if len({p.name for p in points}) != len(points):
        raise ValueError(f"{path}: two points get the same name; give axes distinct short names under `names`")
    return Grid(path, preset, overrides, axes, points)


def _positions(axes: dict, combo: tuple) -> list[int]:
    """Index of each value of `combo` in its axis's list (the default name of a regime)."""
    return [next(i for i, x in enumerate(vals) if x is v) for vals, v in zip(axes.values(), combo)]


def point_done(point_dir: str) -> bool:
    """Finished: its summary exists and every configured generation has DONE."""
    if not os.path.exists(os.path.join(point_dir, "summary.json")):
        return False
    gens = ck.read_json(os.path.join(point_dir, "config.json"))["loop"]["generations"]
    return ck.completed_generations(point_dir) >= gens


def log_path(point_dir: str, ext: str) -> str:
    """Sweep bookkeeping lives in <sweep>/_logs/, so a point's folder stays an ordinary run directory."""
    parent, name = os.path.split(os.path.normpath(point_dir))
    return os.path.join(parent, "_logs", f"{name}.{ext}")


def run_point(point_args: list, point_dir: str, threads: int, gpu: str | None) -> tuple[bool, str]:
    """One point in its own process (its own torch threads, its own GPU); returns (ok, error line)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    cmd = [sys.executable, "-m", "training", "run", *point_args, "--out", point_dir,
           f"--train.threads={threads}", "--loop.progress=false"]
    log_file = log_path(point_dir, "log")
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    with open(log_file, "ab") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd()).returncode
    if code == 0:
        return True, ""
    with open(log_file, encoding="utf-8", errors="replace") as f:
        lines = [ln.strip() for ln in f.read().replace("\r", "\n").splitlines() if ln.strip()]
    return False, f"exit {code}: {lines[-1] if lines else 'no output'}"


def plan_resources(workers: int, per_gpu: int) -> tuple[int, list]:
    """(threads per worker, GPU slots): on CUDA one slot per (GPU, share); on CPU the cores split evenly."""
    import torch

    from training.environment import cpu_cores

    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    threads = max(1, cpu_cores() // workers)
    return threads, [str(i % n_gpu) for i in range(n_gpu * per_gpu)] if n_gpu else []


def run_sweep(grid: Grid, out: str, workers: int = 1, per_gpu: int = 1, backend: str = "local",
              address: str | None = None, say=print) -> dict:
    """Run every unfinished point; returns {"done": [...], "failed": {name: error}, "skipped": [...]}."""
    os.makedirs(out, exist_ok=True)
    shutil.copyfile(grid.path, os.path.join(out, "sweep.yaml"))
    todo, skipped = [], []
    for p in grid.points:
        d = os.path.join(out, p.name)
        (skipped if point_done(d) else todo).append(p)
        if os.path.exists(log_path(d, "failed")) and p in todo:
            os.remove(log_path(d, "failed"))
    say(f"sweep {grid.path}: {len(grid.points)} points, {len(skipped)} finished, {len(todo)} to run "
        f"({backend}, {workers} worker{'s' if workers > 1 else ''})")
    t0 = time.perf_counter()
    if backend == "ray":
        results = _run_ray(todo, out, workers, per_gpu, address)
    else:
        threads, slots = plan_resources(workers, per_gpu)
        free: queue.Queue = queue.Queue()
        for slot in slots:
            free.put(slot)

        def on_free_gpu(p: Point):
            # A point takes a GPU slot when it starts and gives it back when it ends, so at most `per_gpu`
            # points share a GPU and no GPU idles while another is oversubscribed.
            if not slots:
                return run_point(p.args, os.path.join(out, p.name), threads, None)
            slot = free.get()
            try:
                return run_point(p.args, os.path.join(out, p.name), threads, slot)
            finally:
                free.put(slot)

        with ThreadPoolExecutor(max_workers=min(workers, len(slots)) if slots else workers) as pool:
            results = list(pool.map(on_free_gpu, todo))
    failed = {}
    for p, (ok, err) in zip(todo, results):
        if not ok:
            failed[p.name] = err
            ck.write_text(log_path(os.path.join(out, p.name), "failed"), err + "\n")
        say(f"  {'ok    ' if ok else 'FAILED'} {p.name}{'' if ok else '  ' + err}")
    say(f"sweep finished in {time.perf_counter() - t0:.1f}s: {len(todo) - len(failed)} ran, {len(skipped)} skipped, "
        f"{len(failed)} failed")
    return {"done": [p.name for p in grid.points if p.name not in failed], "failed": failed,
            "skipped": [p.name for p in skipped]}


def _run_ray(todo: list, out: str, workers: int, per_gpu: int, address: str | None) -> list:
    """Each point a Ray task asking for its CPU (and GPU) share; outputs go to the shared `out` path."""
    try:
        import ray
    except ImportError:
        raise ValueError("--backend ray needs Ray: pip install -e .[ray]") from None
    from training.environment import cpu_cores

    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             **({} if address else {"num_cpus": cpu_cores()}))
    try:
        total_cpus = int(ray.cluster_resources().get("CPU", 1))
        gpus = ray.cluster_resources().get("GPU", 0)
        threads = max(1, total_cpus // workers)
        # A GPU share of 1/per_gpu: Ray places at most per_gpu points on one GPU and spreads the rest.
        task = ray.remote(num_cpus=threads, num_gpus=(1.0 / per_gpu if gpus else 0))(_ray_point)
        out_abs = os.path.abspath(out)
        return ray.get([task.remote(p.args, os.path.join(out_abs, p.name), threads) for p in todo])
    finally:
        ray.shutdown()


def _ray_point(args: list, point_dir: str, threads: int) -> tuple[bool, str]:
    # Ray already sets CUDA_VISIBLE_DEVICES for a task that asked for a GPU.
    return run_point(args, point_dir, threads, os.environ.get("CUDA_VISIBLE_DEVICES"))
