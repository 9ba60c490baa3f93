"""Tests for models/linear.py: the oneDNN fp32 CPU path gives F.linear's values and gradients, falls back where it
should, and keeps nn.Linear's parameter layout.

Run: `cd /work/main && python -m pytest tests/test_linear.py -q` (CPU, a second).
"""
import pytest
import torch
import torch.nn.functional as F

import models.linear as ml
from models.gpt import GPT, GPTConfig

needs_onednn = pytest.mark.skipif(ml._OP is None, reason="this torch build has no oneDNN linear op")


def _pair(rows, k, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*rows, k, generator=g), torch.randn(n, k, generator=g) / k ** 0.5


@needs_onednn
@pytest.mark.parametrize("rows,k,n", [((768,), 128, 384), ((12, 64), 512, 128), ((130,), 16, 65), ((2, 64), 8, 8)])
def test_forward_and_gradients_match_float64(rows, k, n):
    x, w = _pair(rows, k, n)
    assert ml.uses_onednn(x, w)
    x.requires_grad_(True)
    w.requires_grad_(True)
    y = ml.linear(x, w)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    y.backward(g)
    # float64 reference of y = x wᵀ and its gradients: dL/dx = g w, dL/dw = gᵀ x (rows flattened)
    xd, wd, gd = x.detach().double(), w.detach().double(), g.double()
    ref_y = xd @ wd.T
    ref_gx = gd @ wd
    ref_gw = gd.reshape(-1, n).T @ xd.reshape(-1, k)
    for got, ref in ((y, ref_y), (x.grad, ref_gx), (w.grad, ref_gw)):
        assert got.dtype == torch.float32 and got.shape == ref.shape
        # fp32 products, fp32 sums: error of the order of eps·sqrt(K)·|terms|, far below 1e-4 of the scale
        assert (got.double() - ref).abs().max() <= 1e-4 * (ref.abs().max() + 1)


@needs_onednn
def test_agrees_with_f_linear_and_inference_mode():
    x, w = _pair((4, 40), 32, 96, seed=3)  # 160 rows: oneDNN
    want = F.linear(x, w)
    assert torch.allclose(ml.linear(x, w), want, rtol=1e-5, atol=1e-6)
    with torch.inference_mode():
        assert torch.allclose(ml.linear(x, w), want, rtol=1e-5, atol=1e-6)


@needs_onednn
def test_second_derivatives_are_refused_not_wrong():
    """The backward is written with oneDNN products that are not themselves differentiated: asking for a graph of
    the gradient raises instead of silently returning a wrong second derivative."""
    x, w = _pair((128,), 8, 4)
    w.requires_grad_(True)
    (gw,) = torch.autograd.grad(ml.linear(x, w).pow(2).sum(), w, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiable"):
        gw.sum().backward()


def test_falls_back_outside_fp32_cpu_eager():
    x, w = _pair((ml.MIN_ROWS,), 16, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not ml.uses_onednn(x, w)
        assert ml.linear(x, w).dtype == torch.bfloat16  # autocast's F.linear, not an fp32 product
    assert not ml.uses_onednn(x.double(), w.double())
    assert torch.equal(ml.linear(x.double(), w.double()), F.linear(x.double(), w.double()))
    few = x[: ml.MIN_ROWS - 1]  # a few rows: MKL, whose per-call cost is lower
    assert not ml.uses_onednn(few, w) and torch.equal(ml.linear(few, w), F.linear(few, w))


def test_layer_keeps_nn_linear_layout():
    layer = ml.Linear(6, 4)
    assert layer.bias is None and layer.weight.shape == (4, 6)
    assert list(layer.state_dict()) == ["weight"]
    ref = torch.nn.Linear(6, 4, bias=False)
    layer.load_state_dict(ref.state_dict())
    x = torch.randn(2, 6)
    assert torch.allclose(layer(x), ref(x), rtol=1e-6, atol=1e-7)


@needs_onednn
def test_gpt_gradients_equal_the_plain_path(monkeypatch):
    """A whole training step's gradients (tied lm_head included) match the F.linear (MKL) path to fp32 rounding."""
    cfg = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32)
    idx = torch.randint(0, 40, (16, 16), generator=torch.Generator().manual_seed(0))  # 240 rows

    def grads():
        model = GPT(cfg, torch.Generator().manual_seed(0))
        loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss_fast, fast = grads()
    monkeypatch.setattr(ml, "_OP", None)  # every linear through F.linear
    loss_ref, ref = grads()
    assert abs(loss_fast - loss_ref) < 1e-5
    for name in ref:
        scale = ref[name].abs().max().item()
        assert (fast[name] - ref[name]).abs().max().item() <= 1e-4 * scale + 1e-7, name
