"""float16 inputs: every op whose intermediates overflow float16 (max 65504) computes in float32.

Each op gets float16 inputs whose intermediates overflow (|x| up to 12 for GELU and exp, rows of
size 384 with values near 300 for layer_norm, long rows for softmax), and must give the float64
answer rounded to float16 (within a few float16 ulp), with gradients, and no NaN or inf.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest

import tinyattn as ta
import tinyattn.kernels as kernels
import tinyattn.nn.functional as F
import tinyattn.pretrained as pretrained

RTOL, ATOL = 4e-3, 2e-3  # a few float16 ulp (2^-10 relative), with room for float32 rounding of long sums


def run(op, arrays, dtype):
    """op(*tensors) on copies in ``dtype`` -> (output, gradients) for a fixed random cotangent."""
    ts = [ta.tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    out = op(*ts)
    g = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    out.backward(g if out.ndim else None)
    return out, [t.grad for t in ts]


def check_half(op, arrays, scale=1.0):
    """float16 result and gradients equal the float64 ones (to float16 accuracy), none NaN."""
    arrays = [a.astype(np.float16).astype(np.float64) for a in arrays]  # exactly representable
    out16, grads16 = run(op, arrays, np.float16)
    out64, grads64 = run(op, arrays, np.float64)
    assert out16.dtype == np.float16
    for got, want, what in [(out16.data, out64.data, "output")] + [
            (g16, g64, f"gradient {i}") for i, (g16, g64) in enumerate(zip(grads16, grads64))]:
        assert got.dtype == np.float16, what
        assert np.isfinite(got).all(), f"{what}: {np.sum(~np.isfinite(got))} not finite"
        tol = ATOL * scale * max(1.0, np.abs(want).max())
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=RTOL, atol=tol, err_msg=what)


RNG = np.random.default_rng(0)
WIDE = np.linspace(-12, 12, 97)  # GELU and exp overflow float16 beyond |x| ≈ 5


@pytest.mark.parametrize("fast", [True, False], ids=["kernel", "reference"])
def test_gelu_exact_in_float16(fast):
    with kernels.disabled() if not fast else contextlib.nullcontext():
        check_half(lambda x: F.gelu(x), [WIDE])
        y = F.gelu(ta.tensor(np.array([-3.0], np.float16)))
        assert y.item() < 0  # Φ(-3) is 0.00135, not 0: the result is -0.00405, not -0


def test_gelu_tanh_in_float16():
    check_half(lambda x: F.gelu(x, approximate="tanh"), [np.linspace(-300, 300, 121)])  # x³ and x² overflow


def test_erf_of_float16():
    x = WIDE.astype(np.float16)
    got = kernels.erf(x)
    assert got.dtype == np.float16
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    np.testing.assert_allclose(got.astype(np.float64), want, atol=1e-3)


def test_softmax_and_log_softmax_in_float16():
    x = RNG.uniform(-12, 12, (3, 70000))  # a row sum of exp() may pass 65504
    check_half(lambda t: F.softmax(t, dim=-1), [x[:, :2000]])
    check_half(lambda t: F.log_softmax(t, dim=-1), [x[:, :2000]], scale=4.0)
    p = F.softmax(ta.tensor(np.zeros((1, 70000), np.float16)), dim=-1)  # 70000 ones sum past 65504
    assert (p.data == np.float16(1 / 70000)).all()  # 1/70000 rounded to float16 (a subnormal)


def test_layer_norm_in_float16():
    x = RNG.normal(300.0, 50.0, (4, 384))  # Σ x̂² over 384 values near 300 passes 65504
    w, b = RNG.normal(1, 0.1, 384), RNG.normal(0, 0.1, 384)
    check_half(lambda t, w_, b_: F.layer_norm(t, (384,), w_, b_), [x, w, b], scale=4.0)


def test_linear_and_cross_entropy_in_float16():
    x, w = RNG.normal(0, 1, (5, 300)), RNG.normal(0, 1, (7, 300))
    check_half(lambda a, b: F.linear(a, b), [x, w], scale=2.0)
    logits, target = RNG.uniform(-12, 12, (6, 9)), np.array([0, 3, 8, 1, 2, 5])
    check_half(lambda t: F.cross_entropy(t, target), [logits])
    check_half(lambda t: F.cross_entropy(t, target, reduction="none", label_smoothing=0.1), [logits])


@pytest.mark.parametrize("fast", [True, False], ids=["kernel", "reference"])
def test_attention_in_float16(fast):
    q, k, v = (RNG.normal(0, 1, (2, 2, 5, 8)) * 6 for _ in range(3))  # scores up to ~100: exp overflows
    with kernels.disabled() if not fast else contextlib.nullcontext():
        check_half(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), [q, k, v])
    check_half(lambda a, b, c: F.attention_by_primitives(a, b, c)[0], [q, k, v])


def test_pretrained_model_in_float16():
    if not pretrained.is_available():
        pytest.skip("the pretrained model is not available (see tests/test_pretrained.py)")
    sentences = ["The cat sat on the mat.", "A dog ran across the park!", "Quantum chromodynamics."]
    e32 = pretrained.load()[0].encode(sentences)
    e16 = pretrained.load(dtype=np.float16)[0].encode(sentences)
    assert e16.dtype == np.float16 and np.isfinite(e16).all()
    e16 = e16.astype(np.float32)
    cosine = (e32 * e16).sum(1) / np.linalg.norm(e32, axis=1) / np.linalg.norm(e16, axis=1)
    assert cosine.min() > 0.999, cosine
