"""The measure registry against the README: every registered key is in the "What is recorded" table, with its unit.

Run: `python -m pytest tests/test_measures.py -q`
"""
import os
import re

import training.loop  # noqa: F401 (registers train/*, mix/*, time/*)
import training.prediction  # noqa: F401 (registers theory/*)
from training.measures import MEASURES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _table_rows() -> dict[str, str]:
    """README key table: each backticked key -> the unit cell of its row."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index("## What is recorded"):]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 3:
            for key in re.findall(r"`([a-z_]+/[a-z0-9_]+)`", cells[0]):
                rows[key] = cells[1]
    return rows


def test_readme_table_lists_every_registered_key_with_its_unit():
    rows = _table_rows()
    missing = [k for k in MEASURES if k not in rows]
    assert not missing, f"README table lacks {missing}"
    wrong = [k for k, m in MEASURES.items() if m.unit not in rows[k]]
    assert not wrong, {k: (MEASURES[k].unit, rows[k]) for k in wrong}


def test_every_measure_has_a_unit_and_a_description():
    for m in MEASURES.values():
        assert m.unit and m.help, m.key


def test_the_verdict_reports_the_registered_diversity_measures():
    from training import verdict
    from training.measures import diversity_keys

    assert set(verdict.DIVERSITY) == set(diversity_keys())
