"""The engine against finite differences and closed-form NumPy (no PyTorch needed)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinyattn as ta
from helpers import assert_close, t64

RNG = np.random.default_rng(0)


def positive(*shape):
    return ta.tensor(RNG.uniform(0.5, 2.0, shape), requires_grad=True)


# -- the broadcasting rule ---------------------------------------------------------------------

def test_unbroadcast_sums_added_and_size_one_axes():
    g = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(ta.unbroadcast(g, (3, 4)), g.sum(0))
    np.testing.assert_array_equal(ta.unbroadcast(g, (3, 1)), g.sum((0, 2))[:, None])
    np.testing.assert_array_equal(ta.unbroadcast(g, (1, 1, 4)), g.sum((0, 1)).reshape(1, 1, 4))
    np.testing.assert_array_equal(ta.unbroadcast(g, ()), g.sum())
    assert ta.unbroadcast(g, (2, 3, 4)) is g
    with pytest.raises(ValueError, match="cannot unbroadcast"):
        ta.unbroadcast(g, (5, 2, 3, 4))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_unbroadcast_of_a_broadcast_is_a_sum(data):
    """For y = broadcast(x), <g, broadcast(x)> = <unbroadcast(g), x>: the adjoint identity."""
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=3))
    target = data.draw(hnp.broadcastable_shapes(shape, min_dims=len(shape), max_dims=4, max_side=3))
    full = np.broadcast_shapes(shape, target)
    x = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-3, 3)))
    g = data.draw(hnp.arrays(np.float64, full, elements=st.floats(-3, 3)))
    lhs = np.sum(g * np.broadcast_to(x, full))
    rhs = np.sum(ta.unbroadcast(g, shape) * x)
    assert ta.unbroadcast(g, shape).shape == shape
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)


# -- every op, gradchecked in float64 ------------------------------------------------------------

BINARY_CASES = [
    ((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((4,), (2, 3, 4)), ((), (2, 3)),
]


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow"])
@pytest.mark.parametrize("shapes", BINARY_CASES, ids=str)
def test_binary_ops_gradcheck_with_broadcasting(op, shapes):
    a, b = positive(*shapes[0]), positive(*shapes[1])
    fn = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
          "div": lambda x, y: x / y, "pow": lambda x, y: x ** y}[op]
    assert ta.gradcheck(fn, (a, b))


@pytest.mark.parametrize("fn", [
    lambda x: 2.0 + x, lambda x: 2.0 - x, lambda x: 3.0 * x, lambda x: 2.0 / x, lambda x: x ** 3,
    lambda x: x ** 0.5, lambda x: 2.0 ** x, lambda x: -x, lambda x: x + np.ones((2, 3)),
    lambda x: np.full((2, 3), 2.0) * x, lambda x: np.full((3,), 2.0) / x,
], ids=["radd", "rsub", "rmul", "rdiv", "pow3", "sqrtpow", "rpow", "neg", "ndarray+", "ndarray*", "ndarray/"])
def test_scalar_and_array_operands_on_either_side(fn):
    assert ta.gradcheck(fn, positive(2, 3))


@pytest.mark.parametrize("name,fn", [
    ("exp", lambda x: x.exp()), ("log", lambda x: x.log()), ("sqrt", lambda x: x.sqrt()),
    ("tanh", lambda x: x.tanh()), ("sigmoid", lambda x: x.sigmoid()), ("relu", lambda x: (x - 1.2).relu()),
    ("abs", lambda x: (x - 1.2).abs()),
])
def test_unary_ops_gradcheck(name, fn):
    assert ta.gradcheck(fn, positive(3, 4))


@pytest.mark.parametrize("shapes", [
    ((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
    ((2, 1, 3, 4), (5, 4, 2)), ((5, 3, 4), (1, 4, 2)),
], ids=str)
def test_matmul_gradcheck_and_batch_broadcasting(shapes):
    a, b = t64(RNG, *shapes[0]), t64(RNG, *shapes[1])
    out = a @ b
    np.testing.assert_allclose(out.data, a.data @ b.data)
    assert ta.gradcheck(lambda x, y: x @ y, (a, b))


@pytest.mark.parametrize("dim,keepdim", [(None, False), (0, False), (-1, True), ((0, 2), False), ((-1, -3), True)])
def test_sum_and_mean_over_dims(dim, keepdim):
    x = t64(RNG, 2, 3, 4)
    axis = dim if dim is None or isinstance(dim, int) else tuple(dim)
    np.testing.assert_allclose(x.sum(dim, keepdim).data, x.data.sum(axis=axis, keepdims=keepdim))
    np.testing.assert_allclose(x.mean(dim, keepdim).data, x.data.mean(axis=axis, keepdims=keepdim))
    assert ta.gradcheck(lambda t: t.sum(dim, keepdim), x)
    assert ta.gradcheck(lambda t: t.mean(dim, keepdim), x)


def test_amax_shares_gradient_among_ties_and_max_dim_returns_indices():
    x = ta.tensor([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]], requires_grad=True, dtype=np.float64)
    x.amax().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0.5, 0.5], [0, 0, 0]])
    x.grad = None
    values, indices = x.max(dim=1)
    np.testing.assert_array_equal(values.data, [3.0, 2.0])
    np.testing.assert_array_equal(indices.data, [1, 0])
    values.sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [1, 0, 0]])
    y = t64(RNG, 3, 4, 5)
    assert ta.gradcheck(lambda t: t.amax(dim=(0, 2), keepdim=True), y)
    assert ta.gradcheck(lambda t: t.max(dim=-1).values, y)
    assert ta.gradcheck(lambda t: t.max(), y)


def test_shape_ops_gradcheck():
    x = t64(RNG, 2, 3, 4)
    for fn in (lambda t: t.reshape(4, 6), lambda t: t.reshape(-1), lambda t: t.transpose(0, 2),
               lambda t: t.permute(2, 0, 1), lambda t: t.unsqueeze(1).squeeze(1), lambda t: t.T,
               lambda t: t.flatten(1), lambda t: t[:, None].expand(2, 5, 3, 4),
               lambda t: t.repeat_interleave(2, dim=1)):
        assert ta.gradcheck(fn, x)
    np.testing.assert_array_equal(x.permute(2, 0, 1).data, np.transpose(x.data, (2, 0, 1)))
    np.testing.assert_array_equal(x.repeat_interleave(2, dim=1).data, np.repeat(x.data, 2, axis=1))


def test_getitem_slices_and_repeated_integer_indices_accumulate():
    x = ta.tensor(np.arange(12.0).reshape(4, 3), requires_grad=True)
    y = x[np.array([0, 2, 0, 0])]  # row 0 three times
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [[3, 3, 3], [0, 0, 0], [1, 1, 1], [0, 0, 0]])
    z = t64(RNG, 4, 5)
    for index in ((slice(1, 3), slice(None, None, 2)), (np.array([3, 3, 1]), np.array([0, 0, 4])),
                  (Ellipsis, 2), (ta.tensor([1, 1, 0]),)):
        assert ta.gradcheck(lambda t, i=index: t[i], z)


def test_masked_fill_and_where():
    x = t64(RNG, 3, 4)
    mask = RNG.random((1, 4)) < 0.5
    out = x.masked_fill(mask, -np.inf)
    assert np.all(np.isneginf(out.data[:, mask[0]])) and np.all(out.data[:, ~mask[0]] == x.data[:, ~mask[0]])
    assert ta.gradcheck(lambda t: t.masked_fill(mask, 7.0), x)
    y = t64(RNG, 4)
    cond = RNG.random((3, 4)) < 0.5
    np.testing.assert_array_equal(ta.where(cond, x, y).data, np.where(cond, x.data, y.data))
    assert ta.gradcheck(lambda a, b: ta.where(cond, a, b), (x, y))
    with pytest.raises(TypeError, match="bool"):
        x.masked_fill(np.ones((3, 4)), 0.0)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        x.masked_fill(np.ones(5, bool), 0.0)


def test_cat_and_stack():
    a, b = t64(RNG, 2, 3), t64(RNG, 2, 5)
    np.testing.assert_array_equal(ta.cat([a, b], dim=1).data, np.concatenate([a.data, b.data], 1))
    assert ta.gradcheck(lambda x, y: ta.cat([x, y], dim=-1), (a, b))
    c = t64(RNG, 2, 3)
    np.testing.assert_array_equal(ta.stack([a, c], dim=1).data, np.stack([a.data, c.data], 1))
    assert ta.gradcheck(lambda x, y: ta.stack([x, y], dim=2), (a, c))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 5\)"):
        ta.stack([a, b])
    with pytest.raises(ValueError, match="cat along dim 0"):
        ta.cat([a, b], dim=0)


def test_gather_gradients_accumulate():
    x = t64(RNG, 3, 4)
    idx = np.array([[0, 0], [3, 1], [2, 2]])
    np.testing.assert_array_equal(x.gather(1, idx).data, np.take_along_axis(x.data, idx, 1))
    assert ta.gradcheck(lambda t: t.gather(1, idx), x)


def test_dtype_cast_is_differentiable():
    x = t64(RNG, 3)
    y = x.float()
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float64 and np.all(x.grad == 1)


# -- backward semantics -------------------------------------------------------------------------

def test_backward_without_gradient_needs_a_scalar():
    x = ta.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar"):
        (x * 2).backward()
    (x * 2).backward(np.ones(3, np.float32))
    np.testing.assert_array_equal(x.grad, [2, 2, 2])
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        (x * 2).backward(np.ones(2))


def test_gradients_accumulate_across_backward_calls_and_zero_grad_resets():
    x = ta.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [2 + 3, 4 + 3])
    grad_object = x.grad
    (x * 1).sum().backward()
    assert x.grad is grad_object, "accumulation must be in place (+=)"


def test_a_second_backward_through_another_output_of_the_same_graph():
    x = ta.tensor([1.0, 2.0, 3.0], requires_grad=True, dtype=np.float64)
    h = (x * x).exp()  # shared intermediate
    out1, out2 = h.sum(), (h * 2.0).mean()
    out1.backward()
    g1 = x.grad.copy()
    x.grad = None
    out2.backward()
    g2 = x.grad.copy()
    expected = 2 * x.data * np.exp(x.data ** 2)
    np.testing.assert_allclose(g1, expected)
    np.testing.assert_allclose(g2, expected * 2 / 3)
    x.grad = None
    out1.backward()  # the graph is intact: the same gradient again
    np.testing.assert_allclose(x.grad, expected)


def test_diamond_graph_counts_each_path_once():
    x = ta.tensor(3.0, requires_grad=True, dtype=np.float64)
    a = x * 2.0
    y = a * a + a  # dy/dx = (2a + 1) * 2
    y.backward()
    assert x.grad == pytest.approx((2 * 6 + 1) * 2)


def test_deep_chain_does_not_hit_the_recursion_limit():
    x = ta.tensor(1.0, requires_grad=True, dtype=np.float64)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert x.grad == pytest.approx(1.0001 ** 10_000, rel=1e-9)


def test_float32_stays_float32_and_float64_stays_float64():
    for dtype in (np.float32, np.float64):
        x = ta.tensor(RNG.standard_normal((3, 4)), requires_grad=True, dtype=dtype)
        w = ta.tensor(RNG.standard_normal((4, 2)), requires_grad=True, dtype=dtype)
        y = ((x @ w).tanh() * 2.0 + 1.0).exp().mean() / 3.0 - 0.5
        y = y + (x.sqrt() if False else x.abs()).sum() ** 2
        assert y.dtype == dtype
        y.backward()
        assert x.grad.dtype == dtype and w.grad.dtype == dtype


def test_no_grad_builds_no_graph_and_detach_cuts_it():
    x = ta.randn(3, requires_grad=True)
    with ta.no_grad():
        y = x * 2
    assert not y.requires_grad and y.parents == ()
    assert ta.is_grad_enabled()
    z = (x * 2).detach()
    assert not z.requires_grad and np.shares_memory(z.data, (z * 1).data) is False
    with pytest.raises(RuntimeError, match="does not require grad"):
        z.sum().backward()


def test_retain_grad_keeps_an_intermediate_gradient():
    x = ta.tensor([1.0, 2.0], requires_grad=True)
    h = (x * 3.0).retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad, 2 * h.data)
    np.testing.assert_allclose(x.grad, 18 * x.data)


def test_op_names_and_parents_describe_the_graph():
    x = ta.randn(2, 3, requires_grad=True)
    w = ta.randn(3, 3, requires_grad=True)
    y = (x @ w + 1.0).tanh()
    assert y.op == "tanh" and y.parents[0].op == "add" and y.parents[0].parents[0].op == "matmul"
    assert x.op == "" and x.is_leaf


# -- construction, errors, randomness ------------------------------------------------------------

def test_tensor_factory_dtypes_like_pytorch():
    assert ta.tensor([1.0, 2.0]).dtype == np.float32
    assert ta.tensor([1, 2]).dtype == np.int64
    assert ta.tensor([True]).dtype == np.bool_
    assert ta.tensor(np.zeros(2)).dtype == np.float64
    assert ta.tensor([1, 2], dtype=np.float64).dtype == np.float64
    assert ta.zeros(2, 3).shape == (2, 3) and ta.ones((2,)).dtype == np.float32
    assert ta.arange(5).dtype == np.int64 and ta.arange(0.0, 1.0, 0.25).shape == (4,)
    with pytest.raises(TypeError, match="floating"):
        ta.tensor([1, 2], requires_grad=True)
    data = np.ones(3)
    t = ta.tensor(data)
    data[0] = 5
    assert t.data[0] == 1, "ta.tensor copies its input"


def test_manual_seed_makes_randn_reproducible():
    ta.manual_seed(123)
    a = ta.randn(4, 4).data.copy()
    ta.manual_seed(123)
    np.testing.assert_array_equal(a, ta.randn(4, 4).data)
    assert not np.array_equal(a, ta.randn(4, 4).data)


def test_shape_errors_name_the_shapes():
    a, b = ta.randn(2, 3), ta.randn(4, 5)
    with pytest.raises(ValueError, match=r"\(2, 3\) @ \(4, 5\)"):
        a @ b
    with pytest.raises(ValueError, match=r"cannot reshape a tensor of shape \(2, 3\)"):
        a.reshape(4, 2)
    with pytest.raises(ValueError, match=r"\(2, 7, 4\) @ \(5, 4, 2\)"):
        ta.randn(2, 7, 4) @ ta.randn(5, 4, 2)
    with pytest.raises(IndexError, match="dim 3"):
        a.sum(3)


def test_item_numpy_and_repr():
    x = ta.tensor([[1.5]])
    assert x.item() == 1.5 and isinstance(x.numpy(), np.ndarray)
    with pytest.raises(ValueError, match="one element"):
        ta.zeros(2).item()
    assert "requires_grad=True" in repr(ta.zeros(2, requires_grad=True))
    y = ta.tensor([1.7, -2.2])
    assert y.long().dtype == np.int64 and y.long().tolist() == [1, -2]
    assert y.bool().tolist() == [True, True] and y.contiguous() is y
    assert y.size() == (2,) and y.size(0) == 2 and y.dim() == 1 and y.numel() == 2 and len(y) == 2


# -- gradcheck itself ----------------------------------------------------------------------------

def _wrong_square(x):
    """x², with a backward that forgets the factor 2."""
    return ta.Tensor.from_op(x.data ** 2, (x,), lambda g: (g * x.data,), "wrong_square")


def test_from_op_records_parents_backward_and_name_only_when_a_graph_is_built():
    x = t64(RNG, 3, 2)
    c = ta.tensor(np.ones((3, 2)))
    y = _wrong_square(x)
    assert y.op == "wrong_square" and y.parents == (x,) and y.requires_grad
    assert ta.Tensor.from_op(c.data * 2, (c,), lambda g: (2 * g,), "double").op == ""  # constant
    with ta.no_grad():
        z = _wrong_square(x)
    assert z.op == "" and z.parents == () and not z.requires_grad


def test_numerical_gradient_is_central_differences():
    x = ta.tensor(np.array([0.5, -1.0, 2.0]))
    got = ta.autograd.numerical_gradient(lambda: float(np.sum(np.sin(x.data))), x, eps=1e-5)
    assert_close(got, np.cos([0.5, -1.0, 2.0]), rtol=1e-9, atol=1e-11)
    assert np.array_equal(x.data, [0.5, -1.0, 2.0]), "the input is restored"


def test_gradcheck_catches_a_wrong_backward_and_names_the_place():
    x = t64(RNG, 3, 2)
    with pytest.raises(AssertionError) as err:
        ta.gradcheck(_wrong_square, x)
    message = str(err.value)
    assert "input 0" in message and "(3, 2)" in message and "analytic" in message and "numeric" in message


def test_gradcheck_runs_in_float64_on_float32_inputs_and_leaves_them_untouched():
    x = ta.randn(4, requires_grad=True)
    before = x.data.copy()
    assert ta.gradcheck(lambda t: (t * t).sum(), x)
    assert x.data.dtype == np.float32 and np.array_equal(before, x.data) and x.grad is None


def test_gradcheck_handles_several_outputs_and_non_tensor_arguments():
    x, y = t64(RNG, 3), t64(RNG, 3)
    assert ta.gradcheck(lambda a, b, k: (a * b * k, a.exp()), (x, y, 2.0))
    with pytest.raises(ValueError, match="requires_grad"):
        ta.gradcheck(lambda a: a * 2, ta.zeros(2))
