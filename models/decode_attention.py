"""One new token's attention over a KV cache on a CPU: the CPU sampler's hot loop, on the fastest kernel here.

    y = attend(q, k, v)   # q (B, H, 1, D) fp32; k, v (B, H, t, D) fp32, fp16 or bf16 -> y (B, H, 1, D) fp32
    native()              # whether the native kernel is available here (built and loaded on the first call)
    in_graph(q, k, v)     # the same, for code that torch.compile traces (GPT.decode_step on a CPU)

Why: decoding a batch on a CPU is bound by reading the KV cache. At batch 64 the 4 × 128 char model reads
2 · 4 layers · 64 rows · t · 128 channels per token, 65 MB at the average context of 250 in fp32 (33 MB in fp16),
against ~100 MFLOP of matmuls. torch's kernels read it slowly: SDPA over an fp32 cache slice at ~35-55 GB/s on the
2-core bench machine, over a bf16 one at 7 GB/s; inductor's loop for the fp16 math below at ~35 GB/s.

The kernels, the first that works here:

1. "native": models/decode_attention.c, AVX-512 by hand (16 positions' scores reduced at once), for fp32, fp16 and
   bf16 caches. For the 4 layers of the bench model at batch 64 and t = 250 it is ~3× inductor's loop and ~7× SDPA
   on the upcast values from an fp16 cache, ~2.2× SDPA from an fp32 one (same-process comparisons on the 2-core
   bench machine, whose speed drifts by up to 2× within an hour: 0.29-0.54 ms against 0.94 and 2.7-3.8 ms; fp32
   0.87-1.2 ms against 2.1-2.6 ms); inside a decode it reads the cache at ~50 GB/s (0.64 ms per step at batch 64).
   Built by models/cbuild.py with the system C compiler at first use (~0.3 s, then cached per machine) on x86-64
   CPUs with AVX-512 (F, BW, VL), for head sizes up to 256, without gradients. It is also the custom op
   torch.ops.closedloop.decode_attention, which GPT.decode_step's compiled graph calls (models/sampling.py loads
   the library before compiling).
2. "compiled": `attention` below compiled by inductor with dynamic shapes, for half caches where there is no native
   kernel (ARM, x86 without AVX-512, heads over 256): ~8 s to compile once per process (~1 s with inductor's
   disk cache warm), warmed on a representative size (batch 64, 4 heads, 256 positions) laid out as the sampler
   passes it. An fp32 cache without the native kernel goes to SDPA, never to a compile.
3. "sdpa": SDPA on the upcast keys and values, where nothing compiles (one warning); correct but slow.

Numerics: every kernel computes softmax(q kᵀ/√D) v in fp32 on the cache's own values; the only approximation is the
cache's rounding of k and v (fp16: relative 2⁻¹¹, bf16: 2⁻⁸; fp16 overflows beyond 65504, far above the keys and
values of a layer-normed model). The kernels differ from each other only in fp32 summation order (~1e-7).
Past dynamo's recompile limit (8 variants) the compiled kernel runs `attention` eagerly, correct but slow.
Set CLOSEDLOOP_NATIVE=0 to skip the native kernel. Tested by `pytest tests/test_decode_attention.py`.
"""
from __future__ import annotations

import ctypes
import math
import os
import platform
import threading
import warnings

import torch
import torch.nn.functional as F

