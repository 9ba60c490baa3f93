"""Fixed evaluation windows and model-based measures, with tiny mock models (uniform logits, a bigram table).

Run: `python -m pytest tests/test_evaluate.py -q`
"""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from training.measures.real_text import bits_per_char, eval_windows, evaluate, score_documents


class BigramModel(nn.Module):
    """logits[b, t] = table[idx[b, t]]: the next token depends only on the current one. A table of zeros is
    the uniform model. Follows the model contract (per-token nats with reduction="none")."""

    def __init__(self, table: torch.Tensor, block_size: int):
        super().__init__()
        self.table = nn.Parameter(table.clone())
        self.config = SimpleNamespace(block_size=block_size)
        self.max_t = block_size

    def forward(self, idx, targets=None, reduction="mean"):
        assert idx.shape[1] <= self.max_t  # like GPT, refuse contexts past block_size
        logits = self.table[idx]  # (B, T, V)
        if targets is None:
            return logits
        nats = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1, reduction="none")
        return nats.view(targets.shape) if reduction == "none" else nats.sum() / (targets >= 0).sum()


@pytest.mark.parametrize("block_size,n", [(8, 50), (7, 50), (8, 5), (2, 9), (16, 17)])
def test_windows_cover_every_token_once_with_context(block_size, n):
    ids = np.arange(1000, 1000 + n)  # token value = 1000 + stream position
    x, y = eval_windows(ids, block_size, max_tokens=n - 1)
    assert x.shape == y.shape and x.shape[1] == block_size and x.dtype == y.dtype == np.int64
    scored = y[y >= 0] - 1000
    assert sorted(scored.tolist()) == list(range(1, n))  # each target position exactly once
    for w in range(len(x)):
        for j in np.flatnonzero(y[w] >= 0):
            assert y[w, j] == x[w, j] + 1  # the target is the next stream token
            if w > 0:
                assert j + 1 >= block_size // 2  # tokens of context the target sees (inputs 0..j)
            assert np.all(np.diff(x[w, : j + 1]) == 1)  # context is the true preceding stream


def test_windows_respect_max_tokens_and_are_deterministic():
    ids = np.arange(100)
    x, y = eval_windows(ids, 8, max_tokens=20)
    assert y.max() == 20 and (y >= 0).sum() == 20
    x2, y2 = eval_windows(ids, 8, max_tokens=20)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    with pytest.raises(ValueError):
        eval_windows(ids[:1], 8, 10)


def test_uniform_model_gives_log_v():
    v, bs = 13, 8
    model = BigramModel(torch.zeros(v, v), bs)
    model.train()
    ids = np.random.default_rng(0).integers(0, v, 101)
    x, y = eval_windows(ids, bs, 100)
    out = evaluate(model, x, y, chars=100, device="cpu", batch_size=3)
    assert out["n_tokens"] == 100
    assert out["val/loss"] == pytest.approx(math.log(v), rel=1e-6)
    assert out["val/bpc"] == pytest.approx(math.log2(v), rel=1e-6)
    assert out["val/ppl"] == pytest.approx(v, rel=1e-5)
    assert out["val/entropy"] == pytest.approx(math.log2(v), rel=1e-6)
    assert out["val/top1"] == pytest.approx(1 / v, rel=1e-6)
    assert out["nats_sum"] == pytest.approx(100 * math.log(v), rel=1e-6)
    assert model.training  # training mode restored


def test_bigram_model_loss_by_hand():
    v, bs = 5, 6
    table = torch.randn(v, v, generator=torch.Generator().manual_seed(1))
    model = BigramModel(table, bs)
    ids = np.random.default_rng(2).integers(0, v, 40)
    x, y = eval_windows(ids, bs, 39)
    logp = torch.log_softmax(table.double(), -1).numpy()
    nats = -sum(logp[ids[i], ids[i + 1]] for i in range(39))
    out = evaluate(model, x, y, chars=39, device="cpu")
    assert out["nats_sum"] == pytest.approx(nats, rel=1e-5)
    assert out["val/loss"] == pytest.approx(nats / 39, rel=1e-5)
    assert out["val/bpc"] == pytest.approx(bits_per_char(nats, 39), rel=1e-5)
    ent = -(np.exp(logp) * logp).sum(1) / math.log(2)
    assert out["val/entropy"] == pytest.approx(ent[ids[:39]].mean(), rel=1e-5)
    assert out["val/top1"] == pytest.approx(np.exp(logp).max(1)[ids[:39]].mean(), rel=1e-5)


def test_score_documents_sums_doc_and_eot_and_batches_consistently():
    v, bs, eot = 7, 8, 6
    table = torch.randn(v, v, generator=torch.Generator().manual_seed(3))
    model = BigramModel(table, bs)
    rng = np.random.default_rng(4)
    docs = [rng.integers(0, 6, n) for n in (0, 1, 3, 7, 8, 20, 33)]  # includes docs longer than block_size
    logp = torch.log_softmax(table.double(), -1).numpy()
    want = []
    for d in docs:
        s = np.concatenate([[eot], d, [eot]])
        want.append(-sum(logp[s[i], s[i + 1]] for i in range(len(s) - 1)))
    got = score_documents(model, docs, eot, "cpu", batch_size=3)
    assert got.shape == (len(docs),)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    one_by_one = np.array([score_documents(model, [d], eot, "cpu")[0] for d in docs])
    np.testing.assert_allclose(got, one_by_one, rtol=1e-6)
    assert score_documents(model, [], eot, "cpu").shape == (0,)


def test_score_documents_context_does_not_leak_between_docs():
    # A model whose logits depend on the whole prefix (cumulative sum) would differ if docs shared context.
    class PrefixModel(BigramModel):
        def forward(self, idx, targets=None, reduction="mean"):
            return self.table[idx.cumsum(1) % self.table.shape[0]]

    model = PrefixModel(torch.randn(5, 5, generator=torch.Generator().manual_seed(5)), 6)
    docs = [np.array([1, 2, 3]), np.array([3, 3]), np.array([0, 1, 2, 3, 0, 1, 2, 3, 1])]
    together = score_documents(model, docs, 4, "cpu", batch_size=8)
    alone = [score_documents(model, [d], 4, "cpu")[0] for d in docs]
    np.testing.assert_allclose(together, alone, rtol=1e-6)


def test_bits_per_char_rejects_no_chars():
    assert bits_per_char(2 * math.log(2), 2) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        bits_per_char(1.0, 0)


def test_score_documents_under_autocast():
    model = BigramModel(torch.zeros(4, 4), 6)
    got = score_documents(model, [np.array([0, 1, 2])], 3, "cpu", autocast_dtype=torch.bfloat16)
    assert got[0] == pytest.approx(4 * math.log(4), rel=1e-5)
