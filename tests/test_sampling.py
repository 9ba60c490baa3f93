"""Tests for models/sampling.py: next-token rule, stopping, KV-cache decoding vs the slow reference, the static
(compiled) decode path.

Run: `python -m pytest tests/test_sampling.py` (CPU, tiny models, a few seconds); the tests that compile a whole
decode step (~5-15 s each) with `-m slow`. The fast ones run the compiled-step path with
torch.compile replaced by the identity, i.e. GPT.decode_step eagerly.
"""
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from models import sampling
from models.gpt import GPT, GPTConfig, KVCache
from models.sampling import (SampleConfig, auto_batch_size, bytes_per_row, decode, generate_documents,
                             _to_documents, generate_reference, sample_next_token)

V = 50
EOT = 0


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def tiny_gpt(seed=0):
    cfg = GPTConfig(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=32)
    return GPT(cfg, gen(seed))


def varied_gpt(seed=0):
    """A tiny GPT with weights scaled up 20x: at init, greedy decoding of a tied-embedding model just
    repeats the prompt token; sharper random weights give varied paths through the context cuts."""
    model = tiny_gpt(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" not in name:
                p.mul_(20.0)
    return model


class StopAfter(nn.Module):
    """Mock model: uniform over non-EOT tokens for the first n generated tokens, then all mass on EOT.

    The logits at context position p predict generated token p (position 0 is the [EOT] prompt).
    """

    def __init__(self, n, vocab=10, block_size=64):
        super().__init__()
        self.n = n
        self.config = GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=1, n_head=1, n_embd=1)
        self.dummy = nn.Parameter(torch.zeros(1))  # so the sampler can find the device and dtype
        self.calls = 0

    def new_kv_cache(self, batch_size, device=None, dtype=None):
        return KVCache(self.config, batch_size, device, dtype)

    def forward(self, idx, targets=None, kv_cache=None, reduction="mean"):
        self.calls += 1
        B, T = idx.shape
        pos0 = 0 if kv_cache is None else kv_cache.pos
        pos = torch.arange(pos0, pos0 + T)
        logits = torch.zeros(B, T, self.config.vocab_size)
        logits[:, pos < self.n, EOT] = -float("inf")
        logits[:, pos >= self.n, EOT + 1:] = -float("inf")
        if kv_cache is not None:
            kv_cache.pos += T
        return logits


# ---- sample_next_token -------------------------------------------------------------------------

def test_temperature_zero_is_argmax_and_draws_nothing():
    logits = torch.randn(8, V, generator=gen(1))
    g = gen(2)
    state = g.get_state()
    out = sample_next_token(logits, 0.0, 5, 0.5, g)
    assert out.dtype == torch.long and out.shape == (8,)
    assert torch.equal(out, logits.argmax(-1))
    assert torch.equal(g.get_state(), state)


