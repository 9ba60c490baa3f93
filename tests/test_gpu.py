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


def test_cuda_graph_decode_equals_reference_for_two_batch_sizes(monkeypatch):
    """sample.compile=true on CUDA (reduce-overhead: CUDA graphs): at temperature 1, every token (those after EOT kept)
    equals the full-recompute decode from the same generator, across two context cuts, for a full and a partial batch
    size, and no graph was skipped (a skip would only be logged). Sampling, not argmax: this random model's most
    likely first token is EOT in every row, so greedy documents were all empty and could not differ."""
    from torch._dynamo.utils import counters

    from models.gpt import GPT, GPTConfig
    from models.sampling import SampleConfig, decode

    # fp32 matmuls on both paths (an earlier test may have switched TF32 on for the process): a rounding difference
    # flips a draw only when u lands within ~1e-6 of a cumulative-probability edge
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    counters.clear()  # cudagraph_skips is process-wide: count this test's own
    model = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32),
                torch.Generator().manual_seed(0)).cuda()
    for n in (4, 3):
        fast = decode(model, n, SampleConfig(temperature=1.0, max_new_tokens=40, batch_size=n, compile="true"), 0,
                      torch.Generator().manual_seed(n), stop_at_eot=False)
        ref = decode(model, n, SampleConfig(temperature=1.0, max_new_tokens=40, batch_size=n, compile="false"), 0,
                     torch.Generator().manual_seed(n), use_cache=False, stop_at_eot=False)
        assert fast.shape == ref.shape == (n, 41)
        assert torch.equal(fast, ref)
        assert len(torch.unique(fast[:, 1:])) > 3  # real draws, not one repeated token
    assert counters["inductor"]["cudagraph_skips"] == 0
