"""Tests for models/decode_attention.py (the KV-cache attention kernels of CPU decoding) and models/cbuild.py (the
build of its native C kernel).

Run: `cd /work/main && python -m pytest tests/test_decode_attention.py -q` (CPU; under a second for the native kernel,
which skips without an x86-64 CPU with AVX-512 and a C compiler, plus ~8 s once per process to compile the inductor
kernel, which skips where inductor cannot compile).
"""
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

from models import cbuild, decode_attention
from models.gpt import GPT, GPTConfig
from models.sampling import SampleConfig, generate_documents

DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def native():
    if not decode_attention.native():
        pytest.skip("no native kernel here (it needs an x86-64 CPU with AVX-512 and a C compiler)")


@pytest.fixture
def no_native(monkeypatch):
    """This test runs as on a CPU without the native kernel (the process's loaded library is restored after)."""
    monkeypatch.setitem(decode_attention._STATE, "native", None)


@pytest.fixture
def compiled_kernel(no_native):
    """The inductor-compiled kernel (compiled once per process, ~8 s cold): skip where it cannot be built."""
    if decode_attention._compiled() is None:
        pytest.skip("torch.compile cannot build the CPU kernel here (no C++ compiler?)")


def cache_views(B, H, t, D, dtype, capacity=None, seed=11):
    """q (B, H, 1, D) fp32 as a head view of a fused qkv output, k and v the first t slots of two caches of
    `capacity` slots (the layout GPT's cached forward passes): the kernels must read strided views in place."""
    g = gen(seed)
    capacity = capacity or t + 5
    q = torch.randn(B, 1, 3 * H * D, generator=g)[..., : H * D].view(B, 1, H, D).transpose(1, 2)
    k, v = (torch.randn(B, H, capacity, D, generator=g).to(dtype)[:, :, :t] for _ in range(2))
    return q, k, v


def reference(q, k, v):
    return F.scaled_dot_product_attention(q.double(), k.double(), v.double()).float()  # fp64 on the cached values


# head sizes below, at and between multiples of 16 (masked loads), positions below, at and past multiples of 16
SHAPES = [(3, 2, 7, 16), (1, 1, 1, 32), (2, 3, 16, 64), (64, 4, 300, 32), (2, 2, 33, 128), (1, 2, 5, 256),
          (2, 4, 17, 24), (3, 2, 9, 8), (1, 1, 40, 1), (2, 2, 31, 200), (1, 2, 37, 255), (2, 1, 18, 241)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, H, t, D", SHAPES)
def test_native_kernel_equals_attention_on_the_cached_values(native, dtype, B, H, t, D):
    q, k, v = cache_views(B, H, t, D, dtype)
    with torch.inference_mode():
        got = decode_attention.attend(q, k, v)
        op = torch.ops.closedloop.decode_attention(q, k, v)
    assert got.dtype == torch.float32 and got.shape == (B, H, 1, D) and got.is_contiguous()
    torch.testing.assert_close(got, reference(q, k, v), rtol=2e-6, atol=2e-6)  # fp32 math, only the order differs
    assert torch.equal(op, got)


def test_native_kernel_is_not_upset_by_extreme_scores(native):
    """Scores 10⁴ apart: the far ones get weight 0 (clamped exp), the result is the top position's value; all equal
    keys give the plain mean of the values."""
    B, H, t, D = 2, 2, 40, 16
    q = torch.zeros(B, H, 1, D)
    q[..., 0] = 100.0
    k = torch.zeros(B, H, t, D)
    k[:, :, 17, 0] = 400.0  # score 10⁴ above every other (scale 1/4)
    v = torch.randn(B, H, t, D, generator=gen(1))
    torch.testing.assert_close(decode_attention.attend(q, k, v), v[:, :, 17:18])
    torch.testing.assert_close(decode_attention.attend(torch.zeros(B, H, 1, D), k[:, :, :17], v[:, :, :17]),
                               v[:, :, :17].mean(2, keepdim=True))


def test_native_kernel_propagates_nan_and_inf_as_torch_does(native):
    q, k, v = cache_views(2, 2, 20, 24, torch.float16)
    q, k = q.clone(), k.clone()
    q[0, 1, 0, 3] = float("nan")  # row (0, 1): every score NaN
    q[1, 0, 0, 5], k[1, 0, 7, 5] = 1.0, float("inf")  # row (1, 0): one score +inf (an overflowed fp16 key)
    q[1, 1, 0, 5], k[1, 1, 7, 5] = 1.0, float("-inf")  # row (1, 1): one score -inf, weight 0
    got = decode_attention.attend(q, k, v)
    want = reference(q, k, v)
    assert got[0, 1].isnan().all() and got[1, 0].isnan().all() and not got[1, 1].isnan().any()
    torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-6, equal_nan=True)  # as torch, row for row


