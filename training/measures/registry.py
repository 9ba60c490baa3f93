"""The registry of every per-generation key a run records: its unit and what it measures, declared once.

Each measure module registers its keys where it computes them (`register("samples/distinct_2", "ratio", ...)`);
the loop registers the keys it produces itself (train/*, mix/*, time/*). Everything that shows a measure reads
it from here: TensorBoard descriptions (unit included), the sweep summaries and figures (`main_keys`), the
verdict's sample-diversity indicators (`diversity_keys`), and the README table (tests/test_measures.py checks
that the README lists every registered key with its unit). Adding a measure means: compute it in the module of
its kind and register it there. Test: `python -m pytest tests/test_measures.py`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measure:
    key: str  # metrics.jsonl key = TensorBoard tag, e.g. "val/bpc"
    unit: str  # "bits", "bits/char", "nats/token", "ratio", "tokens", "s", ...
    help: str  # one line: what it measures
    main: int = 0  # > 0: one of the main measures (summary tables, figures, HParams), in this order
    diversity: bool = False  # a sample-diversity indicator: it falls when the samples narrow (the verdict)
    per_step: bool = False  # recorded at the global optimizer step, not at step = generation


MEASURES: dict[str, Measure] = {}


def register(key: str, unit: str, help: str, main: int = 0, diversity: bool = False,
             per_step: bool = False) -> None:
    if key in MEASURES and MEASURES[key] != Measure(key, unit, help, main, diversity, per_step):
        raise ValueError(f"measure {key!r} registered twice with different descriptions")
    MEASURES[key] = Measure(key, unit, help, main, diversity, per_step)


def describe(key: str) -> str:
    """'what it measures (unit)' for a registered key, '' for an unknown one."""
    m = MEASURES.get(key)
    return f"{m.help} ({m.unit})" if m else ""


def main_keys() -> list[str]:
    """The main measures, in their display order."""
    return [m.key for m in sorted((m for m in MEASURES.values() if m.main), key=lambda m: m.main)]


def diversity_keys() -> list[str]:
    return [m.key for m in MEASURES.values() if m.diversity]
