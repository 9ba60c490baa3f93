"""DistributedDataParallel under torchrun, on 2 CPU processes with the gloo backend (training/distributed.py).

- The trainer (tests/ddp_worker.py): both ranks end with bit-identical weights, and the DDP run matches one
  process training on the same global batch (losses and weights within float tolerance).
- The closed loop through the CLI: a 2-process run, interrupted after one generation and resumed, gives the
  single-process run's losses and val/bpc, samples exactly the same documents, and only rank 0 writes.
- train.batch_size that does not split over the ranks is refused before anything is written.

Each torchrun launch takes a few seconds. Run: `pytest tests/test_ddp.py -q`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _run(args: list[str], nproc: int = 1) -> subprocess.CompletedProcess:
    launcher = [sys.executable] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    r = subprocess.run(launcher + args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    if nproc > 1 and r.returncode != 0 and "SIGABRT" in r.stderr and "closedloop: error" not in r.stderr:
        # Seen 3 times in about 75 launches, all within two minutes on one machine: a rank aborted in gloo's teardown
        # ("terminate called without an active exception") after every output had been written. One retry, so
        # that this torch/gloo race does not fail CI; any other failure, or a second abort, fails the test.
        r = subprocess.run(launcher + args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    return r


def test_ddp_trainer_keeps_ranks_identical_and_matches_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    worker = os.path.join(ROOT, "tests", "ddp_worker.py")
    r1, r2 = _run([worker, str(one)]), _run([worker, str(two)], nproc=2)
    assert r1.returncode == 0, r1.stderr[-2000:]
    assert r2.returncode == 0, r2.stderr[-2000:]
    w0, w1 = torch.load(two / "rank0.pt"), torch.load(two / "rank1.pt")
    for k in w0:
        assert torch.equal(w0[k], w1[k]), f"{k} differs between ranks"
    single = torch.load(one / "rank0.pt")
    for k in single:  # same global batch and mean gradient: only the order of float sums differs
        torch.testing.assert_close(w0[k], single[k], rtol=1e-4, atol=1e-5)
    l1, l2 = (json.loads((d / "loss0.json").read_text()) for d in (one, two))
    assert l2["world_size"] == 2 and l1["world_size"] == 1
    assert len(l1["losses"]) == len(l2["losses"]) == 3
    np.testing.assert_allclose(l2["losses"], l1["losses"], rtol=1e-5)
    assert json.loads((two / "loss1.json").read_text())["losses"] == l2["losses"]  # the logged loss is the mean


def _metrics(run: str) -> list[dict]:
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_ddp_closed_loop_matches_one_process_and_resumes(tmp_path):
    # sample.batch_size=8: ~5 sampling batches per generation, so several rounds of the 2 ranks' merge, the last
    # one with a batch that only rank 0's share needed.
    base = ["-m", "training", "run", "--preset", "debug", "--loop.progress=false", "--train.steps=30",
            "--loop.first_steps=60", "--mix.tokens_per_generation=4000", "--sample.batch_size=8"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    r = _run(base + ["--loop.generations=2", "--out", one])
    assert r.returncode == 0, r.stderr[-2000:]
    r = _run(base + ["--loop.generations=1", "--out", two], nproc=2)  # stopped after generation 0 ...
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[2 processes]" in r.stderr
    r = _run(base + ["--loop.generations=2", "--out", two], nproc=2)  # ... and resumed
    assert r.returncode == 0, r.stderr[-2000:]
    # (after a retried teardown abort, see _run, the second launch finds the run already finished)
    assert "resuming after generation 0" in r.stderr or "all 2 generations are done" in r.stderr
    assert r.stderr.count("done: ") == 1  # rank 0 alone reports
    m1, m2 = _metrics(one), _metrics(two)
    assert [m["generation"] for m in m2] == [0, 1]
    for a, b in zip(m1, m2):
        for k in ("train/final_loss", "val/bpc", "val/entropy"):
            assert b[k] == pytest.approx(a[k], rel=1e-5), k
    # Batch i of documents has its own generator whichever rank decodes it: the same documents as one process.
    for g in (0, 1):
        assert np.array_equal(np.load(os.path.join(one, f"gen_{g:03d}", "ids.npy")),
                              np.load(os.path.join(two, f"gen_{g:03d}", "ids.npy")))
    with open(os.path.join(two, "env.json")) as f:
        assert [e["world_size"] for e in json.load(f)] == [2, 2]  # one record per start (the run, then its resume)
    events = [f for f in os.listdir(two) if f.startswith("events.out.tfevents")]
    # rank 0's, one per launch, and one HParams file (the second launch replaced the first's)
    assert len([f for f in events if not f.endswith(".hparams")]) == 2 and len(events) == 3


def test_ddp_refuses_a_batch_that_does_not_split(tmp_path):
    out = tmp_path / "run"
    r = _run(["-m", "training", "run", "--preset", "debug", "--train.batch_size=33", "--out", str(out)], nproc=2)
    assert r.returncode != 0
    assert "closedloop: error: train.batch_size=33 must be divisible by the number of processes (2)" in r.stderr
    assert "Traceback" not in r.stderr.split("closedloop: error")[0]
    assert not out.exists()
