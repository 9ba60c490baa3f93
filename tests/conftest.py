"""Shared pytest setup: one torch thread (CI has 2 cores and torch slows badly when oversubscribed), fp32 on
torch's own CPU kernels as in a run, and a throwaway cache folder.

Run the suite with `make test`; slow end-to-end checks with `make test-slow`.
"""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
# Hermetic: token caches and hub downloads go to a throwaway folder, never the user's ~/.cache.
_CACHE = tempfile.mkdtemp(prefix="closedloop-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
from training.trainer import cpu_onednn  # noqa: E402

cpu_onednn(False)  # fp32 on torch's own CPU kernels, as every fp32 run sets up (the same bits on AVX2 and AVX-512)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """`-n auto` (make test): one worker per core this process may use (training.environment.cpu_cores: pinning and
    a container's CPU quota); xdist alone counts the pinned CPUs (with psutil, the host's cores) and no quota."""
    from training.environment import cpu_cores

    return cpu_cores()
