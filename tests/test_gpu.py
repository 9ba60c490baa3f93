"""CUDA checks: a debug closed loop on the GPU with bf16 autocast, TF32, fused AdamW and torch.compile.

Skipped without CUDA (CI has none). On a GPU machine: `.venv/bin/python -m pytest tests/test_gpu.py -q`.
"""
import pytest
import torch

from training import presets
from training.config import apply_overrides
from training.loop import prepare, run_loop

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("compile_", ["false", "true"])
def test_debug_loop_on_cuda(tmp_path, compile_):
    cfg = apply_overrides(presets.debug(), {"loop.generations": "2", "loop.progress": "false",
                                            "train.device": "cuda", "train.compile": compile_})
    summary = run_loop(prepare(cfg, str(tmp_path)), str(tmp_path), argv=[])
    final = summary["final"]
    assert summary["generations"] == 2 and 0 < final["val/bpc"] < 6 and final["samples/distinct_1"] > 0


def test_cuda_runs_are_reproducible(tmp_path):
    cfg = apply_overrides(presets.debug(), {"loop.generations": "1", "loop.progress": "false", "train.device": "cuda",
                                            "train.compile": "false"})
    a = run_loop(prepare(cfg, str(tmp_path / "a")), str(tmp_path / "a"), argv=[])["final"]
    b = run_loop(prepare(cfg, str(tmp_path / "b")), str(tmp_path / "b"), argv=[])["final"]
    assert a["val/loss"] == b["val/loss"]