GUARD_PAGE_SCRIPT = """
import ctypes, mmap, torch
import torch.nn.functional as F
from models import decode_attention
assert decode_attention.native()
libc = ctypes.CDLL(None)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
page = mmap.PAGESIZE
keep = []
for dtype in (torch.float16, torch.float32):
    for D in (24, 8):  # a full chunk and a tail, a tail only: both read with masked loads at the row's end
        t = page // dtype.itemsize // D
        kv = []
        for _ in range(2):
            m = mmap.mmap(-1, 2 * page)
            addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
            assert libc.mprotect(addr + page, page, 0) == 0  # PROT_NONE: the second page faults on any access
            n = page // dtype.itemsize  # elements in the first page
            buf = torch.frombuffer(m, dtype=dtype, count=n)
            buf.copy_(torch.randn(n))
            kv.append(buf[n - t * D:].view(1, 1, t, D))  # the last position ends at the page boundary
            keep.append(m)
        q = torch.randn(1, 1, 1, D)
        want = F.scaled_dot_product_attention(q.double(), kv[0].double(), kv[1].double()).float()
        torch.testing.assert_close(decode_attention.attend(q, *kv), want, rtol=2e-6, atol=2e-6)
print("ok")
"""


def test_native_kernel_reads_no_byte_past_a_row(native):
    """Keys and values whose last position ends right before an inaccessible page (fp16 and fp32, heads of 24 and 8):
    a read past the D channels of the last position, or past position t, would kill the process; a subprocess, so
    that such a regression fails this test rather than the whole run."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", GUARD_PAGE_SCRIPT], cwd=root, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-1500:])


def test_native_kernel_on_two_threads_equals_one(native):
    q, k, v = cache_views(5, 3, 50, 40, torch.float16)  # 15 rows split unevenly over the threads
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = decode_attention.attend(q, k, v)
        torch.set_num_threads(2)
        two = decode_attention.attend(q, k, v)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)  # each row is computed by one thread, in the same order


def test_native_kernel_is_not_used_for_gradients_or_mismatched_shapes(native):
    q, k, v = cache_views(2, 2, 9, 32, torch.float32)
    q.requires_grad_(True)
    assert not decode_attention._native_fits(q, k, v)
    y = decode_attention.attend(q, k, v)
    y.sum().backward()  # SDPA: differentiable
    assert q.grad is not None and q.grad.abs().sum() > 0
    q = q.detach()
    for kk, vv in [(k[:1], v[:1]), (k[:, :, :, :16], v[:, :, :, :16]), (k, v[:, :, :5])]:
        assert not decode_attention._native_fits(q, kk, vv)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B, H, t, D", [(3, 2, 7, 16), (1, 1, 2, 8), (64, 4, 300, 32)])
def test_compiled_kernel_equals_attention_on_the_cached_values(compiled_kernel, dtype, B, H, t, D):
    q, k, v = cache_views(B, H, t, D, dtype)
    with torch.inference_mode():
        got = decode_attention.attend(q, k, v)
    assert got.dtype == torch.float32 and got.shape == (B, H, 1, D)
    torch.testing.assert_close(got, reference(q, k, v), rtol=1e-5, atol=1e-5)


def test_head_sizes_the_native_kernel_does_not_take_fall_back(native):
    """A head over 256 channels, or a non-contiguous last dimension: the op computes `attention` instead."""
    for D in (272, 512):
        q, k, v = cache_views(2, 2, 9, D, torch.float32)
        assert not decode_attention._native_fits(q, k, v)
        torch.testing.assert_close(torch.ops.closedloop.decode_attention(q, k, v), reference(q, k, v))
    q, k, v = cache_views(2, 2, 9, 32, torch.float32)
    kt = k.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, last dimension strided
    assert not decode_attention._native_fits(q, kt, v)
    torch.testing.assert_close(decode_attention.attend(q, kt, v), reference(q, k, v))


def test_the_op_passes_torch_library_checks(native):
    q, k, v = cache_views(2, 2, 9, 32, torch.float16)
    torch.library.opcheck(torch.ops.closedloop.decode_attention.default, (q, k, v),
                          test_utils=("test_schema", "test_faketensor"))


def test_without_native_an_fp32_cache_goes_to_sdpa_without_compiling(no_native, monkeypatch):
    def no_compile(*a, **kw):
        raise AssertionError("an fp32 cache must not compile a kernel")

    monkeypatch.setattr(torch, "compile", no_compile)
    q, k, v = cache_views(3, 2, 7, 16, torch.float32)
    torch.testing.assert_close(decode_attention.attend(q, k, v), reference(q, k, v))


def test_compiled_warm_up_serves_the_sampler_without_recompiling(compiled_kernel):
    """_compiled() compiles on inputs laid out as the sampler's, so sampling from an fp16 cache adds no graph (as long
    as no step attends over the whole cache, whose slice is contiguous: block_size 64 > 40 tokens here)."""
    from torch._dynamo.utils import counters

    model = GPT(GPTConfig(vocab_size=50, block_size=64, n_layer=2, n_head=2, n_embd=32), gen(0))
    before = counters["stats"]["unique_graphs"]
    generate_documents(model, 6, SampleConfig(max_new_tokens=40, batch_size=3, kv_dtype="fp16"), 0, gen(0))
    assert counters["stats"]["unique_graphs"] == before


def test_failed_kernel_compile_warns_once_and_falls_back_to_sdpa(no_native, monkeypatch):
    def broken(fn, **kw):
        def run(*a):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.delitem(decode_attention._STATE, "fn", raising=False)  # forget the compiled kernel (restored after)
    monkeypatch.setattr(torch, "compile", broken)
    q, k, v = cache_views(2, 2, 5, 8, torch.float16)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        torch.testing.assert_close(decode_attention.attend(q, k, v), reference(q, k, v))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning; the half cache still decodes (SDPA, upcast)
        assert decode_attention._compiled() is None  # remembered: no second compile
        torch.testing.assert_close(decode_attention.attend(q, k, v), reference(q, k, v))


def test_failed_native_build_warns_once_and_decoding_goes_on(monkeypatch):
    def broken(source, flags=()):
        raise cbuild.BuildError("cc failed on decode_attention.c: error: something")

    monkeypatch.setattr(decode_attention, "_STATE", {})  # as in a fresh process (the real state is restored after)
    monkeypatch.setattr(decode_attention, "_cpu_has_avx512", lambda: True)
    monkeypatch.setattr(cbuild, "load", broken)
    q, k, v = cache_views(3, 2, 7, 16, torch.float32)
    with pytest.warns(RuntimeWarning, match="native KV-cache attention kernel is unavailable.*error: something"):
        torch.testing.assert_close(decode_attention.attend(q, k, v), reference(q, k, v))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not decode_attention.native()
        torch.testing.assert_close(decode_attention.attend(q, k, v), reference(q, k, v))


def test_closedloop_native_0_skips_the_native_kernel_silently(monkeypatch):
    monkeypatch.setattr(decode_attention, "_STATE", {})
    monkeypatch.setenv("CLOSEDLOOP_NATIVE", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not decode_attention.native()


# ---- models/cbuild.py ------------------------------------------------------------------------------------------------

def test_cbuild_builds_once_and_rebuilds_when_the_source_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src = tmp_path / "add.c"
    src.write_text("int add(int a, int b) { return a + b; }\n")
    assert cbuild.load(str(src)).add(2, 3) == 5
    built = sorted(os.listdir(cbuild.cache_dir()))
    assert len(built) == 1 and built[0].startswith("add-") and built[0].endswith(".so")
    stamp = os.stat(os.path.join(cbuild.cache_dir(), built[0])).st_mtime_ns
    assert cbuild.load(str(src)).add(4, 5) == 9  # loaded from the cache, not rebuilt
    assert os.stat(os.path.join(cbuild.cache_dir(), built[0])).st_mtime_ns == stamp
    src.write_text("int add(int a, int b) { return a + b + 1; }\n")
    assert cbuild.load(str(src)).add(2, 3) == 6
    assert len(os.listdir(cbuild.cache_dir())) == 2  # no temporary files left behind


def test_cbuild_builds_privately_where_the_cache_cannot_be_written(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))  # makedirs fails, even for root
    monkeypatch.setattr(cbuild.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    src = tmp_path / "add.c"
    src.write_text("int add(int a, int b) { return a + b; }\n")
    assert cbuild.load(str(src)).add(2, 3) == 5
    assert os.listdir(tmp_path / "tmp") == []  # the private folder is gone once the library is loaded


def test_cbuild_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src = tmp_path / "bad.c"
    src.write_text("int f( { return 0; }\n")
    with pytest.raises(cbuild.BuildError) as e:
        cbuild.load(str(src))
    assert "bad.c" in str(e.value) and "error" in str(e.value) and "\n" not in str(e.value)
    assert [f for f in os.listdir(cbuild.cache_dir())] == []  # nothing half-written is left to be loaded
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(cbuild.BuildError, match="no C compiler"):
        cbuild.load(str(src))
    monkeypatch.setenv("CC", '"gcc')  # an unbalanced quote
    with pytest.raises(cbuild.BuildError, match="does not parse"):
        cbuild.load(str(src))


def test_the_traced_cpu_decode_step_calls_the_native_op(native, monkeypatch):
    """GPT.decode_step as torch.compile traces it on a CPU (dynamic shapes, span = pos + 1): attention is one call
    of closedloop::decode_attention per layer, not the written-out math (captured here without inductor)."""
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    native_calls = []
    call = decode_attention._native_call

    def counted(q, k, v):
        native_calls.append(k.dtype)
        return call(q, k, v)

    monkeypatch.setattr(decode_attention, "_native_call", counted)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=48), gen(0)).eval()
    step = torch.compile(type(model).decode_step, backend=capture, dynamic=True)
    cache = model.new_kv_cache(3, dtype=torch.float16)
    x = torch.randint(1, 50, (3, 6), generator=gen(1))
    with torch.inference_mode():
        model(x[:, :5], kv_cache=cache)
        native_calls.clear()  # (the prefill attends over its fresh keys: no cache read)
        got = step(model, x[:, 5:], torch.tensor(5), cache, 6)
        assert native_calls == [torch.float16] * 2  # the op ran the native kernel, once per layer
        cache.pos = 5  # the same step again, eagerly, over the same cache
        want = model(x[:, 5:], kv_cache=cache)[:, -1]
    calls = [n for g in graphs for n in g.graph.nodes if "closedloop.decode_attention" in str(n.target)]
    assert len(calls) == 2  # one per layer
    assert not [n for g in graphs for n in g.graph.nodes if "amax" in str(n.target)]  # not the written-out math
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
