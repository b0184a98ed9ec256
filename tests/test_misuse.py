"""Misuse of the engine, the nn modules and generation: each input gets PyTorch's answer where PyTorch
has one, else a clear error naming the value and what was expected (never a NumPy-internal crash
and never a silent wrong result). One test per misbehaviour found in issue 26."""

from __future__ import annotations

import numpy as np
import pytest

import tinyattn as ta
from tinyattn.autograd import Tensor
from helpers import import_torch


# ----------------------------------------------------------------------------------------------
# Tensor.from_op checks what a backward returns (the mistake notebook 01's "write your own op" invites)
# ----------------------------------------------------------------------------------------------

def cube(x, backward):
    return Tensor.from_op(x.data ** 3, (x,), backward, "cube")


def test_a_bare_array_instead_of_a_one_tuple_is_refused_naming_the_op():
    x = ta.tensor(np.arange(1.0, 7.0).reshape(2, 3), requires_grad=True)
    with pytest.raises(TypeError, match=r"'cube'.*not a tuple.*return \(grad,\)"):
        cube(x, lambda g: 3 * x.data ** 2 * g).sum().backward()
    assert x.grad is None  # nothing was accumulated


def test_the_wrong_number_of_gradients_is_refused():
    x = ta.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match=r"'cube' returned 2 gradients for its 1 input"):
        cube(x, lambda g: (g, g)).sum().backward()


def test_a_gradient_of_another_shape_is_refused_even_if_it_broadcasts():
    x = ta.tensor(np.ones((2, 3)), requires_grad=True)
    for wrong in (np.ones(3), np.ones((1, 3)), np.ones(()), np.ones((3, 2))):
        with pytest.raises(ValueError, match=r"'cube'.*shape \(.*input 0, which has shape \(2, 3\)"):
            cube(x, lambda g, w=wrong: (w,)).sum().backward()


def test_a_correct_custom_op_still_works_and_none_means_no_gradient():
    x = ta.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = ta.tensor(np.array([3.0, 4.0]), requires_grad=True)
    out = Tensor.from_op(x.data * 2, (x, y), lambda g: (2 * g, None), "double_first")
    out.sum().backward()
    assert x.grad.tolist() == [2.0, 2.0] and y.grad is None


# ----------------------------------------------------------------------------------------------
# pow at 0 and gather's indices, against PyTorch
# ----------------------------------------------------------------------------------------------

def test_x_to_the_zero_has_gradient_zero_at_zero_like_torch():
    torch = import_torch()
    data = np.array([0.0, 0.0, 2.0, -1.5])
    for exponent in (0.0, 0, 1.0, 2.0):
        x = ta.tensor(data, requires_grad=True)
        (x ** exponent).sum().backward()
        tx = torch.tensor(data, requires_grad=True)
        (tx ** exponent).sum().backward()
        np.testing.assert_array_equal(x.grad, tx.grad.numpy(), err_msg=f"x ** {exponent}")
    x, e = ta.tensor(data, requires_grad=True), ta.tensor(np.array([0.0, 2.0, 0.0, 3.0]), requires_grad=True)
    (x ** e).sum().backward()
    tx, te = torch.tensor(data, requires_grad=True), torch.tensor(e.data, requires_grad=True)
    (tx ** te).sum().backward()
    np.testing.assert_array_equal(x.grad, tx.grad.numpy())


def test_gather_refuses_what_torch_refuses_and_reads_a_corner_like_torch():
    torch = import_torch()
    data = np.arange(6.0).reshape(2, 3)
    x = ta.tensor(data)
    with pytest.raises(IndexError, match=r"index -1 is out of bounds for dimension 1 with size 3"):
        x.gather(1, np.array([[0], [-1]]))
    with pytest.raises(IndexError, match=r"index 3 is out of bounds"):
        x.gather(1, np.array([[3], [0]]))
    with pytest.raises(TypeError, match=r"integers, got dtype float"):
        x.gather(1, np.array([[0.0], [1.0]]))
    with pytest.raises(ValueError, match=r"same number of dimensions \(2\)"):
        x.gather(1, np.array([0, 1]))
    idx = np.array([[2, 0]])  # smaller than the input in dim 0: PyTorch reads the corner
    xg = ta.tensor(data, requires_grad=True)
    out = xg.gather(1, idx)
    out.sum().backward()
    tx = torch.tensor(data, requires_grad=True)
    tout = tx.gather(1, torch.tensor(idx))
    tout.sum().backward()
    np.testing.assert_array_equal(out.data, tout.detach().numpy())
    np.testing.assert_array_equal(xg.grad, tx.grad.numpy())
