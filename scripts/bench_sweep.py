"""Benchmark: wall time of a sweep with 1 worker vs N workers on this machine (target on 2 cores: 2 workers take
at most 0.65 of the time of 1 worker). Prints a Markdown table.

    python scripts/bench_sweep.py [--grid sweeps/debug.yaml] [--workers 2]

Each configuration runs the whole grid into a fresh temporary folder, so nothing is skipped.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training.sweep import load_grid, run_sweep  # noqa: E402


def timed(grid, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run_sweep(grid, os.path.join(tmp, "sweep"), workers=workers, say=lambda s: None)
        seconds = time.perf_counter() - t0
    if result["failed"]:
        raise SystemExit(f"failed points: {result['failed']}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="sweeps/debug.yaml")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    grid = load_grid(args.grid)
    one = timed(grid, 1)
    many = timed(grid, args.workers)
    print(f"\n{len(grid.points)} points of {args.grid} on {os.cpu_count()} cores\n")
    print("| workers | torch threads each | seconds | ratio to 1 worker |")
    print("|---|---|---|---|")
    print(f"| 1 | {os.cpu_count()} | {one:.1f} | 1.00 |")
    print(f"| {args.workers} | {max(1, (os.cpu_count() or 1) // args.workers)} | {many:.1f} | {many / one:.2f} |")


if __name__ == "__main__":
    main()
