"""nn.functional against torch.nn.functional: values and gradients in float64."""

from __future__ import annotations

import numpy as np
import pytest

import tinyattn.nn.functional as F
from helpers import import_torch, torch_parity

torch = import_torch()
TF = torch.nn.functional
RNG = np.random.default_rng(2)


def n(*shape):
    return RNG.standard_normal(shape)


def test_linear():
    torch_parity(F.linear, TF.linear, [n(2, 3, 4), n(5, 4), n(5)])
    torch_parity(F.linear, TF.linear, [n(7, 4), n(5, 4)])


def test_relu_and_gelu_exact_and_tanh():
    x = n(4, 50) * 4
    torch_parity(F.relu, TF.relu, [x])
    torch_parity(F.gelu, TF.gelu, [x], rtol=1e-12, atol=1e-14)  # float64 round-off
    torch_parity(lambda t: F.gelu(t, approximate="tanh"), lambda t: TF.gelu(t, approximate="tanh"), [x],
            rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dim", [0, -1])
def test_softmax_and_log_softmax(dim):
    x = n(3, 4, 5) * 5
    torch_parity(lambda t: F.softmax(t, dim), lambda t: TF.softmax(t, dim), [x])
    torch_parity(lambda t: F.log_softmax(t, dim), lambda t: TF.log_softmax(t, dim), [x])


def test_layer_norm():
    torch_parity(lambda x, w, b: F.layer_norm(x, (5,), w, b), lambda x, w, b: TF.layer_norm(x, (5,), w, b),
            [n(3, 4, 5) * 3 + 1, n(5), n(5)])
    torch_parity(lambda x, w: F.layer_norm(x, (4, 5), w, None, 1e-3),
            lambda x, w: TF.layer_norm(x, (4, 5), w, None, 1e-3), [n(3, 4, 5), n(4, 5)])


def test_embedding_with_padding_idx():
    idx = np.array([[0, 3, 3], [1, 0, 5]])
    torch_parity(lambda w: F.embedding(idx, w, padding_idx=3),
            lambda w: TF.embedding(torch.tensor(idx), w, padding_idx=3), [n(6, 4)])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(reduction):
    t = np.array([0, 4, -100, 2, 1])
    w = RNG.uniform(0.5, 2.0, 5)
    for kwargs in ({}, {"weight": w}, {"label_smoothing": 0.2}, {"weight": w, "label_smoothing": 0.1},
                   {"ignore_index": 2}):
        tk = np.where(t == -100, 2, t) if "ignore_index" in kwargs else t
        tkw = {k: torch.tensor(v) if k == "weight" else v for k, v in kwargs.items()}
        torch_parity(lambda x: F.cross_entropy(x, tk, reduction=reduction, **kwargs),
                lambda x: TF.cross_entropy(x, torch.tensor(tk), reduction=reduction, **tkw), [n(5, 5)])
    t3 = np.array([[0, 2, 1], [3, -100, 0]])
    torch_parity(lambda x: F.cross_entropy(x, t3, reduction=reduction),
            lambda x: TF.cross_entropy(x, torch.tensor(t3), reduction=reduction), [n(2, 4, 3)])
