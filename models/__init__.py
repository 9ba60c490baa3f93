"""models: the networks and how to sample from them; nothing about generations, files or logging.

`build_model(cfg, generator)` is the one place a model is made from its config: the loop (every generation, and
the generation-0 reference model), `closedloop theory --from-run` and scripts/bench.py call it, so a new kind of
model is added here and nowhere else. Two kinds (`model.kind`):
- `gpt` (default): the built-in GPT of models/gpt.py, its weights drawn from `generator` (a CPU torch.Generator), so
  equal seeds give bit-identical models.
- `hf`: any Hugging Face `AutoModelForCausalLM` named by `model.name` (a local folder or a hub id), behind the same
  forward contract (models/hf.py, imported only for this kind). Its pretrained weights, or with `scratch=True` its
  architecture with new weights drawn from `generator`.
Tested in tests/test_gpt.py and tests/test_hf.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from models.gpt import GPT, GPTConfig

KINDS = ("gpt", "hf")


@dataclass
class ModelConfig(GPTConfig):
    """The run's model: its kind, the Hugging Face name for kind hf, and the built-in GPT's dimensions.

    For kind hf, model.block_size is the context the loop uses (training and evaluation windows, sampling) and must
    not exceed the model's own maximum positions; vocab_size is the tokenizer's (logits of the embedding rows past
    it, padding in many checkpoints, are dropped); n_layer, n_head, n_embd and dropout are the built-in GPT's and
    are not used (the architecture and its dropout come from the checkpoint's own config)."""

    kind: str = field(default="gpt", metadata={"help": "gpt (the built-in GPT) | hf (a Hugging Face causal LM named by model.name)"})
    name: str = field(default="", metadata={"help": "kind hf: a local folder or a hub id, e.g. facebook/opt-125m (its own tokenizer is the run's)"})

    def __post_init__(self):
        super().__post_init__()
        if self.kind not in KINDS:
            raise ValueError(f"model.kind must be gpt or hf, got {self.kind!r}")
        if self.kind == "gpt" and self.name:
            raise ValueError(f"model.name={self.name!r} is for model.kind=hf; the built-in GPT (model.kind=gpt) "
                             "takes no name")
        if self.kind == "hf" and not self.name:
            raise ValueError("model.kind=hf needs --model.name=PATH_OR_ID (a local folder or a hub id)")


def build_model(cfg: GPTConfig, generator: torch.Generator, scratch: bool = False) -> torch.nn.Module:
    """A new model of config `cfg` on the CPU. Kind gpt: weights drawn from `generator` (whatever `scratch`).
    Kind hf: the checkpoint's pretrained weights, or with scratch=True its architecture with weights drawn from
    `generator`."""
    if getattr(cfg, "kind", "gpt") == "hf":
        from models.hf import build_hf

        return build_hf(cfg, generator, scratch)
    return GPT(cfg, generator)