def test_same_seed_same_tokens():
    logits = torch.randn(16, V, generator=gen(1))
    a = sample_next_token(logits, 1.0, 0, 1.0, gen(3))
    b = sample_next_token(logits, 1.0, 0, 1.0, gen(3))
    c = sample_next_token(logits, 1.0, 0, 1.0, gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_uniform_logits_give_uniform_frequencies():
    n, k = 20000, 10
    out = sample_next_token(torch.zeros(n, k), 1.0, 0, 1.0, gen(5))
    counts = torch.bincount(out, minlength=k).double()
    chi2 = ((counts - n / k) ** 2 / (n / k)).sum().item()
    assert chi2 < 27.9  # 99.9% quantile of chi-square with 9 degrees of freedom


def test_temperature_sharpens_as_power_of_probabilities():
    theta = torch.tensor([0.6, 0.3, 0.1])
    n = 20000
    out = sample_next_token(theta.log().expand(n, 3), 0.5, 0, 1.0, gen(6))
    freq = torch.bincount(out, minlength=3).double() / n
    expected = theta.double() ** 2 / (theta.double() ** 2).sum()  # tau_T(theta) ∝ theta^(1/T)
    torch.testing.assert_close(freq, expected, rtol=0, atol=0.015)


def test_top_k_never_leaves_the_k_best():
    logits = torch.randn(4000, V, generator=gen(7))
    out = sample_next_token(logits, 1.5, 3, 1.0, gen(8))
    best = logits.topk(3, dim=-1).indices
    assert (best == out[:, None]).any(-1).all()
    assert len(set(out.tolist())) > 3  # rows differ, so more than three ids overall
    # k >= V is no restriction: identical draws to top_k = 0
    assert torch.equal(sample_next_token(logits, 1.0, V, 1.0, gen(9)), sample_next_token(logits, 1.0, 0, 1.0, gen(9)))


def test_top_p_keeps_the_nucleus_with_renormalised_mass():
    probs = torch.tensor([0.05, 0.5, 0.1, 0.3, 0.05])  # sorted: 1 (0.5), 3 (0.3), 2 (0.1), ...
    n = 20000
    logits = probs.log().expand(n, 5)
    out = sample_next_token(logits, 1.0, 0, 0.75, gen(10))
    freq = torch.bincount(out, minlength=5).double() / n
    assert set(out.tolist()) == {1, 3}
    assert abs(freq[1].item() - 0.5 / 0.8) < 0.015
    out = sample_next_token(logits, 1.0, 0, 0.85, gen(11))
    assert set(out.tolist()) == {1, 2, 3}
    out = sample_next_token(logits, 1.0, 0, 1e-6, gen(12))  # always at least the top token
    assert set(out.tolist()) == {1}
    out = sample_next_token(logits, 1.0, 2, 0.5, gen(13))  # top-k then top-p
    assert set(out.tolist()) == {1}


def test_draw_follows_the_weights_and_never_picks_a_zero_weight(monkeypatch):
    """Inverse-CDF draws: frequencies follow weight / row sum (unnormalised rows too), and a column of weight 0 is
    never drawn, even for the extreme uniforms 0 and the largest double below 1."""
    w = torch.tensor([[0.0, 2.0, 0.0, 1.0, 1.0, 0.0]]).expand(20000, 6)
    out = sampling.draw(w, gen(14))
    assert out.shape == (20000, 1) and out.dtype == torch.long
    counts = torch.bincount(out[:, 0], minlength=6).double()
    assert counts[[0, 2, 5]].sum() == 0
    expected = torch.tensor([0.5, 0.25, 0.25]) * 20000
    assert (((counts[[1, 3, 4]] - expected) ** 2) / expected).sum() < 13.8  # 99.9% quantile, chi-square 2 dof
    rand = torch.rand
    for u, want in [(0.0, 1), (float(np.nextafter(1.0, 0.0)), 4)]:
        monkeypatch.setattr(torch, "rand", lambda *a, u=u, **kw: rand(*a, **kw).fill_(u))
        assert sampling.draw(w[:1], gen(0)).item() == want


def test_draw_handles_a_large_vocabulary_and_rejects_nan():
    logits = torch.randn(8, 50_257, generator=gen(15))
    out = sample_next_token(logits, 1.0, 0, 1.0, gen(16))
    assert out.shape == (8,) and 0 <= out.min() and out.max() < 50_257
    with pytest.raises(ValueError, match="nan or inf"):
        sampling.draw(torch.tensor([[0.5, float("nan")]]), gen(0))


# ---- generate_documents: stopping -----------------------------------------------------------------

def test_stops_at_eot_and_drops_it():
    model = StopAfter(n=5)
    docs = generate_documents(model, 7, SampleConfig(max_new_tokens=1000, batch_size=3), EOT, gen(0))
    assert len(docs) == 7
    assert all(isinstance(d, np.ndarray) and d.dtype == np.int64 for d in docs)
    assert [len(d) for d in docs] == [5] * 7
    assert all((d != EOT).all() for d in docs)
    # the batch stops at the first host check after all rows finished, not at max_new_tokens
    assert model.calls <= 3 * 17


def test_stops_at_max_new_tokens():
    docs = generate_documents(StopAfter(n=100), 4, SampleConfig(max_new_tokens=7), EOT, gen(0))
    assert [len(d) for d in docs] == [7] * 4


def test_zero_documents():
    assert generate_documents(StopAfter(n=3), 0, SampleConfig(), EOT, gen(0)) == []


def test_restores_training_mode():
    model = tiny_gpt().train()
    generate_documents(model, 2, SampleConfig(max_new_tokens=3), EOT, gen(0))
    assert model.training
    model.eval()
    generate_documents(model, 2, SampleConfig(max_new_tokens=3), EOT, gen(0))
    assert not model.training


# ---- generate_documents: KV cache vs reference ---------------------------------------------------

def test_greedy_cached_equals_reference_beyond_block_size():
    model = varied_gpt()
    cfg = SampleConfig(temperature=0.0, max_new_tokens=40, batch_size=2, kv_dtype="fp32")  # fp32: exact
    fast = generate_documents(model, 3, cfg, 7, gen(0))  # EOT = 7
    slow = generate_reference(model, 3, cfg, 7, gen(0))
    assert min(len(d) for d in fast) == 40  # crosses the context cut (at 16 and 24 tokens) three times
    assert len(set(fast[0].tolist())) > 5  # a varied path, not one repeated token
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow))


