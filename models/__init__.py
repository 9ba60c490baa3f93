"""models: the networks and how to sample from them; nothing about generations, files or logging.

`build_model(cfg, generator)` is the one place a model is made from its config: the loop (every generation, and
the generation-0 reference model), `closedloop theory --from-run` and scripts/bench.py call it, so a new kind of
model is added here and nowhere else. Weights are drawn from `generator` (a CPU torch.Generator), so equal seeds
give bit-identical models. Tested in tests/test_gpt.py.
"""
from __future__ import annotations

import torch

from models.gpt import GPT, GPTConfig


def build_model(cfg: GPTConfig, generator: torch.Generator) -> torch.nn.Module:
    """A new model of config `cfg` on the CPU, its weights drawn from `generator`."""
    return GPT(cfg, generator)
