"""nn.functional against finite differences, closed-form NumPy and the same math composed from
primitive ops (the fused backward must equal the composed one)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinyattn as ta
import tinyattn.nn.functional as F
from helpers import assert_close, t64

RNG = np.random.default_rng(0)


def grads_of(fn, *inputs, seed=0):
    """Gradients of sum(w * fn(inputs)) w.r.t. each input (fresh copies), for a fixed random w."""
    xs = [ta.tensor(x.data, requires_grad=True) for x in inputs]
    out = fn(*xs)
    w = np.random.default_rng(seed).standard_normal(out.shape)
    (out * w).sum().backward()
    return out.data, [x.grad for x in xs]


def assert_same_function(fused, composed, *inputs):
    """Fused op and its composition from primitives agree in value and in every gradient."""
    v1, g1 = grads_of(fused, *inputs)
    v2, g2 = grads_of(composed, *inputs)
    assert_close(v1, v2, rtol=1e-10, atol=1e-12, what="forward")
    for i, (a, b) in enumerate(zip(g1, g2)):
        assert_close(a, b, rtol=1e-9, atol=1e-12, what=f"gradient {i}")


# -- linear and activations ----------------------------------------------------------------------

def test_linear_is_x_wt_plus_b_and_gradchecks():
    x, w, b = t64(RNG, 2, 3, 4), t64(RNG, 5, 4), t64(RNG, 5)
    assert_close(F.linear(x, w, b), x.data @ w.data.T + b.data)
    assert ta.gradcheck(F.linear, (x, w, b))
    assert ta.gradcheck(F.linear, (x, w))
    assert_same_function(F.linear, lambda x, w, b: x @ w.T + b, x, w, b)


def test_linear_names_the_shapes_on_mismatch():
    with pytest.raises(ValueError, match=r"input has shape \(2, 3\) but weight has shape \(5, 4\)"):
        F.linear(ta.randn(2, 3), ta.randn(5, 4))
    with pytest.raises(ValueError, match=r"bias has shape \(4,\), expected \(5,\)"):
        F.linear(ta.randn(2, 4), ta.randn(5, 4), ta.randn(4))


def test_erf_matches_math_erf_to_a_few_ulp():
    x = np.concatenate([np.linspace(-7, 7, 20001), np.geomspace(1e-12, 30, 2000), [0.0, np.inf, -np.inf]])
    expected = np.array([math.erf(v) for v in x])
    got = F.erf(x)
    rel = np.abs(got - expected) / np.maximum(np.abs(expected), np.finfo(float).tiny)
    assert rel.max() < 2e-15, f"erf worst relative error {rel.max():.3g} at x={x[np.argmax(rel)]}"
    assert F.erf(np.float32(0.5) * np.ones(3, np.float32)).dtype == np.float32
    big = RNG.standard_normal((300, 700)) * 3  # several blocks, the last one ragged
    got_big = F.erf(big)
    sample = np.unravel_index(np.arange(0, big.size, 97), big.shape)
    expected_big = np.array([math.erf(v) for v in big[sample]])
    assert np.abs(got_big[sample] - expected_big).max() < 4e-16 and got_big.shape == big.shape


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_closed_form_and_gradcheck(approximate):
    x = t64(RNG, 3, 7) * 3.0
    x = ta.tensor(x.data, requires_grad=True)
    if approximate == "none":
        expected = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.data.ravel()])
    else:
        d = x.data.ravel()
        expected = 0.5 * d * (1 + np.tanh(math.sqrt(2 / math.pi) * (d + 0.044715 * d ** 3)))
    assert_close(F.gelu(x, approximate=approximate).data.ravel(), expected, rtol=1e-14, atol=1e-15)
    assert ta.gradcheck(lambda t: F.gelu(t, approximate=approximate), x)
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(x, approximate="fast")


def test_relu_gradcheck():
    x = t64(RNG, 4, 5)
    assert_close(F.relu(x), np.maximum(x.data, 0))
    assert ta.gradcheck(F.relu, x)


# -- softmax family --------------------------------------------------------------------------------

def softmax_by_primitives(x, dim):
    e = (x - x.amax(dim, keepdim=True)).exp()
    return e / e.sum(dim, keepdim=True)


@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_softmax_fused_equals_primitives_and_gradchecks(dim):
    x = t64(RNG, 3, 4, 5)
    assert_same_function(lambda t: F.softmax(t, dim), lambda t: softmax_by_primitives(t, dim), x)
    assert ta.gradcheck(lambda t: F.softmax(t, dim), x)


@pytest.mark.parametrize("dim", [-1, 1])
def test_log_softmax_fused_equals_primitives_and_gradchecks(dim):
    x = t64(RNG, 3, 4, 5)
    composed = lambda t: t - t.amax(dim, keepdim=True) - (t - t.amax(dim, keepdim=True)).exp().sum(dim, keepdim=True).log()  # noqa: E731
    assert_same_function(lambda t: F.log_softmax(t, dim), composed, x)
    assert ta.gradcheck(lambda t: F.log_softmax(t, dim), x)


def test_softmax_handles_huge_inputs_and_fully_masked_rows():
    x = ta.tensor([[1000.0, 1001.0, -np.inf], [-np.inf, -np.inf, -np.inf]], requires_grad=True, dtype=np.float64)
    p = F.softmax(x, -1)
    e = np.exp([-1.0, 0.0])
    assert_close(p.data[0, :2], e / e.sum())
    assert p.data[0, 2] == 0 and np.all(p.data[1] == 0)
    (p * ta.tensor(RNG.standard_normal((2, 3)))).sum().backward()
    assert np.all(np.isfinite(x.grad)) and np.all(x.grad[1] == 0)


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                  elements=st.floats(-50, 50)), st.floats(-100, 100))
def test_softmax_rows_sum_to_one_and_are_shift_invariant(x, shift):
    p = F.softmax(ta.tensor(x), -1).data
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(F.softmax(ta.tensor(x + shift), -1).data, p, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(np.exp(F.log_softmax(ta.tensor(x), -1).data), p, rtol=1e-9, atol=1e-15)


# -- layer norm ------------------------------------------------------------------------------------

def layer_norm_by_primitives(x, n_axes, w, b, eps):
    dims = tuple(range(-n_axes, 0))
    mu = x.mean(dims, keepdim=True)
    var = ((x - mu) ** 2).mean(dims, keepdim=True)
    y = (x - mu) / (var + eps).sqrt()
    return y * w + b if w is not None else y


@pytest.mark.parametrize("normalized_shape", [(5,), (4, 5)])
def test_layer_norm_fused_equals_primitives_and_gradchecks(normalized_shape):
    x, eps = t64(RNG, 3, 4, 5), 1e-5
    w, b = t64(RNG, *normalized_shape), t64(RNG, *normalized_shape)
    n = len(normalized_shape)
    assert_same_function(lambda x, w, b: F.layer_norm(x, normalized_shape, w, b, eps),
                         lambda x, w, b: layer_norm_by_primitives(x, n, w, b, eps), x, w, b)
    assert ta.gradcheck(lambda x, w, b: F.layer_norm(x, normalized_shape, w, b), (x, w, b))
    assert ta.gradcheck(lambda x: F.layer_norm(x, normalized_shape), x)
    out = F.layer_norm(x, normalized_shape).data
    axes = tuple(range(-n, 0))
    np.testing.assert_allclose(out.mean(axes), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axes), 1 / (1 + eps / x.data.var(axes)), rtol=1e-9)


def test_layer_norm_without_a_graph_scales_in_place_and_gives_the_same_numbers():
    """With no backward to feed, x̂ is scaled in place: same output, input untouched; when only
    the affine weights need gradients, x̂ is still kept for them."""
    x, w, b = t64(RNG, 3, 4, 5), t64(RNG, 5), t64(RNG, 5)
    x0 = x.data.copy()
    with_graph = F.layer_norm(ta.tensor(x.data, requires_grad=True), 5, w, b).data
    with ta.no_grad():
        without = F.layer_norm(x, 5, w, b).data
    assert np.array_equal(with_graph, without) and np.array_equal(x.data, x0)
    want = layer_norm_by_primitives(x, 1, w, b, 1e-5)
    g = np.cos(want.data)
    want.backward(g)
    w2, b2 = ta.tensor(w.data, requires_grad=True), ta.tensor(b.data, requires_grad=True)
    F.layer_norm(ta.tensor(x.data), 5, w2, b2).backward(g)  # x needs no gradient, w and b do
    np.testing.assert_allclose(w2.grad, w.grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b2.grad, b.grad, rtol=1e-12, atol=1e-12)


def test_layer_norm_shape_errors():
    with pytest.raises(ValueError, match=r"\(2, 3\) does not end in normalized_shape \(4,\)"):
        F.layer_norm(ta.randn(2, 3), 4)
    with pytest.raises(ValueError, match=r"weight has shape \(2,\), expected \(3,\)"):
        F.layer_norm(ta.randn(2, 3), 3, ta.ones(2))


# -- dropout, embedding, cross-entropy -------------------------------------------------------------

def test_dropout_scales_survivors_and_is_identity_in_eval():
    ta.manual_seed(0)
    x = ta.ones(200, 500)
    y = F.dropout(x, p=0.3, training=True).data
    kept = y != 0
    assert np.allclose(y[kept], 1 / 0.7)
    assert abs(kept.mean() - 0.7) < 0.01
    assert F.dropout(x, 0.3, training=False) is x
    assert np.all(F.dropout(x, 1.0).data == 0)
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            F.dropout(x, p)


def test_dropout_gradient_uses_the_same_mask():
    x = t64(RNG, 6, 7)

    def fn(t):
        ta.manual_seed(5)  # same mask on every evaluation, so finite differences are meaningful
        return F.dropout(t, 0.4)

    assert ta.gradcheck(fn, x)


def test_embedding_rows_repeated_indices_and_padding():
    w = t64(RNG, 6, 3)
    idx = np.array([[0, 2, 0], [5, 2, 2]])
    assert_close(F.embedding(idx, w), w.data[idx])
    out = F.embedding(idx, w, padding_idx=2)
    out.sum().backward()
    expected = np.zeros((6, 3))
    np.add.at(expected, idx.ravel(), 1.0)
    expected[2] = 0
    assert_close(w.grad, expected)
    assert ta.gradcheck(lambda t: F.embedding(idx, t), w)
    with pytest.raises(IndexError, match="index 6 is out of range for 6 embeddings"):
        F.embedding(np.array([1, 6]), w)
    with pytest.raises(TypeError, match="integers"):
        F.embedding(np.array([1.0]), w)


def cross_entropy_numpy(x, t, weight=None, ignore_index=-100, reduction="mean", smoothing=0.0):
    """Closed form on (M, C) logits."""
    C = x.shape[1]
    logp = x - x.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    w = np.ones(C) if weight is None else weight
    keep = t != ignore_index
    ts = np.where(keep, t, 0)
    wt = w[ts] * keep
    loss = -logp[np.arange(len(t)), ts] * wt
    if smoothing:
        loss = (1 - smoothing) * loss - smoothing / C * (logp * w).sum(1) * keep
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / wt.sum()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_closed_form_and_gradcheck(reduction, weighted, smoothing):
    x = t64(RNG, 7, 5)
    t = np.array([0, 4, -100, 2, 2, 1, -100])
    weight = RNG.uniform(0.5, 2, 5) if weighted else None
    got = F.cross_entropy(x, t, weight=weight, reduction=reduction, label_smoothing=smoothing)
    assert_close(got, cross_entropy_numpy(x.data, t, weight, -100, reduction, smoothing), rtol=1e-12)
    assert ta.gradcheck(lambda z: F.cross_entropy(z, t, weight=weight, reduction=reduction,
                                                  label_smoothing=smoothing), x)


def test_cross_entropy_spatial_shape_and_errors():
    x = t64(RNG, 2, 4, 3)  # (N, C, d1)
    t = np.array([[0, 3, 1], [2, 2, -100]])
    flat = np.moveaxis(x.data, 1, -1).reshape(-1, 4)
    assert_close(F.cross_entropy(x, t), cross_entropy_numpy(flat, t.ravel()), rtol=1e-12)
    assert F.cross_entropy(x, t, reduction="none").shape == (2, 3)
    assert ta.gradcheck(lambda z: F.cross_entropy(z, t), x)
    with pytest.raises(IndexError, match="target 4 is out of bounds for 4 classes"):
        F.cross_entropy(x, np.array([[0, 4, 1], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"target must have shape \(2, 3\)"):
        F.cross_entropy(x, np.array([0, 1]))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, t, reduction="avg")
