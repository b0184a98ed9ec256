"""In-place initializers with PyTorch's names and formulas, drawing from tinyattn's generator."""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..autograd import Tensor, get_rng

__all__ = ["uniform_", "normal_", "constant_", "zeros_", "ones_", "xavier_uniform_",
           "kaiming_uniform_", "calculate_fan_in_and_fan_out"]


def _fill(t: Tensor, values: np.ndarray) -> Tensor:
    t.data[...] = values
    return t


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """Fill with U(a, b)."""
    return _fill(tensor, get_rng().uniform(a, b, tensor.shape))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Fill with N(mean, std²)."""
    return _fill(tensor, get_rng().normal(mean, std, tensor.shape))


def constant_(tensor: Tensor, val: float) -> Tensor:
    return _fill(tensor, val)


def zeros_(tensor: Tensor) -> Tensor:
    return _fill(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    return _fill(tensor, 1.0)


def calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple:
    """For a weight (out, in, *kernel): fan_in = in·Πkernel, fan_out = out·Πkernel."""
    if tensor.ndim < 2:
        raise ValueError(f"fan in and fan out need a tensor with at least 2 dims, got {tensor.shape}")
    receptive = int(np.prod(tensor.shape[2:])) if tensor.ndim > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def xavier_uniform_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """U(−a, a) with a = gain·sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    if fan_in + fan_out == 0:
        raise ValueError(f"xavier_uniform_: a tensor of shape {tensor.shape} has fan_in + fan_out = 0; "
                         f"expected at least one nonzero size")
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -a, a)


def kaiming_uniform_(tensor: Tensor, a: float = 0.0) -> Tensor:
    """U(−b, b) with b = sqrt(2 / (1 + a²))·sqrt(3 / fan_in) (leaky-ReLU gain, fan_in mode).

    ``Linear`` uses a = √5, which gives b = 1 / sqrt(fan_in).
    """
    if tensor.data.size == 0:  # e.g. Linear(0, n): nothing to fill (and fan_in may be 0), as PyTorch
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=2)
        return tensor
    fan_in, _ = calculate_fan_in_and_fan_out(tensor)
    bound = math.sqrt(2.0 / (1 + a * a)) * math.sqrt(3.0 / fan_in)
    return uniform_(tensor, -bound, bound)