from models import cbuild

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "decode_attention.c")
FLAGS = ("-O3", "-march=native", "-fopenmp")
MAX_HEAD = 256  # channels per head the native kernel takes (16 vectors of 16 lanes per accumulator set)
_LOCK = threading.Lock()  # one build or compile at a time; other threads wait for its result
_STATE: dict = {}  # "native": {dtype: C function} or None (native()); "fn": compiled kernel or None (_compiled())
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_SYMBOLS = {torch.float32: "decode_attention_f32", torch.float16: "decode_attention_f16",
            torch.bfloat16: "decode_attention_bf16"}


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The math, in torch ops (what the compiled kernel compiles, and the reference): q (B, H, 1, D) fp32, k and v
    (B, H, t, D) -> (B, H, 1, D) fp32; k and v are promoted to fp32 as they load."""
    s = ((q * (1.0 / math.sqrt(q.size(-1)))) * k).sum(-1, keepdim=True)  # (B, H, t, 1) scores, fp32
    # Softmax over the t positions, written out: every score is finite (no mask), so torch.softmax's handling of
    # rows that are all -inf is not needed.
    e = (s - s.amax(dim=-2, keepdim=True)).exp()
    return (e * v).sum(-2, keepdim=True) / e.sum(-2, keepdim=True)  # (B, H, 1, D)


# ---- 1. native ----------------------------------------------------------------------------------------------------

def _cpu_has_avx512() -> bool:
    """x86-64 with the AVX-512 subsets and F16C that the C kernel is written for (all AVX-512 CPUs have them)."""
    flags = set(cbuild.cpu_identity().split())
    return platform.machine().lower() in ("x86_64", "amd64") and {"avx512f", "avx512bw", "avx512vl", "f16c"} <= flags


def native() -> bool:
    """Whether the native kernel is available; builds and loads it on the first call in a process. Silent where the
    CPU has no AVX-512 (or CLOSEDLOOP_NATIVE=0); one warning where it should build but does not."""
    if "native" not in _STATE:
        with _LOCK:
            if "native" not in _STATE:
                _STATE["native"] = _load_native()
    return _STATE["native"] is not None


def _load_native() -> dict | None:
    if os.environ.get("CLOSEDLOOP_NATIVE", "1") == "0" or not _cpu_has_avx512():
        return None
    try:
        lib = cbuild.load(SOURCE, FLAGS)
        fns = {}
        for dtype, symbol in _SYMBOLS.items():
            fn = getattr(lib, symbol)
            fn.argtypes = [_PTR] * 4 + [_I64] * 12 + [ctypes.c_int]
            fn.restype = ctypes.c_int
            fns[dtype] = fn
        return fns
    except (cbuild.BuildError, AttributeError, OSError) as e:
        warnings.warn(f"the native KV-cache attention kernel is unavailable, decoding on a CPU uses a slower one "
                      f"({e})", RuntimeWarning, stacklevel=3)
        return None


def native_takes(head_dim: int) -> bool:
    """Whether the native kernel is available (built on first call) and takes heads of this many channels."""
    return native() and 1 <= head_dim <= MAX_HEAD


def _native_fits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether the loaded native kernel takes these tensors (without building it: safe while torch.compile traces):
    q (B, H, 1, D) fp32, k and v (B, H, t >= 1, D) of one dtype, all on the CPU with a contiguous last dimension,
    and no gradient wanted (the kernel has no backward)."""
    if _STATE.get("native") is None or q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        return False
    B, H, _, D = q.shape
    return (q.device.type == k.device.type == v.device.type == "cpu" and q.dtype == torch.float32
            and k.dtype in _SYMBOLS and v.dtype == k.dtype and q.size(2) == 1 and 1 <= D <= MAX_HEAD
            and k.shape == v.shape and k.shape[:2] == (B, H) and k.size(3) == D and k.size(2) >= 1
            and q.stride(-1) == k.stride(-1) == v.stride(-1) == 1
            and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)))


def _native_call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    B, H, T, D = k.shape
    out = q.new_empty(B, H, 1, D)  # fp32, contiguous, on the CPU
    failed = _STATE["native"][k.dtype](q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), B, H, T, D,
                                       q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
                                       v.stride(0), v.stride(1), v.stride(2), torch.get_num_threads())
    if failed == 1:
        raise MemoryError("decode_attention: no memory for the kernel's scores")
    if failed:
        raise ValueError(f"decode_attention: the native kernel does not take t = {T}, head size {D}")
    return out


@torch.library.custom_op("closedloop::decode_attention", mutates_args=(), device_types="cpu")
def _decode_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The native kernel as an op that compiled graphs call (opaque to inductor); `attention` where it does not fit."""
    if _native_fits(q, k, v):
        return _native_call(q, k, v)
    return attention(q.float(), k, v).contiguous()


@_decode_attention_op.register_fake
def _(q, k, v):
    return q.new_empty(q.size(0), q.size(1), 1, q.size(3), dtype=torch.float32)


# ---- 2. compiled ----------------------------------------------------------------------------------------------------

def _compiled():
    """The inductor-compiled `attention`, compiled and run once per process; None (after one warning) if it fails."""
    if "fn" not in _STATE:
        with _LOCK:
            if "fn" not in _STATE:
                _STATE["fn"] = _compile()
    return _STATE["fn"]


def _compile():
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
        return fn
    except Exception as e:  # noqa: BLE001: any compiler failure (no C++ compiler, inductor error)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        warnings.warn(f"compiling the half-precision KV-cache attention failed; a half-precision cache is read "
                      f"through SDPA on upcast keys and values instead (slow) ({type(e).__name__}: {first})",
                      RuntimeWarning, stacklevel=3)
        return None


# ---- the entry points ------------------------------------------------------------------------------------------

def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention of one new token (q (B, H, 1, D)) over every cached position (k, v (B, H, t, D), any float dtype),
    without a mask, eagerly: (B, H, 1, D) in q's dtype. The native kernel where it fits; else a half cache goes to
    the compiled kernel and an fp32 one (or any, where nothing compiles) to SDPA."""
    if native() and _native_fits(q, k, v):
        return _native_call(q, k, v)
    if k.dtype != q.dtype and _compiled() is not None:
        return _STATE["fn"](q, k, v).to(q.dtype)
    return F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype))


def in_graph(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`attend` for a function that torch.compile traces: the native op where the kernel is already loaded
    (`native()` called before compiling) and fits, else `attention` for inductor to fuse into the graph."""
    if _native_fits(q, k, v):
        return torch.ops.closedloop.decode_attention(q, k, v)
    return attention(q, k, v)
