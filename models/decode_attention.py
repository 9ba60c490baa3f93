"""One new token's attention over a half-precision KV cache on a CPU, as one compiled kernel.

    y = attend(q, k, v)   # q (B, H, 1, D) fp32; k, v (B, H, t, D) fp16, bf16 or fp32 -> y (B, H, 1, D) fp32
    ready()               # True once the compiled kernel has run here (compiled at most once per process)

Why: decoding a batch on a CPU is bound by reading the KV cache. At batch 64 the 4 × 128 char model reads
2 · 4 layers · 64 rows · t · 128 channels per token, 65 MB at the average context of 250 in fp32, while its
matmuls are ~100 MFLOP. A half-precision cache halves those bytes, but torch's eager CPU kernels are slow in
fp16/bf16 (SDPA on a bf16 cache ran at 7 GB/s against 64 GB/s in fp32 here). This kernel is written out so
that inductor fuses it into one loop nest per call: it reads each cached key and value once as fp16/bf16,
converts in registers and does every sum, the softmax and the weighted sum in fp32. On 2 cores it decoded the
bench model at batch 64 ~1.4× faster than SDPA over an fp32 cache (scripts/bench.py).

The kernel is compiled with dynamic shapes: one compiled graph serves every batch size, head count, head size and
context length (a batch or head count of 1 adds one more); inductor writes the compiled code to its disk cache,
so a later process loads it in ~1 s instead of compiling for ~8 s. The first compile runs on a representative
size (batch 64, 4 heads, 256 positions), since inductor decides from the first shapes how to split the loops over
threads. Where compilation fails (no C++ compiler), `ready()` is False after one warning and `attend` computes
the same function with SDPA on the upcast keys and values (slow but correct; models/sampling.py only chooses a
half cache by itself for a compiled decode step, whose graph holds its own copy of this math). Past dynamo's
recompile limit (8 variants: grad mode, dtype, a batch or head count of 1, ...) dynamo runs `attention` eagerly,
correct but slower than SDPA.

Numerics: the result equals softmax(q kᵀ/√D) v computed in fp32 on the cache's values; the only approximation
is the cache's own rounding of k and v (fp16: relative 2⁻¹¹, bf16: 2⁻⁸; fp16 overflows beyond 65504, far above
the keys and values of a layer-normed model). Tested by `pytest tests/test_sampling.py`.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

_STATE: dict = {}  # "fn": the compiled kernel (None where compilation failed), set by ready()


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The kernel's math, to compile (alone here, or inside GPT.decode_step's graph): q (B, H, 1, D) fp32, k and v
    (B, H, t, D) -> (B, H, 1, D) fp32; k and v are promoted to fp32 as they load."""
    s = ((q * (1.0 / math.sqrt(q.size(-1)))) * k).sum(-1, keepdim=True)  # (B, H, t, 1) scores, fp32
    # Softmax over the t positions, written out: every score is finite (no mask), so torch.softmax's handling of
    # rows that are all -inf is not needed.
    e = (s - s.amax(dim=-2, keepdim=True)).exp()
    return (e * v).sum(-2, keepdim=True) / e.sum(-2, keepdim=True)  # (B, H, 1, D)


def ready() -> bool:
    """Whether the compiled kernel is available; compiles and runs it once per process (warns once if it fails)."""
    if "fn" not in _STATE:
        try:
            fn = torch.compile(attention, dynamic=True)
            # Inputs laid out as GPT's cached forward passes them, so that its calls reuse this graph: the sampler's
            # inference mode, q a head view of the fused qkv projection, k and v two distinct caches' first 256
            # of 512 slots (one tensor for both, or contiguous ones, would be guarded on and compiled again).
            with torch.inference_mode():
                B, H, D, S = 64, 4, 32, 512
                q = torch.zeros(B, 1, 3 * H * D)[..., : H * D].view(B, 1, H, D).transpose(1, 2)  # (B, H, 1, D)
                k, v = (torch.zeros(1, B, H, S, D, dtype=torch.float16)[0, :, :, : S // 2] for _ in range(2))
                fn(q, k, v)
            _STATE["fn"] = fn
        except Exception as e:  # noqa: BLE001: any compiler failure (no C++ compiler, inductor error)
            _STATE["fn"] = None
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            warnings.warn(f"compiling the half-precision KV-cache attention failed; a half-precision cache is read "
                          f"through SDPA on upcast keys and values instead (slow) ({type(e).__name__}: {first})",
                          RuntimeWarning, stacklevel=2)
    return _STATE["fn"] is not None


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention of one new token (q (B, H, 1, D)) over every cached position (k, v (B, H, t, D), any float
    dtype), without a mask: (B, H, 1, D) in q's dtype. The compiled kernel when `ready()`, else SDPA."""
    if ready():
        return _STATE["fn"](q, k, v).to(q.dtype)
    return F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype))
