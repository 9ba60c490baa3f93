"""Run-directory files: atomic writes, per-generation folders, DONE markers, model checkpoints.

Every file is written to a temporary name and renamed, so an interrupted write never leaves a half file, and
a generation's DONE marker is written last: a generation folder without DONE is redone whole on resume.
Tested in tests/test_loop.py (resume) and tests/test_lock.py.
"""
from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import torch


def gen_dir(run_dir: str, g: int) -> str:
    return os.path.join(run_dir, f"gen_{g:03d}")


def _atomic_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    _atomic_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=jsonable) + "\n")


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_npy(path: str, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    _atomic_bytes(path, buf.getvalue())


def save_model(path: str, model: torch.nn.Module) -> None:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    _atomic_bytes(path, buf.getvalue())


def load_state(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def is_done(run_dir: str, g: int) -> bool:
    return os.path.exists(os.path.join(gen_dir(run_dir, g), "DONE"))


def mark_done(run_dir: str, g: int) -> None:
    write_text(os.path.join(gen_dir(run_dir, g), "DONE"), "")


def completed_generations(run_dir: str) -> int:
    """Number of leading generations with a DONE marker (resume starts right after them)."""
    g = 0
    while is_done(run_dir, g):
        g += 1
    return g


def fresh_gen_dir(run_dir: str, g: int) -> str:
    """An empty folder for generation g (leftovers of an interrupted attempt are removed)."""
    d = gen_dir(run_dir, g)
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    return d


def jsonable(x):
    """json.dumps fallback for numpy scalars."""
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    raise TypeError(f"not JSON serialisable: {type(x)}")
