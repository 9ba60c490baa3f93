"""CUDA checks: a debug closed loop on the GPU with bf16 autocast, TF32, fused AdamW and torch.compile; DDP on 2 GPUs.

Skipped without CUDA (CI has none). On a GPU machine: `.venv/bin/python -m pytest tests/test_gpu.py -q`.
"""
import pytest
import torch

from training import presets
from training.config import apply_overrides
from training.loop import run_loop
from training.prepare import prepare

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


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_ddp_on_two_gpus_matches_one(tmp_path):
    """torchrun with NCCL on 2 GPUs: the same losses as one GPU up to bf16 rounding, and the run finishes."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = ["-m", "training", "run", "--preset", "debug", "--loop.generations=2", "--loop.progress=false",
            "--train.device=cuda"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    losses = []
    for n, out in ((1, tmp_path / "one"), (2, tmp_path / "two")):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *args,
               "--out", str(out)]
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        with open(out / "metrics.jsonl") as f:
            losses.append([json.loads(line)["train/final_loss"] for line in f])
    assert losses[1] == pytest.approx(losses[0], rel=2e-2)


def test_cuda_graph_decode_equals_reference_for_two_batch_sizes():
    """sample.compile=true on CUDA (reduce-overhead: CUDA graphs): greedy tokens equal the no-cache reference across
    context cuts, for a full and a partial batch size, and no graph was skipped (a skip would only be logged)."""
    import numpy as np
    from torch._dynamo.utils import counters

    from models.gpt import GPT, GPTConfig
    from models.sampling import SampleConfig, generate_documents, generate_reference

    model = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32),
                torch.Generator().manual_seed(0)).cuda()
    for n in (4, 3):
        cfg = SampleConfig(temperature=0, max_new_tokens=40, batch_size=n, compile="true")
        fast = generate_documents(model, n, cfg, 0, torch.Generator().manual_seed(0))
        ref = generate_reference(model, n, cfg, 0, torch.Generator().manual_seed(0))
        assert len(fast) == len(ref) == n
        assert all(np.array_equal(a, b) for a, b in zip(fast, ref))
    assert counters["inductor"]["cudagraph_skips"] == 0
