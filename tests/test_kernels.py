"""The fast kernels equal the readable references they replace, in float64, forward and backward.

``F.scaled_dot_product_attention`` dispatches to ``tinyattn.kernels.attention`` unless
``tinyattn.kernels.disabled()``; both paths must agree on every input kind: mask kinds
(bool, float, 1-D, broadcast, fully masked rows, causal, a differentiable float mask), GQA,
dropout (the same keep mask: both draw it before the dispatch), tiles of any size and threads.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import tinyattn as ta
import tinyattn.nn.functional as F
from tinyattn import kernels
from tinyattn.kernels import tiled_attention as kernel_module
from helpers import assert_close, sdpa_masks, t64

RNG = np.random.default_rng(11)

MASKS = sdpa_masks(RNG)


def qkv(N=2, H=3, L=5, S=7, E=4, Ev=6, Hkv=None):
    Hkv = H if Hkv is None else Hkv
    return t64(RNG, N, H, L, E), t64(RNG, N, Hkv, S, E), t64(RNG, N, Hkv, S, Ev)


def run_both(fn, *inputs, seed=0):
    """[(output, weights, grads)] of fn with the kernel and with the reference, same dropout draws."""
    results = []
    for use_kernel in (True, False):
        xs = [ta.tensor(x.data, requires_grad=True) for x in inputs]
        ta.manual_seed(seed)
        if use_kernel:
            out, w = fn(*xs)
        else:
            with kernels.disabled():
                assert not kernels.ENABLED
                out, w = fn(*xs)
        (out * np.random.default_rng(1).standard_normal(out.shape)).sum().backward()
        results.append((out.data, w.data, [x.grad for x in xs]))
    assert kernels.ENABLED, "disabled() restores the dispatch"
    return results


def assert_paths_equal(results, what=""):
    (o1, w1, g1), (o2, w2, g2) = results
    assert_close(o1, o2, rtol=1e-12, atol=1e-14, what=f"{what} output")
    assert_close(w1, w2, rtol=1e-12, atol=1e-14, what=f"{what} weights")
    for name, a, b in zip("qkvm", g1, g2):
        assert a is not None and b is not None
        assert_close(a, b, rtol=1e-11, atol=1e-13, what=f"{what} d{name}")


@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_kernel_equals_reference_for_every_mask_kind(mask_name, dropout_p):
    mask = MASKS[mask_name]
    results = run_both(lambda a, b, c: F.scaled_dot_product_attention(
        a, b, c, attn_mask=mask, dropout_p=dropout_p, return_weights=True), *qkv())
    assert_paths_equal(results, f"{mask_name}, p={dropout_p}")
    if dropout_p:
        dropped = results[0][1] == 0
        assert 0.15 < dropped.mean() < 0.6, "dropout zeroed some weights, the same ones in both paths"


def test_kernel_equals_reference_causal_scale_and_differentiable_float_mask():
    q, k, v = qkv(L=6, S=6)
    results = run_both(lambda a, b, c: F.scaled_dot_product_attention(
        a, b, c, is_causal=True, scale=0.37, return_weights=True), q, k, v)
    assert_paths_equal(results, "causal")
    fmask = t64(RNG, 2, 1, 6, 6)
    results = run_both(lambda a, b, c, m: F.scaled_dot_product_attention(
        a, b, c, m, return_weights=True), q, k, v, fmask)
    assert_paths_equal(results, "float mask with grad")


def test_kernel_equals_reference_with_gqa_and_fully_masked_rows():
    q, k, v = qkv(H=6, Hkv=2)
    mask = MASKS["bool-full-rows"]
    results = run_both(lambda a, b, c: F.scaled_dot_product_attention(
        a, b, c, mask, enable_gqa=True, return_weights=True), q, k, v)
    assert_paths_equal(results, "gqa")
    for out, w, (dq, _, _) in results:
        assert np.all(out[..., 0, :] == 0) and np.all(w[..., 0, :] == 0) and np.all(dq[..., 0, :] == 0)


def test_reference_matches_closed_form_numpy():
    """The reference itself, against softmax(q kᵀ/√E) v written out in NumPy."""
    q, k, v = qkv()
    with kernels.disabled():
        out, w = F.scaled_dot_product_attention(q, k, v, return_weights=True)
    s = q.data @ np.swapaxes(k.data, -1, -2) / 2.0  # √E = 2
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    assert_close(w, p, rtol=1e-13, atol=1e-15)
    assert_close(out, p @ v.data, rtol=1e-13, atol=1e-15)
    with kernels.disabled():
        assert ta.gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, MASKS["bool"]),
                            qkv(N=1, H=1))


@pytest.mark.parametrize("batch", [(), (4,), (2, 3, 2)], ids=["no-batch", "3-D", "5-D"])
def test_kernel_equals_reference_for_any_number_of_batch_axes(batch):
    q, k, v = (t64(RNG, *batch, n, e) for n, e in ((5, 4), (7, 4), (7, 6)))
    mask = RNG.random(batch[-1:] + (5, 7)) < 0.3  # broadcast over the leading batch axes
    results = run_both(lambda a, b, c: F.scaled_dot_product_attention(
        a, b, c, ~mask, return_weights=True), q, k, v)
    assert_paths_equal(results, f"batch {batch}")


def test_kernel_reads_heads_split_off_a_projection_without_copying_them(monkeypatch):
    """q, k, v as MultiheadAttention makes them, (N, L, H, D) transposed to (N, H, L, D): strided
    views. The kernel hands K and V to matmul as they are (no copy; Q is scaled on the way) and
    gets the reference's values."""
    N, L, H, D = 2, 5, 3, 4
    proj = [RNG.standard_normal((N, L, H * D)) for _ in range(3)]
    heads = [ta.Tensor(x.reshape(N, L, H, D).transpose(0, 2, 1, 3)) for x in proj]
    assert not heads[0].data.flags.c_contiguous and np.shares_memory(heads[0].data, proj[0])
    with kernels.disabled():
        want = F.scaled_dot_product_attention(*heads).data
    seen = []
    real_matmul = np.matmul
    monkeypatch.setattr(kernel_module.np, "matmul", lambda a, b, **kw: (
        seen.append(np.shares_memory(b, proj[1]) or np.shares_memory(b, proj[2])), real_matmul(a, b, **kw))[1])
    got = F.scaled_dot_product_attention(*heads).data
    monkeypatch.undo()
    assert seen == [True, True], "Kᵀ, then V, enter their matmuls as views of the projections"
    assert_close(got, want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("tile_bytes", [8 * 5 * 7 * 3, 8 * 5 * 7 * 2, 8 * 7 * 2, 1])
def test_kernel_tiles_change_nothing(monkeypatch, tile_bytes):
    """A row of matrices per tile, two matrices per tile, a few rows, one row: same values and
    gradients."""
    q, k, v = qkv()
    fmask = ta.tensor(RNG.standard_normal((2, 1, 5, 7)), requires_grad=True)
    bmask = MASKS["bool-full-rows"]

    def run(a, b, c, m):
        out, w = F.scaled_dot_product_attention(a, b, c, m, return_weights=True)
        return out + F.scaled_dot_product_attention(a, b, c, bmask), w

    monkeypatch.setattr(kernel_module, "TILE_BYTES", tile_bytes)
    assert_paths_equal(run_both(run, q, k, v, fmask), f"tiles of {tile_bytes} bytes")


@pytest.mark.parametrize("tile_bytes", [8 * 5 * 7 * 3, 8 * 7 * 2])
def test_kernel_tiles_on_worker_threads_give_the_serial_result(monkeypatch, tile_bytes):
    """Groups of tiles run on two threads (BLAS set to one thread meanwhile, then restored)."""
    q, k, v = qkv()
    bmask = MASKS["bool-full-rows"]
    run = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, bmask, dropout_p=0.2,  # noqa: E731
                                                         return_weights=True)
    monkeypatch.setattr(kernel_module, "TILE_BYTES", tile_bytes)
    serial = run_both(run, q, k, v)[0]
    calls = []
    monkeypatch.setattr(kernel_module, "get_num_threads", lambda: 2)
    monkeypatch.setattr(kernel_module, "set_num_threads", calls.append)
    parallel = run_both(run, q, k, v)[0]
    assert calls == [1, 2, 1, 2], "BLAS goes to one thread per worker and back, forward and backward"
    assert_paths_equal([parallel, serial], "threads")
    assert np.array_equal(parallel[0], serial[0])


