"""Trainer: fit one model to one token stream. Knows nothing of generations, files or TensorBoard.

AdamW (decay on matrices only), linear warmup then cosine decay to `min_lr_ratio`·lr, gradient clipping.
Batches are random windows of block_size + 1 tokens read from the stream, which lives on the device; window
offsets come from the caller's torch.Generator, so a run is reproducible from its seed. Fused AdamW everywhere;
on CUDA bf16 autocast, TF32 matmuls and torch.compile by default. On a CPU the default is plain fp32 eager (the
same numerics on every CPU family); --train.dtype=bf16 and --train.compile=true are options whose benefit depends
on the CPU, so they are never the CPU default.
Under torchrun the model is wrapped in DDP (training/distributed.py). The inner loop never syncs with the host
except at log steps, where the loss is read. The result includes MFU (model FLOP utilisation: model.flops_per_token() ×
tokens/s / the device's peak FLOP/s) when the peak is known. Tested in tests/test_trainer.py.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from training import distributed

DTYPES = ("auto", "fp32", "bf16")
# Dense bf16 peak TFLOP/s by a substring of torch.cuda.get_device_name (vendor data sheets, no sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "4090": 165.0}


@dataclass
class TrainConfig:
    steps: int = field(default=300, metadata={"help": "optimizer steps per generation"})
    batch_size: int = field(default=32, metadata={"help": "windows per step (tokens/step = batch_size × model.block_size)"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "final lr as a fraction of the peak (cosine decay)"})
    warmup_steps: int = field(default=30, metadata={"help": "linear warmup, optimizer steps"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay on weight matrices"})
    beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    beta2: float = field(default=0.99, metadata={"help": "AdamW beta2"})
    grad_clip: float = field(default=1.0, metadata={"help": "max global gradient norm (0 = off)"})
    log_every: int = field(default=25, metadata={"help": "steps between train/loss records (the only host syncs)"})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available) | cpu | cuda | cuda:N"})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16"})
    compile: str = field(default="auto", metadata={"help": "torch.compile the model: auto (on CUDA) | true | false"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})
    epochs: float = field(default=0.0, metadata={"help": "E > 0: every generation trains ceil(E × its training tokens / (batch_size × model.block_size)) steps, i.e. E passes over its training set in expectation (train.steps and loop.first_steps unused); 0 = off"})
    grad_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in the backward pass (less memory, about 1/3 more compute; model.kind=hf)"})

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):  # `not >` also catches nan
            raise ValueError(f"train.lr must be a finite number > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        for name in ("warmup_steps", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not (self.weight_decay >= 0 and self.grad_clip >= 0):
            raise ValueError("train.weight_decay and train.grad_clip must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("train.beta1 and train.beta2 must be in [0, 1)")
        if self.dtype not in DTYPES:
            raise ValueError(f"train.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.compile not in ("auto", "true", "false"):
            raise ValueError(f"train.compile must be auto, true or false, got {self.compile!r}")
        if not (self.epochs >= 0 and math.isfinite(self.epochs)):
            raise ValueError(f"train.epochs must be a finite number >= 0 (0 = train.steps), got {self.epochs}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name} but CUDA is not available on this machine")
    return dev


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for forward passes (None = plain fp32)."""
    if cfg.dtype == "bf16" or (cfg.dtype == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def setup_backend(cfg: TrainConfig, device: torch.device) -> None:
    """Process-wide backend settings of a run: torch threads, TF32 on CUDA, and on a CPU which kernels run fp32."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        # TF32 changes speed, not the dynamics under study (fp32 accumulation stays).
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        cpu_onednn(autocast_dtype(cfg, device) is not None)


def cpu_onednn(enabled: bool = False) -> None:
    """Whether torch may hand CPU ops to oneDNN (torch.backends.mkldnn.enabled): off for fp32, torch's own kernels.

    Torch sends fp32 GELU, forward and backward, to oneDNN, whose kernel is generated for the CPU's instruction
    set: AVX2 and AVX-512 give other last bits (an AVX-512 machine with ONEDNN_MAX_CPU_ISA=AVX2 and torch's AVX2
    kernels, against its default), and in the pinned 4-generation debug run (tests/test_trajectory.py) that flipped
    sampled tokens in generation 2 and moved samples/self_bleu4 by 1.05e-4. Torch's own GELU gives the same bits
    under both, and with it so did every sampled id of that run (measures within 5e-8); it is as fast or faster
    (2 cores, AVX2: 573 against 792 µs forward + backward at 12 x 64 x 512, 16 against 17 µs forward at 64 x 512).
    fp32 matmuls go to MKL either way. A bf16 run on a CPU keeps oneDNN on: its bf16 matmuls are the point of that
    option, whose numerics depend on the CPU anyway."""
    torch.backends.mkldnn.enabled = enabled


def peak_flops(device: torch.device) -> float | None:
    """The device's peak FLOP/s for MFU: CUDA from PEAK_TFLOPS by device name, else None (unknown)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tf * 1e12 for key, tf in PEAK_TFLOPS.items() if key in name), None)


def epoch_steps(epochs: float, n_tokens: int, batch_size: int, block_size: int) -> int:
    """Optimizer steps for `epochs` passes over n_tokens in windows of block_size, batch_size per step (>= 1)."""
    return max(1, math.ceil(epochs * n_tokens / (batch_size * block_size)))


def lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    """Linear warmup over warmup_steps, then cosine from lr to min_lr_ratio·lr at `total` steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Fused AdamW: one kernel over all parameters instead of ~10 ops per tensor (CUDA and, since torch 2.4, CPU).
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


def train(model: torch.nn.Module, ids: np.ndarray, cfg: TrainConfig, generator: torch.Generator,
          device: torch.device, steps: int | None = None, log: Callable[[int, dict], None] | None = None,
          step_offset: int = 0, progress: bool = False, desc: str = "train", peak: float | None = None) -> dict:
    """Train `model` (already on `device`) for `steps` (default cfg.steps) on random windows of `ids`.

    ids: 1-D token stream (int); under torchrun every rank passes the same stream (training/distributed.py).
    log(global_step, {"train/loss": nats/token, "train/lr": lr}) is called every log_every steps and at the last
    one. Returns {"loss": last logged loss, "steps", "seconds", "tokens_per_s" (all ranks), "mfu"}:
    mfu = model.flops_per_token() × tokens_per_s / (peak × ranks), with peak in FLOP/s per device (default
    `peak_flops(device)`, known for common GPUs); None when the peak or the model's FLOP count is unknown.
    """
    steps = cfg.steps if steps is None else steps
    block = model.config.block_size
    if len(ids) < block + 1:
        raise ValueError(f"the training set has {len(ids)} tokens, fewer than one window of {block + 1}")
    distributed.check_batch(cfg.batch_size)
    world, rank = distributed.world_size(), distributed.rank()
    local = cfg.batch_size // world  # this rank's windows per step: rows [rank·local, (rank+1)·local) of the batch
    data = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).to(device)  # (N,) resident on the device
    span = torch.arange(block + 1, device=device)  # (block+1,)
    amp = autocast_dtype(cfg, device)
    # auto: compile on CUDA, except models that opt out (the HF adapter: not measured on a GPU here)
    compile_on = cfg.compile == "true" or (cfg.compile == "auto" and device.type == "cuda"
                                           and getattr(model, "compile_by_default", True))
    if cfg.grad_checkpointing:
        if not callable(getattr(model, "set_grad_checkpointing", None)):
            raise ValueError(f"train.grad_checkpointing=true needs a model that supports it (model.kind=hf), "
                             f"not {type(model).__name__}")
        model.set_grad_checkpointing(True)
    net = model
    if world > 1:  # gradients averaged over ranks during backward (bucketed all-reduce)
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    fwd = torch.compile(net) if compile_on else net
    opt = make_optimizer(model, cfg)
    model.train()
    loss_sum = torch.zeros((), device=device)  # running sum between log steps, read only at log steps
    n_in_sum, last = 0, float("nan")
    bar = _bar(steps, desc) if progress else None
    t0 = time.perf_counter()
    # Window offsets are drawn where the data live: on CUDA from a device generator seeded once from the caller's
    # CPU generator, so the inner loop never copies from the host; on the CPU from the caller's generator itself.
    gen = generator
    if device.type != "cpu":
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        gen = torch.Generator(device=device).manual_seed(seed)
    for step in range(steps):
        lr = lr_at(step, cfg, steps)
        for g in opt.param_groups:
            g["lr"] = lr
        # Every rank draws the whole batch's offsets (B,) from the same stream and keeps its slice: the global
        # batch is the one a single process would train on.
        off = torch.randint(0, len(ids) - block, (cfg.batch_size,), generator=gen, device=device)
        off = off[rank * local:(rank + 1) * local]  # one process: the whole batch
        chunk = data[off[:, None] + span]  # (local, block + 1)
        x, y = chunk[:, :-1], chunk[:, 1:]
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = fwd(x, y)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_sum += loss.detach()
        n_in_sum += 1
        if (step + 1) % cfg.log_every == 0 or step == steps - 1:
            # The one host sync, at log steps only (with DDP also the one extra all-reduce): mean over ranks.
            last = distributed.mean_over_ranks(loss_sum).item() / n_in_sum
            loss_sum.zero_()
            n_in_sum = 0
            if log is not None:
                log(step_offset + step + 1, {"train/loss": last, "train/lr": lr})
            if bar is not None:
                bar.set_postfix(loss=f"{last:.3f}")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    tokens_per_s = steps * cfg.batch_size * block / max(seconds, 1e-9)
    peak = peak if peak is not None else peak_flops(device)
    fpt = getattr(model, "flops_per_token", None)
    mfu = fpt() * tokens_per_s / (peak * world) if (peak and fpt is not None) else None  # tokens/s of all ranks
    return {"loss": last, "steps": steps, "seconds": seconds, "tokens_per_s": tokens_per_s, "mfu": mfu}


def _bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)
