"""Test of scripts/bench.py in its --quick mode: it runs end to end on a CPU and writes the promised JSON.

Run: `python -m pytest tests/test_bench.py -m slow` (one subprocess, ~10 s on one thread; the bench test is slow).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from models.gpt import GPT, GPTConfig
from training.trainer import TrainConfig, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_trainer_reports_mfu_when_the_peak_is_known():
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=8), torch.Generator().manual_seed(0))
    ids = np.arange(200) % 11
    cfg = TrainConfig(steps=3, batch_size=2, warmup_steps=1, device="cpu")
    out = train(model, ids, cfg, torch.Generator().manual_seed(0), torch.device("cpu"), peak=1e9)
    assert out["mfu"] == pytest.approx(model.flops_per_token() * out["tokens_per_s"] / 1e9)
    assert train(model, ids, cfg, torch.Generator().manual_seed(0), torch.device("cpu"))["mfu"] is None  # CPU: unknown


@pytest.mark.slow
def test_quick_bench_writes_every_row(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench.py"), "--quick", "--device", "cpu",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert "torch CPU capability" in r["device"]
    assert {"n_layer", "n_head", "n_embd", "vocab_size", "params"} <= set(r["model"])
    rows = {(s["impl"], s["batch"]) for s in r["sample"]}
    batches = sorted({b for _, b in rows})
    assert 1 in batches and len(batches) >= 2
    assert rows - {("adapter", 8)} == {(impl, b) for impl in ("ours", "nocache", "hf") for b in batches}
    assert ("adapter", 8) in rows  # the HF model through models/hf.py, against generate on the same model
    for s in r["sample"]:
        assert s["tokens_per_s"] > 0 and "peak_mem_bytes" in s
    assert [t["impl"] for t in r["train"]] == ["ours", "hf"]
    for t in r["train"]:
        assert t["tokens_per_s"] > 0 and 0 < t["mfu"] < 1.5  # the CPU peak is a measured, noisy rate
    stages = r["generation_seconds"]["debug"]
    assert {"train", "eval", "sample", "measure"} <= set(stages) and all(v >= 0 for v in stages.values())
    assert proc.stdout.rstrip().splitlines()[-1].startswith("| debug |")  # the Markdown table prints last
