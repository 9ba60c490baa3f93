"""The run directory lock (training/runlock.py): one process per run directory; a dead holder's lock is taken over.

Covers: a second holder refused with the holder's pid and host; a lock left by a process killed with -9 taken over
with a line; another host's lock honoured while its heartbeat is fresh and taken over after; two concurrent
`closedloop run` on one directory (the second exits 2 within 10 s with one line, the first completes); a sweep
point whose directory is in use is reported, not touched. The kill -9 and resume check is under `-m slow`.

Run: `python -m pytest tests/test_lock.py -q` (and `python -m pytest tests/test_lock.py -q -m slow`).
"""
import json
import os
import platform
import signal
import subprocess
import sys
import time

import pytest

from training.runlock import NAME, RunLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
# A short run: tiny budgets, several generations so that a run can be caught in the middle.
QUICK = ["--preset", "debug", "--loop.progress=false", "--loop.first_steps=30", "--train.steps=10",
         "--loop.bleu_docs=20"]


def _wait(pred, timeout=60.0, what="condition"):
    t0 = time.time()
    while not pred():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _holder(run_dir):
    """A process that takes the lock and sleeps (killed by the test)."""
    code = ("import sys, time; from training.runlock import RunLock; l = RunLock(sys.argv[1]); l.acquire(); "
            "print('held', flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_holder_refused_then_released(tmp_path):
    d = tmp_path / "r"
    a = RunLock(str(d))
    assert a.acquire() is None
    held = json.loads((d / NAME).read_text())
    assert held["pid"] == os.getpid() and held["host"] == platform.node()
    with pytest.raises(ValueError, match=rf"in use by pid {os.getpid()} on host {platform.node()}"):
        RunLock(str(d)).acquire()
    a.release()
    assert (d / NAME).read_text() == ""  # empty = free: the next holder takes it without a note
    b = RunLock(str(d))
    assert b.acquire() is None
    b.release()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    d = tmp_path / "r"
    p = _holder(d)
    try:
        with pytest.raises(ValueError, match=rf"in use by pid {p.pid} on host"):
            RunLock(str(d)).acquire()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    lock = RunLock(str(d))
    note = lock.acquire()
    assert note and f"taking over the lock of pid {p.pid}" in note and "no longer running" in note
    lock.release()


def test_another_hosts_lock_honoured_while_its_heartbeat_is_fresh(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    (d / NAME).write_text(json.dumps({"pid": 4242, "host": "node-elsewhere", "started": time.time(),
                                      "heartbeat": time.time()}))
    with pytest.raises(ValueError, match="in use by pid 4242 on host node-elsewhere"):
        RunLock(str(d)).acquire()
    (d / NAME).write_text(json.dumps({"pid": 4242, "host": "node-elsewhere", "started": 0, "heartbeat": 0}))
    lock = RunLock(str(d))
    assert "sent no heartbeat" in lock.acquire()  # node lost: taken over
    lock.release()


def test_two_concurrent_runs_on_one_directory(tmp_path):
    d = tmp_path / "r"
    first = subprocess.Popen([sys.executable, "-m", "training", "run", *QUICK, "--loop.generations=4", "--out", str(d)],
                             env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(lambda: (d / NAME).exists() and (d / NAME).read_text().strip(), what="the first run's lock")
    t0 = time.time()
    second = subprocess.run([sys.executable, "-m", "training", "run", *QUICK, "--loop.generations=4",
                             "--out", str(d)], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=60)
    took = time.time() - t0
    out, err = first.communicate(timeout=300)
    assert second.returncode == 2 and took < 10, (second.returncode, took)
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("closedloop: error:"), second.stderr
    assert f"in use by pid {first.pid} on host {platform.node()}" in lines[0]
    assert first.returncode == 0, err
    with open(d / "metrics.jsonl") as f:
        assert [json.loads(line)["generation"] for line in f] == [0, 1, 2, 3]


def test_sweep_reports_a_point_in_use_and_leaves_it_alone(tmp_path):
    from training.sweep import load_grid, run_sweep

    grid_file = tmp_path / "g.yaml"
    grid_file.write_text("preset: debug\noverrides: {loop.generations: 1}\naxes: {seed: [0]}\n")
    grid = load_grid(str(grid_file))
    point = tmp_path / "out" / grid.points[0].name
    lock = RunLock(str(point))
    lock.acquire()
    try:
        result = run_sweep(grid, str(tmp_path / "out"), say=lambda s: None)
    finally:
        lock.release()
    (name, err), = result["failed"].items()
    assert name == grid.points[0].name and "in use by pid" in err
    assert os.listdir(point) == [NAME]  # nothing written into the directory in use


@pytest.mark.slow
def test_killed_run_resumes_with_identical_metrics(tmp_path):
    args = [*QUICK, "--loop.generations=6"]
    d, ref = tmp_path / "killed", tmp_path / "whole"
    p = subprocess.Popen([sys.executable, "-m", "training", "run", *args, "--out", str(d)], env=ENV, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(lambda: (d / "gen_001" / "DONE").exists(), timeout=300, what="generation 1")
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (d / "summary.json").exists()  # killed in the middle
    again = subprocess.run([sys.executable, "-m", "training", "run", *args, "--out", str(d)], env=ENV, cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"taking over the lock of pid {p.pid}" in again.stderr
    whole = subprocess.run([sys.executable, "-m", "training", "run", *args, "--out", str(ref)], env=ENV, cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr

    def metrics(run_dir):
        with open(run_dir / "metrics.jsonl") as f:
            return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
                    for line in f]

    assert metrics(d) == metrics(ref)
    assert len(json.loads((d / "env.json").read_text())) == 2  # one record per start