@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (10, 0.9)])
def test_sampled_cached_equals_reference(top_k, top_p):
    model = varied_gpt()
    cfg = SampleConfig(temperature=1.0, top_k=top_k, top_p=top_p, max_new_tokens=40, batch_size=3, kv_dtype="fp32")
    fast = generate_documents(model, 5, cfg, 7, gen(1))  # EOT = 7; 2 batches, the last partial
    slow = generate_reference(model, 5, cfg, 7, gen(1))
    assert max(len(d) for d in fast) > 2 * model.config.block_size
    assert [len(d) for d in fast] == [len(d) for d in slow]
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow))


def test_same_seed_same_documents_and_rows_differ():
    model = tiny_gpt()
    cfg = SampleConfig(temperature=1.0, max_new_tokens=30, batch_size=4)
    a = generate_documents(model, 4, cfg, EOT, gen(2))
    b = generate_documents(model, 4, cfg, EOT, gen(2))
    c = generate_documents(model, 4, cfg, EOT, gen(3))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert len({tuple(d.tolist()) for d in a}) == 4  # rows of one batch get different samples


def test_row_logits_do_not_depend_on_the_batch_with_cache():
    model = tiny_gpt().eval()
    x = torch.randint(1, V, (4, 12), generator=gen(4))
    with torch.inference_mode():
        batch_cache, solo_cache = model.new_kv_cache(4), model.new_kv_cache(1)
        batch = [model(x[:, :6], kv_cache=batch_cache)[:, -1]]
        solo = [model(x[:1, :6], kv_cache=solo_cache)[:, -1]]
        for t in range(6, 12):
            batch.append(model(x[:, t:t + 1], kv_cache=batch_cache)[:, -1])
            solo.append(model(x[:1, t:t + 1], kv_cache=solo_cache)[:, -1])
    torch.testing.assert_close(torch.stack(batch)[:, :1], torch.stack(solo), rtol=0, atol=1e-5)


# ---- fast sampler vs reference: greedy identity, distribution of sampled tokens ------------------------

def test_decode_fixed_length_greedy_fast_equals_reference():
    model = varied_gpt(1)
    cfg = SampleConfig(temperature=0.0, max_new_tokens=30, batch_size=8, kv_dtype="fp32")
    fast = decode(model, 8, cfg, 7, gen(0), stop_at_eot=False)
    slow = decode(model, 8, cfg, 7, gen(0), use_cache=False, stop_at_eot=False)
    assert fast.shape == (8, 31)  # every row decodes all 30 steps, EOT or not
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("use_cache, compile_opt, kv", [(True, "false", "auto"), (False, "false", "auto"),
                                                        (True, "false", "fp32"),
                                                        pytest.param(True, "true", "auto", marks=pytest.mark.slow)])
