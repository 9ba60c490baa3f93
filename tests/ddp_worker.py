"""Worker for tests/test_ddp.py: train one tiny GPT with training.trainer.train, alone or under torchrun.

    python tests/ddp_worker.py OUT_DIR                                            # one process
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py OUT_DIR   # DDP, gloo

Each rank saves its weights after training to OUT_DIR/rank{r}.pt and its logged losses to OUT_DIR/loss{r}.json,
so the test can check that the ranks hold identical weights and that the run matches a single process.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.gpt import GPT, GPTConfig  # noqa: E402
from training import distributed  # noqa: E402
from training.trainer import TrainConfig, train  # noqa: E402


def main(out: str) -> None:
    torch.set_num_threads(1)
    device = distributed.init(torch.device("cpu"))
    model = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32),
                torch.Generator().manual_seed(0))
    ids = np.random.default_rng(0).integers(0, 11, 5_000)
    cfg = TrainConfig(steps=30, batch_size=8, lr=3e-3, warmup_steps=5, log_every=10, device="cpu", compile="false")
    losses = []
    train(model, ids, cfg, torch.Generator().manual_seed(1), device, log=lambda step, v: losses.append(v["train/loss"]))
    r = distributed.rank()
    torch.save(model.state_dict(), os.path.join(out, f"rank{r}.pt"))
    with open(os.path.join(out, f"loss{r}.json"), "w") as f:
        json.dump({"losses": losses, "world_size": distributed.world_size()}, f)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
