"""Every engine op against PyTorch: values and gradients, float64, broadcasting included."""

from __future__ import annotations

import numpy as np
import pytest

import tinyattn as ta
from helpers import assert_close, import_torch, torch_parity

torch = import_torch()


RNG = np.random.default_rng(1)


def pos(*shape):
    return RNG.uniform(0.5, 2.0, shape)


def normal(*shape):
    return RNG.standard_normal(shape)


CASES = {
    "add-broadcast": (lambda a, b: a + b, lambda a, b: a + b, [normal(2, 1, 4), normal(3, 1)]),
    "sub-scalar-left": (lambda a: 3.0 - a, lambda a: 3.0 - a, [normal(3, 4)]),
    "mul-broadcast": (lambda a, b: a * b, lambda a, b: a * b, [normal(4,), normal(2, 3, 4)]),
    "div-both": (lambda a, b: a / b, lambda a, b: a / b, [normal(3, 4), pos(3, 1)]),
    "rdiv": (lambda a: 2.0 / a, lambda a: 2.0 / a, [pos(3, 4)]),
    "pow-scalar": (lambda a: a ** 3, lambda a: a ** 3, [normal(3, 4)]),
    "pow-tensor": (lambda a, b: a ** b, lambda a, b: a ** b, [pos(3, 4), normal(4,)]),
    "rpow": (lambda a: 2.0 ** a, lambda a: 2.0 ** a, [normal(3, 4)]),
    "neg": (lambda a: -a, lambda a: -a, [normal(5)]),
    "matmul-2d": (lambda a, b: a @ b, lambda a, b: a @ b, [normal(3, 4), normal(4, 5)]),
    "matmul-batch-broadcast": (lambda a, b: a @ b, lambda a, b: a @ b, [normal(2, 1, 3, 4), normal(5, 4, 2)]),
    "matmul-vec": (lambda a, b: a @ b, lambda a, b: a @ b, [normal(4), normal(2, 4, 3)]),
    "matmul-mat-vec": (lambda a, b: a @ b, lambda a, b: a @ b, [normal(2, 3, 4), normal(4)]),
    "sum-dims": (lambda a: a.sum((0, -1)), lambda a: a.sum((0, -1)), [normal(2, 3, 4)]),
    "sum-keepdim": (lambda a: a.sum(1, keepdim=True), lambda a: a.sum(1, keepdim=True), [normal(2, 3, 4)]),
    "mean-all": (lambda a: a.mean(), lambda a: a.mean(), [normal(2, 3, 4)]),
    "mean-neg": (lambda a: a.mean(-2), lambda a: a.mean(-2), [normal(2, 3, 4)]),
    "amax": (lambda a: a.amax(-1), lambda a: a.amax(-1), [np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]])]),
    "max-all-ties": (lambda a: a.max(), lambda a: a.max(), [np.array([[1.0, 3.0], [3.0, 0.0]])]),
    "max-dim": (lambda a: a.max(dim=1).values, lambda a: a.max(dim=1).values, [normal(3, 5)]),
    "exp": (lambda a: a.exp(), lambda a: a.exp(), [normal(3, 4)]),
    "log": (lambda a: a.log(), lambda a: a.log(), [pos(3, 4)]),
    "sqrt": (lambda a: a.sqrt(), lambda a: a.sqrt(), [pos(3, 4)]),
    "tanh": (lambda a: a.tanh(), lambda a: a.tanh(), [normal(3, 4)]),
    "sigmoid": (lambda a: a.sigmoid(), lambda a: a.sigmoid(), [normal(3, 4)]),
    "relu": (lambda a: a.relu(), lambda a: a.relu(), [normal(3, 4)]),
    "reshape": (lambda a: a.reshape(4, 6), lambda a: a.reshape(4, 6), [normal(2, 3, 4)]),
    "transpose": (lambda a: a.transpose(0, -1), lambda a: a.transpose(0, -1), [normal(2, 3, 4)]),
    "permute": (lambda a: a.permute(1, 2, 0), lambda a: a.permute(1, 2, 0), [normal(2, 3, 4)]),
    "getitem-slice": (lambda a: a[1:, ::2], lambda a: a[1:, ::2], [normal(3, 5)]),
    "getitem-repeat": (lambda a: a[np.array([0, 2, 0])], lambda a: a[torch.tensor([0, 2, 0])], [normal(3, 5)]),
    "masked_fill": (lambda a: a.masked_fill(np.eye(3, dtype=bool), -2.0),
                    lambda a: a.masked_fill(torch.eye(3, dtype=torch.bool), -2.0), [normal(2, 3, 3)]),
    "where": (lambda a, b: ta.where(np.tri(3, dtype=bool), a, b),
              lambda a, b: torch.where(torch.tensor(np.tri(3, dtype=bool)), a, b), [normal(3, 3), normal(3)]),
    "cat": (lambda a, b: ta.cat([a, b], 1), lambda a, b: torch.cat([a, b], 1), [normal(2, 3), normal(2, 4)]),
    "stack": (lambda a, b: ta.stack([a, b], -1), lambda a, b: torch.stack([a, b], -1), [normal(2, 3), normal(2, 3)]),
    "repeat_interleave": (lambda a: a.repeat_interleave(3, 1), lambda a: a.repeat_interleave(3, 1), [normal(2, 2, 4)]),
    "expand": (lambda a: a.expand(4, 2, 3), lambda a: a.expand(4, 2, 3), [normal(1, 2, 3)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_op_matches_pytorch(name):
    fn_ta, fn_torch, arrays = CASES[name]
    torch_parity(fn_ta, fn_torch, arrays)


def test_float32_results_match_pytorch_float32():
    a, b = normal(8, 16).astype(np.float32), normal(16, 4).astype(np.float32)
    out_ta = (ta.tensor(a) @ ta.tensor(b)).tanh()
    out_t = (torch.tensor(a) @ torch.tensor(b)).tanh()
    assert out_ta.dtype == np.float32
    assert_close(out_ta, out_t.numpy(), rtol=1e-5, atol=1e-6)
