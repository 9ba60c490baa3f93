"""Several processes, one run: DistributedDataParallel under torchrun.

    torchrun --standalone --nproc_per_node=2 -m training run --preset default --out runs/ddp

With torchrun's environment (WORLD_SIZE > 1), `init(device)` joins the process group (NCCL on CUDA, gloo on a
CPU) and pins rank r to cuda:LOCAL_RANK. The loop then splits its work so that the science does not depend on the
number of processes:

- training (training/trainer.py): train.batch_size is the global batch. Every rank draws the same window offsets
  from the run's generator and trains on its own slice of them; DDP averages the gradients, so the optimizer sees
  the mean gradient of the whole batch, as in one process, and the weights stay identical on every rank
  (dropout, when on, draws its masks per rank: equal to one process in distribution, not bit for bit).
- sampling (training/loop.py `sample_tokens`): document batch i has its own generator; rank r decodes batches
  r, r + W, r + 2W, ... and the batches are gathered in order, so a run samples exactly the documents that one
  process would sample from the same weights (DDP weights differ from one process's in the last float bits).
- evaluation, measures and every file in the run directory: rank 0; the other ranks wait at a barrier.

Single-node runs share the run directory through the filesystem (rank 0 writes ids.npy, every rank reads it at
the next generation); on several nodes the run directory must be on a shared filesystem.
Without torchrun every function here is a no-op for one process. Tested in tests/test_ddp.py.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def env_world_size() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def init(device: torch.device) -> torch.device:
    """Join the process group when torchrun started several processes; returns this rank's device.

    device: the resolved train.device. On CUDA each rank takes cuda:LOCAL_RANK (NCCL); on a CPU all ranks share
    the cores (gloo; torchrun sets OMP_NUM_THREADS=1 per process unless told otherwise)."""
    if env_world_size() <= 1:
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} CUDA devices; "
                             "use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if active():
        return device
    # A long timeout: ranks other than 0 wait at a barrier while rank 0 evaluates and measures a generation.
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=2))
    return device


def shutdown(ok: bool = True) -> None:
    """Leave the process group. ok: every rank got here normally, so they first meet at a barrier and tear down
    together (gloo's threads can abort a process whose peer has already closed its sockets); after an error no
    barrier, which the failed ranks would never reach."""
    if active():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def gather_objects(obj) -> list:
    """Every rank's `obj` in rank order, on every rank ([obj] for one process)."""
    if not active():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over ranks (in place on a copy); the tensor itself for one process."""
    if not active():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / world_size()


def check_batch(batch_size: int) -> None:
    """train.batch_size is the global batch: it must split evenly over the ranks."""
    w = world_size()
    if batch_size % w:
        raise ValueError(f"train.batch_size={batch_size} must be divisible by the number of processes ({w}): it is "
                         "the global batch, split evenly over the ranks")
