"""Slow end-to-end checks (`make test-slow`, about 3 minutes on 2 cores): the `default` preset that `make demo`
runs shows the paper's two failure modes within 5 generations at λ = 0, and the shipped phase grid is valid.

Run: `make test-slow` (or `.venv/bin/python -m pytest -q -m slow`).
"""
import os

import pytest
import torch

from training import presets
from training.config import apply_overrides
from training.loop import run_loop
from training.prepare import prepare

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("temperature,verdict,sign", [(0.6, "collapse", -1), (1.5, "heat death", +1)])
def test_default_preset_failure_modes(tmp_path, temperature, verdict, sign):
    torch.set_num_threads(2)  # the demo's own setting: these runs are minutes on one thread
    try:
        cfg = apply_overrides(presets.default(), {"loop.progress": "false", "sample.temperature": str(temperature)})
        summary = run_loop(prepare(cfg, str(tmp_path)), str(tmp_path), argv=[])
    finally:
        torch.set_num_threads(1)
    change = summary["final"]["val/entropy"] - summary["first"]["val/entropy"]
    assert summary["generations"] == 5 and summary["verdict"]["verdict"] == verdict
    assert sign * change > 1.0  # bits


def test_phase_grid_is_valid():
    from training.sweep import load_grid

    grid = load_grid(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sweeps", "phase.yaml"))
    assert len(grid.points) == 6 * 6 * 3 and {p.values["seed"] for p in grid.points} == {0, 1, 2}
