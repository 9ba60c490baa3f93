"""Tests for models/gpt.py: shapes, losses, deterministic init, exact KV cache, the static decode step, config
validation.

Run: `python -m pytest tests/test_gpt.py` (CPU, tiny model, a few seconds).
"""
import math

import pytest
import torch

from models.gpt import GPT, GPTConfig, KVCache

V = 50


def tiny(seed=0, **kw):
    cfg = GPTConfig(**{"vocab_size": V, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32, **kw})
    return GPT(cfg, torch.Generator().manual_seed(seed)).eval()


def ids(B, T, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def test_logits_shape_and_dtype():
    model = tiny()
    logits = model(ids(3, 7))
    assert logits.shape == (3, 7, V) and logits.dtype == torch.float32


def test_initial_loss_is_about_ln_vocab():
    model = tiny()
    # Targets independent of the inputs: with tied embeddings, predicting the input token itself is
    # already easier than chance at init.
    loss = model(ids(8, 16, seed=1), ids(8, 16, seed=2))
    assert loss.shape == ()
    assert abs(loss.item() - math.log(V)) < 0.1


def test_reduction_none_matches_mean_and_ignores_minus_one():
    model = tiny()
    x, y = ids(4, 16, seed=2), ids(4, 16, seed=3)
    per_tok = model(x, y, reduction="none")
    assert per_tok.shape == (4, 16)
    torch.testing.assert_close(per_tok.mean(), model(x, y), rtol=0, atol=1e-6)

    y_ign = y.clone()
    y_ign[:, :5] = -1
    per_ign = model(x, y_ign, reduction="none")
    assert torch.all(per_ign[:, :5] == 0)
    torch.testing.assert_close(per_ign[:, 5:], per_tok[:, 5:])
    torch.testing.assert_close(model(x, y_ign), per_tok[:, 5:].mean(), rtol=0, atol=1e-6)


def test_per_token_loss_is_cross_entropy_of_logits():
    model = tiny()
    x, y = ids(2, 8, seed=4), ids(2, 8, seed=5)
    logp = torch.log_softmax(model(x), dim=-1)
    expected = -logp.gather(-1, y[..., None]).squeeze(-1)
    torch.testing.assert_close(model(x, y, reduction="none"), expected)


def test_init_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = tiny(seed=0), tiny(seed=0), tiny(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_tied_embedding_and_init_scales():
    model = tiny(n_layer=4, n_embd=64)
    assert model.lm_head.weight is model.wte.weight
    assert abs(model.wte.weight.std().item() - 0.02) < 0.002
    proj = model.h[0].attn.c_proj.weight
    assert abs(proj.std().item() - 0.02 / math.sqrt(8)) < 0.001
    assert torch.all(model.h[0].ln_1.weight == 1)


def test_param_and_flop_counts():
    model = tiny()
    c = model.config
    per_block = 12 * c.n_embd**2 + 2 * c.n_embd  # attn 4C^2 + mlp 8C^2 + two LayerNorm weights
    expected = V * c.n_embd + c.block_size * c.n_embd + c.n_layer * per_block + c.n_embd
    assert model.num_params() == expected
    n = expected - c.block_size * c.n_embd
    assert model.flops_per_token() == 6 * n + 12 * c.n_layer * c.n_embd * c.block_size


def test_kv_cache_chunks_then_single_tokens_match_full_forward():
    model = tiny()
    x = ids(3, 16, seed=6)
    full = model(x)
    cache = model.new_kv_cache(3)
    assert cache.k.shape == (2, 3, 2, 16, 16)
    parts = [model(x[:, :5], kv_cache=cache), model(x[:, 5:9], kv_cache=cache)]
    parts += [model(x[:, t:t + 1], kv_cache=cache) for t in range(9, 16)]
    assert cache.pos == 16
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-5)

    cache.reset()
    torch.testing.assert_close(model(x[:, :4], kv_cache=cache), full[:, :4], rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_decode_step_equals_dynamic_cached_forward_up_to_the_last_slot(dtype):
    """The static step (all slots, masked), on the fp32 cache and on an opt-in fp16 cache: the same logits as the
    dynamic cached forward on the same cache."""
    model = tiny()
    x = ids(3, 16, seed=8)
    dyn, static = model.new_kv_cache(3, dtype=dtype), model.new_kv_cache(3, dtype=dtype)
    static.k.normal_(generator=torch.Generator().manual_seed(0))  # stale slots of an earlier batch: never seen
    static.v.normal_(generator=torch.Generator().manual_seed(1))
    model(x[:, :4], kv_cache=dyn)
    model(x[:, :4], kv_cache=static)
    for t in range(4, 16):  # positions 4..15, the last one the cache's final slot
        want = model(x[:, t:t + 1], kv_cache=dyn)[:, -1]
        got = model.decode_step(x[:, t:t + 1], torch.tensor(t), static)
        assert got.shape == (3, V) and got.dtype == torch.float32
        assert static.pos == 4  # the caller keeps the count
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    tol = 1e-6 if dtype == torch.float32 else 2e-3  # fp16: a last-bit difference may round to one fp16 ulp
    torch.testing.assert_close(static.k, dyn.k, rtol=0, atol=tol)  # every slot written, stale ones overwritten
    torch.testing.assert_close(static.v, dyn.v, rtol=0, atol=tol)


def test_decode_step_under_bf16_autocast_keeps_a_bf16_cache_and_fp32_logits():
    model = tiny()
    x = ids(2, 6, seed=9)
    ref = model(x)[:, -1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cache, dyn = model.new_kv_cache(2, dtype=torch.bfloat16), model.new_kv_cache(2, dtype=torch.bfloat16)
        model(x[:, :5], kv_cache=cache)
        model(x[:, :5], kv_cache=dyn)
        got = model.decode_step(x[:, 5:6], torch.tensor(5), cache)
        want = model(x[:, 5:6], kv_cache=dyn)[:, -1]
    assert got.dtype == torch.float32 and cache.k.dtype == torch.bfloat16
    assert cache.k[:, :, :, 5].abs().sum() > 0
    torch.testing.assert_close(got, want, rtol=0, atol=1e-3)  # the dynamic path under the same autocast
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-2)  # fp32: bf16 rounding on logits of size ~0.5


def test_decode_step_rejects_wrong_shapes():
    model = tiny()
    with pytest.raises(ValueError, match="decode_step"):
        model.decode_step(ids(2, 2), torch.tensor(0), model.new_kv_cache(2))
    with pytest.raises(ValueError, match="decode_step"):
        model.decode_step(ids(3, 1), torch.tensor(0), model.new_kv_cache(2))


def test_kv_cache_overflow_and_batch_mismatch_raise():
    model = tiny()
    cache = KVCache(model.config, 2, "cpu", torch.float32)
    model(ids(2, 16), kv_cache=cache)
    with pytest.raises(ValueError, match="block_size"):
        model(ids(2, 1), kv_cache=cache)
    with pytest.raises(ValueError, match="block_size"):
        model(ids(1, 17))
    with pytest.raises(ValueError, match="rows"):
        model(ids(3, 1), kv_cache=model.new_kv_cache(2))


def test_rows_do_not_influence_each_other():
    model = tiny()
    x = ids(4, 10, seed=7)
    torch.testing.assert_close(model(x)[1:2], model(x[1:2]), rtol=0, atol=1e-5)


def test_dropout_only_in_training_mode():
    model = tiny(dropout=0.5)
    x = ids(2, 8)
    torch.testing.assert_close(model(x), model(x))  # eval: deterministic
    model.train()
    assert not torch.allclose(model(x), model(x))


@pytest.mark.parametrize("kw, option", [
    ({"block_size": 1}, "model.block_size"),
    ({"n_layer": 0}, "model.n_layer"),
    ({"n_head": 0}, "model.n_head"),
    ({"n_embd": 30, "n_head": 4}, "model.n_embd"),
    ({"dropout": 1.0}, "model.dropout"),
    ({"dropout": -0.1}, "model.dropout"),
    ({"vocab_size": -1}, "model.vocab_size"),
])
def test_config_validation_names_the_option(kw, option):
    with pytest.raises(ValueError, match=option):
        GPTConfig(**kw)


def test_building_needs_a_vocabulary():
    with pytest.raises(ValueError, match="model.vocab_size"):
        GPT(GPTConfig(), torch.Generator().manual_seed(0))
