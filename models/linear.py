"""Bias-free linear layers whose fp32 CPU matmuls run on oneDNN instead of MKL.

    layer = Linear(128, 384)      # an nn.Linear(128, 384, bias=False): same parameter, same state_dict key
    y = layer(x)                  # x (..., 128) -> y (..., 384)
    y = linear(x, weight)         # the same as a function

Why: torch sends an fp32 CPU matmul to MKL, and MKL runs its AVX2 kernels on AMD CPUs; oneDNN (mkldnn, built
into every x86 torch) chooses its kernels by CPU feature, so it uses AVX-512 where the CPU has it. On the
2-core EPYC here, for the training shapes of the 4 × 128 char model (768 rows × 128 → 384, 128 → 512, 512 → 128),
oneDNN multiplies at 420-470 GFLOP/s against MKL's 220 (forward and input gradient) and 300-390 against 205 for
the weight gradient. Both are IEEE fp32 products with fp32 accumulation; only the order of the sums
differs, so results agree with F.linear to fp32 rounding (~1e-6 relative). Unless the user lowers oneDNN's
fp32 precision themselves (torch.backends.mkldnn.matmul.fp32_precision), nothing is computed in bf16 or TF32.

The oneDNN path (`torch.ops.mkldnn._linear_pointwise`: y = x wᵀ on plain strided tensors, the op inductor
emits for CPU linears) is taken only for fp32 CPU tensors of at least MIN_ROWS rows (its fixed cost per call
makes MKL faster for a few rows), outside autocast and outside torch.compile tracing
(inductor picks its own kernels there), and only where torch was built with mkldnn. Everything else,
CUDA included, goes through F.linear unchanged. Backward is written out with the same op, choosing for the
weight gradient the operand order that oneDNN runs faster for the layer's shape.

Tested by `pytest tests/test_linear.py`; the speed is measured by scripts/bench.py (training rows).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def _onednn_op():
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):  # a build without the op
        return None


_OP = _onednn_op()
# oneDNN spends ~10 µs per call finding its kernel, MKL ~1 µs: measured here (4 × 128 model's shapes), MKL is faster
# up to 16 rows; from 64 rows (a batch-64 decode step: ~3% faster overall) oneDNN wins, 1.5-2× from 128 rows up.
MIN_ROWS = 64


def _mm_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (..., K) @ b (N, K)ᵀ -> (..., N) on oneDNN; a and b may be transposed views (no copies made)."""
    return _OP(a, b, None, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """y = x wᵀ with x (..., K), w (N, K): forward and both gradients on oneDNN (fp32 CPU only)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return _mm_t(x, w)

    @staticmethod
    @once_differentiable  # the backward's products are not themselves differentiated (no double backward)
    def backward(ctx, g: torch.Tensor):
        x, w = ctx.saved_tensors
        g2 = g.reshape(-1, g.size(-1))  # (M, N): every row of every batch element
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = _mm_t(g2, w.t()).view(x.shape)  # (M, N) @ (N, K) -> (M, K)
        if ctx.needs_input_grad[1]:
            x2 = x.reshape(-1, x.size(-1))  # (M, K)
            N, K = w.shape
            # dL/dw = gᵀ x, (N, K). Measured: oneDNN runs (K, M) @ (M, N) faster when N > K (128 -> 384:
            # 300 vs 213 GFLOP/s) and (N, M) @ (M, K) faster otherwise (512 -> 128: 387 vs 286).
            gw = _mm_t(x2.t(), g2.t()).t() if N > K else _mm_t(g2.t(), x2.t())
        return gx, gw


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `linear(x, weight)` takes the oneDNN path (see the module docstring)."""
    return (_OP is not None and x.device.type == "cpu" and x.dtype == torch.float32
            and x.numel() >= MIN_ROWS * x.size(-1)
            and weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling())


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x (..., K) @ weight (N, K)ᵀ -> (..., N), on oneDNN for fp32 CPU tensors, else F.linear."""
    if not uses_onednn(x, weight):
        return F.linear(x, weight)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _OneDNNLinear.apply(x, weight)
    return _mm_t(x, weight)  # inference: no graph to record


class Linear(nn.Linear):
    """nn.Linear without a bias whose forward is `linear` (the parameter and its state_dict key are nn.Linear's)."""

    def __init__(self, in_features: int, out_features: int, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=False, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight)
