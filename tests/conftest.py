"""Shared pytest setup: one torch thread (CI has 2 cores and torch slows badly when oversubscribed).

Run the suite with `make test`; slow end-to-end checks with `make test-slow`.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
