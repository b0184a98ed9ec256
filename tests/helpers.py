"""Shared test helpers."""

from __future__ import annotations

import os

import numpy as np
import pytest

import tinyattn as ta


def import_torch():
    """PyTorch, the optional oracle: the calling test module is skipped without it, except in
    CI (TINYATTN_REQUIRE_TORCH=1), where a missing torch is an error rather than a silent skip."""
    if os.environ.get("TINYATTN_REQUIRE_TORCH") == "1":
        import torch

        return torch
    return pytest.importorskip("torch")


def t64(rng: np.random.Generator, *shape, requires_grad: bool = True) -> ta.Tensor:
    """A float64 tinyattn tensor of standard normals."""
    return ta.tensor(rng.standard_normal(shape), requires_grad=requires_grad)


def assert_close(actual, expected, rtol: float = 1e-6, atol: float = 1e-9, what: str = "") -> None:
    """Compare arrays/tensors elementwise with a message naming the worst element."""
    a = actual.data if isinstance(actual, ta.Tensor) else np.asarray(actual)
    e = expected.data if isinstance(expected, ta.Tensor) else np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != expected {e.shape}"
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=what)
