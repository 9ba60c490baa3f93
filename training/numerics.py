"""Resolved numerics: what every `auto` of a run became on this machine, recorded beside the request.

`train.device`, `train.dtype`, `train.compile`, `sample.compile` and `sample.kv_dtype` may say `auto`; each machine
resolves them differently (CUDA: bf16 autocast, compiled steps and a bf16 KV cache; a CPU: fp32, eager), and the
resolution is part of the result (STYLE.md habit 17). `resolve(cfg, device)` gives the resolved values, written to
config.json under `resolved` next to the requested config; `check(old, new, requested)` refuses a resume whose
resolution differs unless the option was passed explicitly (a request other than `auto` accepts it).
Tested in tests/test_records.py.
"""
from __future__ import annotations

import torch

# option -> what `auto` means, for the messages
KEYS = ("train.device", "train.dtype", "train.compile", "sample.compile", "sample.kv_dtype")


def resolve(cfg, device: torch.device) -> dict[str, str]:
    """The resolved values of the `auto`-able numerics options for a RunConfig on `device`.

    Mirrors the rules where they are applied: training/trainer.py (`autocast_dtype`, compile on CUDA), the loop's
    sampling (bf16 autocast on CUDA only) and models/sampling.py (`kv_cache_dtype`: the autocast dtype under
    autocast, else the model's fp32; `sample.compile` auto = on CUDA). A compile that fails at run time under
    `sample.compile=auto` falls back to eager with a warning; the record says what was asked of this machine."""
    cuda = device.type == "cuda"
    t, s = cfg.train, cfg.sample
    train_dtype = "bf16" if t.dtype == "bf16" or (t.dtype == "auto" and cuda) else "fp32"
    sample_autocast = train_dtype if cuda else "fp32"  # CPU sampling never autocasts (training/loop.py)
    return {
        "train.device": device.type,
        "train.dtype": train_dtype,
        "train.compile": "true" if t.compile == "true" or (t.compile == "auto" and cuda) else "false",
        "sample.compile": "true" if s.compile == "true" or (s.compile == "auto" and cuda) else "false",
        "sample.kv_dtype": sample_autocast if s.kv_dtype == "auto" else s.kv_dtype,
    }


def check(old: dict | None, new: dict[str, str], requested: dict[str, str], run_dir: str) -> None:
    """Refuse to resume run_dir when an option resolves otherwise than in its record, unless passed explicitly.

    old: the `resolved` record of config.json (None for a run directory from before it was recorded: nothing to
    compare); requested: the flattened config of this start."""
    if not old:
        return
    for key in KEYS:
        if key in old and old[key] != new[key] and requested.get(key) == "auto":
            raise ValueError(f"{run_dir} ran with {key}={old[key]} and this machine resolves {key}=auto to "
                             f"{new[key]}; pass --{key}={new[key]} to resume with it anyway (or --{key}={old[key]})")