def test_sampled_pairs_follow_the_model_distribution(use_cache, compile_opt, kv):
    """Chi-square goodness of fit of the first two sampled tokens (a joint over V² cells) against the exact
    tempered distribution computed from full forwards: p(a, b) = τ(p(a | [EOT])) · τ(p(b | [EOT, a])).
    With compile, the second token's logits come from the compiled step; with kv auto (fp32 on a CPU) and fp32
    from the eager cached step."""
    v, T, n = 5, 0.7, 12_000
    model = GPT(GPTConfig(vocab_size=v, block_size=8, n_layer=1, n_head=1, n_embd=16), gen(3)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" not in name:
                p.mul_(15.0)  # a clearly non-uniform distribution
        first = torch.softmax(model(torch.tensor([[EOT]]))[0, -1].double() / T, -1)  # (V,)
        ctx = torch.stack([torch.full((v,), EOT), torch.arange(v)], 1)  # (V, 2): [EOT, a]
        second = torch.softmax(model(ctx)[:, -1].double() / T, -1)  # (V, V): row a = p(b | a)
    expected = (first[:, None] * second).flatten() * n  # (V²,)
    assert expected.min() > 5 and first.max() > 0.35  # a valid chi-square, on a non-uniform model
    cfg = SampleConfig(temperature=T, max_new_tokens=2, batch_size=n, compile=compile_opt, kv_dtype=kv)
    ids = decode(model, n, cfg, EOT, gen(4), use_cache=use_cache, stop_at_eot=False)[:, 1:]  # (n, 2)
    counts = torch.bincount(ids[:, 0] * v + ids[:, 1], minlength=v * v).double()
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 52.6  # 99.9% quantile of chi-square with 24 degrees of freedom


# ---- KV cache dtype: fp32 (the exact path) unless autocast or sample.kv_dtype asks for less ------------------

def test_kv_dtype_auto_is_the_model_dtype_on_a_cpu_and_the_autocast_dtype_under_autocast():
    model, cpu = tiny_gpt(), torch.device("cpu")
    assert sampling.kv_cache_dtype(SampleConfig(), model, cpu) == torch.float32  # every CPU: the exact path
    for name, dtype in [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]:
        assert sampling.kv_cache_dtype(SampleConfig(kv_dtype=name), model, cpu) == dtype
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sampling.kv_cache_dtype(SampleConfig(), model, cpu) == torch.bfloat16


def test_explicit_half_cache_is_used_and_memory_cap_counts_its_bytes(monkeypatch):
    model = tiny_gpt()
    cfg = SampleConfig(max_new_tokens=12, batch_size=64, max_batch_memory_mb=1, kv_dtype="fp16")
    b16 = auto_batch_size(model.config, cfg, 2)
    assert b16 > auto_batch_size(model.config, cfg, 4)  # half the cache bytes per row: more rows under the cap
    rows, dtypes = [], []
    decode_batch, new_cache = sampling._decode_batch, GPT.new_kv_cache

    def spy_batch(model, n, *a, **kw):
        rows.append(n)
        return decode_batch(model, n, *a, **kw)

    def spy_cache(self, *a, **kw):
        cache = new_cache(self, *a, **kw)
        dtypes.append(cache.k.dtype)
        return cache

    monkeypatch.setattr(sampling, "_decode_batch", spy_batch)
    monkeypatch.setattr(GPT, "new_kv_cache", spy_cache)
    docs = generate_documents(model, 2 * b16 + 1, cfg, EOT, gen(5))
    assert len(docs) == 2 * b16 + 1 and rows == [b16, b16, 1]  # batches sized for a 2-byte cache
    assert dtypes == [torch.float16] * 3


def test_half_cache_logits_stay_within_its_rounding_of_the_exact_path():
    """Decoding from an fp16 cache changes next-token logits only by the cache's rounding of keys and values
    (relative 2^-11): not zero, and several times smaller than with a bf16 cache (2^-8, what bf16 autocast decoding
    on CUDA rounds everything to). The model has sharp (20x) weights, so errors are larger than a trained model's."""
    model = varied_gpt(2).eval()
    x = torch.randint(1, V, (4, 16), generator=gen(6))
    with torch.inference_mode():
        exact = model(x)[:, 2:].transpose(0, 1)  # (14, 4, V): the full forward, no cache
        err = {}
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            cache = model.new_kv_cache(4, dtype=dtype)
            steps = [model(x[:, :3], kv_cache=cache)[:, -1]]
            steps += [model(x[:, t:t + 1], kv_cache=cache)[:, -1] for t in range(3, 16)]
            err[dtype] = (torch.stack(steps) - exact).abs().max().item() / exact.abs().max().item()
    assert err[torch.float32] < 1e-5
    assert 0 < err[torch.float16] < err[torch.bfloat16] / 3 and err[torch.float16] < 5e-3  # measured 2.3e-3, 9.3e-3


# ---- static decode path (compiled; here mostly with torch.compile as the identity) -----------------------

@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile replaced by the identity: the static path runs GPT.decode_step eagerly. Returns the list
    of (function, mode) it was asked to compile and counts the steps in calls[0]."""
    asked, calls = [], [0]

    def fake_compile(fn, mode=None, **kw):
        asked.append((fn, mode))

        def step(*a):
            calls[0] += 1
            return fn(*a)
        return step

    monkeypatch.setattr(torch, "compile", fake_compile)
    return asked, calls


def test_static_path_greedy_equals_reference_beyond_block_size(eager_compile):
    asked, calls = eager_compile
    model = varied_gpt()
    cfg = SampleConfig(temperature=0.0, max_new_tokens=40, batch_size=2, compile="true", kv_dtype="fp32")
    fast = generate_documents(model, 3, cfg, 7, gen(0))  # EOT = 7
    slow = generate_reference(model, 3, cfg, 7, gen(0))
    assert min(len(d) for d in fast) == 40  # crosses the context cut three times
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow))
    assert asked == [(GPT.decode_step, None)]  # made once for the model (default mode on a CPU), both batches
    assert calls[0] == 2 * (39 - 3)  # every step but the three cache rebuilds, in each batch


@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (10, 0.9)])
def test_static_path_sampled_equals_reference(eager_compile, top_k, top_p):
    model = varied_gpt()
    cfg = SampleConfig(temperature=1.0, top_k=top_k, top_p=top_p, max_new_tokens=40, batch_size=3, compile="true",
                       kv_dtype="fp32")
    fast = generate_documents(model, 5, cfg, 7, gen(1))
    slow = generate_reference(model, 5, cfg, 7, gen(1))
    assert max(len(d) for d in fast) > 2 * model.config.block_size
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow))


def test_compile_auto_is_off_on_a_cpu_and_true_needs_decode_step(eager_compile):
    asked, _ = eager_compile
    generate_documents(tiny_gpt(), 2, SampleConfig(max_new_tokens=5, kv_dtype="fp32"), EOT, gen(0))  # compile="auto"
    assert asked == []
    with pytest.raises(ValueError, match="sample.compile"):
        generate_documents(StopAfter(n=3), 2, SampleConfig(compile="true"), EOT, gen(0))


def test_failed_compile_warns_once_and_decodes_eagerly_under_auto(monkeypatch):
    def broken(fn, mode=None, **kw):
        def step(*a):
            raise RuntimeError("no C++ compiler\nmore detail")
        return step

    monkeypatch.setattr(torch, "compile", broken)
    model = varied_gpt()
    cfg = SampleConfig(temperature=0.0, max_new_tokens=20, compile="auto", kv_dtype="fp32")
    want = decode(model, 2, cfg, 7, gen(0))
    static = sampling._StaticStep(model, torch.device("cpu"))  # what compile=auto builds on CUDA
    with torch.inference_mode():
        with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler") as rec:
            got = sampling._decode_batch(model, 2, cfg, 7, gen(0), torch.device("cpu"), True, static=static)
        assert len(rec) == 1 and torch.equal(got, want)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the next batch: eager, no second warning
            assert torch.equal(sampling._decode_batch(model, 2, cfg, 7, gen(0), torch.device("cpu"), True,
                                                      static=static), want)
        strict = SampleConfig(temperature=0.0, max_new_tokens=20, compile="true", kv_dtype="fp32")
        with pytest.raises(RuntimeError, match="no C"):
            sampling._decode_batch(model, 2, strict, 7, gen(0), torch.device("cpu"), True, static=static)


def test_static_path_reuses_its_kv_caches(eager_compile):
    model = tiny_gpt()
    static = sampling._StaticStep(model, torch.device("cpu"))
    a = static.new_cache(model, 4, torch.device("cpu"), torch.float32)
    a.pos = 3
    b = static.new_cache(model, 2, torch.device("cpu"), torch.float32)
    assert static.new_cache(model, 4, torch.device("cpu"), torch.float32) is a and a.pos == 0  # same tensors, reset
    static.new_cache(model, 5, torch.device("cpu"), torch.float32)  # a third size evicts the least recently used (2)
    assert static.new_cache(model, 2, torch.device("cpu"), torch.float32) is not b and len(static.caches) == 2


@pytest.mark.slow
def test_compiled_greedy_equals_reference_with_one_graph():
    """Really compiled (inductor on the CPU, the static step over all cache slots under a mask): greedy tokens
    equal the reference across context cuts, and one compiled graph serves every step and batch of a size."""
    from torch._dynamo.utils import counters

    model = GPT(GPTConfig(vocab_size=V, block_size=12, n_layer=1, n_head=2, n_embd=24), gen(5))  # its own shapes
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" not in name:
                p.mul_(20.0)
    graphs = lambda: counters["stats"]["unique_graphs"]  # noqa: E731
    before = graphs()
    short = SampleConfig(temperature=0.0, max_new_tokens=3, batch_size=4, compile="true", kv_dtype="fp32")
    decode(model, 4, short, 7, gen(0))
    assert graphs() - before == 1
    cfg = SampleConfig(temperature=0.0, max_new_tokens=40, batch_size=4, compile="true", kv_dtype="fp32")
    fast = generate_documents(model, 8, cfg, 7, gen(0))  # two batches of 4, 39 steps, three context cuts
    slow = generate_reference(model, 8, cfg, 7, gen(0))
    generate_documents(model, 8, cfg, 7, gen(1))
    assert graphs() - before == 1
    assert min(len(d) for d in fast) == 40 and len(set(fast[0].tolist())) > 3
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow))


def test_auto_batch_size_under_a_memory_cap():
    mcfg = GPTConfig(vocab_size=65, block_size=512, n_layer=4, n_head=4, n_embd=128)
    row = bytes_per_row(mcfg, 500)
    assert row > 2 * 4 * 512 * 128 * 4  # at least the fp32 KV cache of one row (2 MiB here)
    assert auto_batch_size(mcfg, SampleConfig(batch_size=64)) == 64  # cap 0 = off
    fits = auto_batch_size(mcfg, SampleConfig(batch_size=10_000, max_batch_memory_mb=256))
    assert fits * row <= 256 * 2**20 < (fits + 1) * row
    assert auto_batch_size(mcfg, SampleConfig(batch_size=10, max_batch_memory_mb=256)) == 10  # never above batch_size
    assert auto_batch_size(mcfg, SampleConfig(batch_size=10, max_batch_memory_mb=1)) == 1  # at least one row


def test_memory_cap_splits_into_smaller_batches_same_documents():
    model = tiny_gpt()
    capped = SampleConfig(max_new_tokens=12, batch_size=64, max_batch_memory_mb=1)
    b = auto_batch_size(model.config, capped, sampling.kv_cache_dtype(capped, model, torch.device("cpu")).itemsize)
    assert 1 < b < 64  # about 35 kB per row of this tiny model
    docs = generate_documents(model, 70, capped, EOT, gen(5))
    plain = generate_documents(model, 70, SampleConfig(max_new_tokens=12, batch_size=b), EOT, gen(5))
    assert len(docs) == 70 and all(np.array_equal(x, y) for x, y in zip(docs, plain))


# ---- config ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, option", [
    ({"temperature": -1.0}, "sample.temperature"),
    ({"top_k": -1}, "sample.top_k"),
    ({"top_p": 0.0}, "sample.top_p"),
    ({"top_p": 1.5}, "sample.top_p"),
    ({"max_new_tokens": 0}, "sample.max_new_tokens"),
    ({"batch_size": 0}, "sample.batch_size"),
    ({"max_batch_memory_mb": -1}, "sample.max_batch_memory_mb"),
    ({"compile": "yes"}, "sample.compile"),
    ({"kv_dtype": "float16"}, "sample.kv_dtype"),
])
def test_config_validation_names_the_option(kw, option):
    with pytest.raises(ValueError, match=option):
        SampleConfig(**kw)


# ---- repetition penalty and beam search (models/decoding.py) -----------------------------------------------------

def test_repetition_penalty_is_the_ctrl_definition():
    from models.decoding import apply_repetition_penalty

    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    context = torch.tensor([[0, 1, 1], [4, 4, 4]])  # repeats count once
    out = apply_repetition_penalty(logits, context, 2.0)
    torch.testing.assert_close(out, torch.tensor([[1.0, -2.0, 0.5, -3.0, 0.0], [1.0, 1.0, 1.0, 1.0, 0.5]]),
                               rtol=0, atol=0)
    assert apply_repetition_penalty(logits, context, 1.0) is logits


def test_repetition_penalty_in_decoding_and_default_stream_unchanged():
    model = varied_gpt(2)
    base = generate_documents(model, 6, SampleConfig(max_new_tokens=40), EOT, gen(1))
    same = generate_documents(model, 6, SampleConfig(max_new_tokens=40, repetition_penalty=1.0), EOT, gen(1))
    assert all(np.array_equal(a, b) for a, b in zip(base, same))
    greedy = SampleConfig(temperature=0, max_new_tokens=40)
    plain = decode(model, 2, greedy, EOT, gen(0), stop_at_eot=False)
    pen = decode(model, 2, SampleConfig(temperature=0, max_new_tokens=40, repetition_penalty=5.0), EOT, gen(0),
                 stop_at_eot=False)
    # a strong penalty leaves fewer repeats in each row's greedy path
    assert all(len(set(p.tolist())) >= len(set(q.tolist())) for p, q in zip(pen, plain)) and not torch.equal(pen, plain)
    ref = generate_reference(model, 3, SampleConfig(max_new_tokens=40, repetition_penalty=1.5), EOT, gen(4))
    fast = generate_documents(model, 3, SampleConfig(max_new_tokens=40, repetition_penalty=1.5), EOT, gen(4))
    assert all(np.array_equal(a, b) for a, b in zip(ref, fast))


class Bigram(nn.Module):
    """Mock model whose next-token logits depend only on the last token: logits = table[last] (V, V)."""

    def __init__(self, table, block_size=64):
        super().__init__()
        self.table = table
        V = table.size(0)
        self.config = GPTConfig(vocab_size=V, block_size=block_size, n_layer=1, n_head=1, n_embd=1)
        self.dummy = nn.Parameter(torch.zeros(1))

    def new_kv_cache(self, batch_size, device=None, dtype=None):
        return KVCache(self.config, batch_size, device, dtype)

    def forward(self, idx, targets=None, kv_cache=None, reduction="mean"):
        if kv_cache is not None:
            kv_cache.pos += idx.size(1)
        return self.table[idx]  # (B, T, V)


def test_beam_search_finds_the_likelier_sequence_and_one_beam_is_greedy():
    from models.decoding import beam_decode

    # From token 1: token 2 (p .6) then token 2 again (p .2) or any of 3..9, or token 3 (p .4) then surely token 4.
    V = 10
    p = torch.full((V, V), 1e-9)
    p[1, 2], p[1, 3] = 0.6, 0.4
    p[2, 3:] = 0.8 / 7
    p[2, 2] = 0.2
    p[3, 4] = 1.0
    p[4, 5] = 1.0
    p[5:, 5] = 1.0
    model = Bigram((p / p.sum(1, keepdim=True)).log())
    prompts = torch.tensor([[1], [1]])
    greedy = torch.cat([prompts, torch.tensor([[2, 2], [2, 2]])], 1)
    one = beam_decode(model, prompts, 2, 1, eot_id=0)
    five = beam_decode(model, prompts, 2, 5, eot_id=0)
    assert torch.equal(one, greedy)  # log .6 + log .2 = -2.12 nats
    assert torch.equal(five, torch.tensor([[1, 3, 4], [1, 3, 4]]))  # log .4 = -0.92 nats: more likely
    # Built-in GPT: one beam equals greedy up to the first EOT, cached equals recompute, and no draws.
    model = varied_gpt(3)
    g = gen(7)
    state = g.get_state()
    docs = generate_documents(model, 4, SampleConfig(temperature=0, max_new_tokens=30), EOT, g)
    beams1 = beam_decode(model, torch.full((4, 1), EOT), 30, 1, EOT)
    assert all(np.array_equal(a, b) for a, b in zip(docs, _to_documents(beams1, EOT)))
    cfg5 = SampleConfig(max_new_tokens=30, num_beams=5)
    b5 = generate_documents(model, 3, cfg5, EOT, g)
    assert torch.equal(g.get_state(), state)  # beam search and greedy draw nothing
    ref5 = generate_reference(model, 3, cfg5, EOT, gen(8))
    assert all(np.array_equal(a, b) for a, b in zip(b5, ref5)) and all(np.array_equal(b5[0], d) for d in b5)