def test_erf_kernel_is_what_gelu_uses():
    x = np.linspace(-7, 7, 1001)
    assert F.erf is kernels.erf
    assert_close(F.gelu(ta.tensor(x)), x * 0.5 * (1 + kernels.erf(x / np.sqrt(2))), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("size", [1, 1000, 3 * (1 << 16) + 5], ids=["one", "small", "several-blocks"])
def test_gelu_kernel_equals_the_reference(dtype, size):
    """Blockwise GELU == the reference's full-array formula, forward and backward: the same bits in
    float64; in float32 (whose Φ has the constants folded in) as close as their two errors allow.
    Without a graph it keeps no Φ."""
    x = (np.random.default_rng(size).standard_normal(size) * 4).astype(dtype).reshape(-1, 1)
    results = []
    for use_kernel in (True, False):
        t = ta.tensor(x, requires_grad=True)
        with contextlib.nullcontext() if use_kernel else kernels.disabled():
            y = F.gelu(t)
        y.backward(np.cos(x))
        results.append((y.data, t.grad))
    (yk, gk), (yr, gr) = results
    assert yk.dtype == yr.dtype == dtype and yk.shape == x.shape
    if dtype == np.float64:
        assert np.array_equal(yk, yr) and np.array_equal(gk, gr)
    else:  # both Φs are within 2.6e-7 of the exact one (the test below and the erf test)
        bound = 5.2e-7 * np.maximum(1, np.abs(x))
        assert np.all(np.abs(yk - yr) <= bound) and np.all(np.abs(gk - gr) <= bound)
    out, cdf = kernels.gelu(x, keep_cdf=False)
    assert cdf is None and np.array_equal(out, yk)
    with ta.no_grad():
        assert np.array_equal(F.gelu(ta.tensor(x, requires_grad=True)).data, yk)


def test_float32_gelu_kernel_is_within_a_quarter_micro_of_the_exact_cdf():
    import math

    x = np.concatenate([np.linspace(-12, 12, 40001), [0.0, -0.0, 5.65, -5.66, 1e-30]]).astype(np.float32)
    y, cdf = kernels.gelu(x)
    exact = np.array([0.5 * (1 + math.erf(float(v) / math.sqrt(2))) for v in x])
    assert cdf.dtype == y.dtype == np.float32
    assert np.abs(cdf - exact).max() < 2.6e-7
    assert np.all((0 <= cdf) & (cdf <= 1)) and cdf[0] == 0 and cdf[-6] == 1
    assert np.abs(y - x * exact).max() / np.abs(x).max() < 2.6e-7


def test_float32_erf_is_within_half_a_micro_of_math_erf():
    import math

    x = np.concatenate([np.linspace(-9, 9, 20001), [0.0, -0.0, 4.0, -4.0, 1e-30]]).astype(np.float32)
    got = kernels.erf(x)
    want = np.array([math.erf(float(v)) for v in x])
    assert got.dtype == np.float32
    assert np.abs(got - want).max() < 5e-7
    assert np.array_equal(kernels.erf(-x), -got), "odd, exactly"
    assert np.all(np.abs(got) <= 1)
