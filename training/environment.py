"""env.json: what produced a run — git commit and dirty flag, versions, device, command line, host, time.

One record per start of a run, appended to the list in env.json by training/loop.py (training/records.py
`append_env`) next to config.json (STYLE.md habit 7). Tested in tests/test_loop.py and tests/test_records.py.
"""
from __future__ import annotations

import datetime
import math
import os
import platform
import subprocess
import sys

import numpy as np
import torch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"  # cgroup v2: "QUOTA PERIOD" in µs, or "max PERIOD" (no quota)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", _ROOT, *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    """The cores this process may use: the CPUs it is pinned to (os.cpu_count() counts the whole host), capped by
    a cgroup v2 CPU quota (CGROUP_CPU_MAX, e.g. "200000 100000" = 2 cores: a container or a batch job's
    slice of a larger host). What sweeps split among their workers, so their torch threads never outnumber it."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    try:
        with open(CGROUP_CPU_MAX) as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def environment(device: torch.device, argv: list[str] | None = None) -> dict:
    status = _git("status", "--porcelain", "--untracked-files=no")
    info = {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        # which vectorised kernels torch's CPU ops run (AVX2, AVX-512, ...): float sums may differ in the last bits
        # between CPU families, never in what the run computes
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn": torch.backends.mkldnn.enabled,  # off for fp32 on a CPU (training/trainer.py cpu_onednn)
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_cores": cpu_cores(),  # of those, the ones this process may use (pinning, container quota)
        "hostname": platform.node(),
        "command": [os.path.basename(sys.argv[0])] + list(sys.argv[1:] if argv is None else argv),
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
    return info
