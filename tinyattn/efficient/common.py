"""The checks and helpers every efficient-attention variant shares (public within the package)."""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..autograd import Tensor
from ..nn import functional as F

__all__ = ["check_qkv", "flat", "check_int", "empty_attention", "dense_attention"]


def check_qkv(name: str, q: Tensor, k: Tensor, v: Tensor) -> None:
    """query (..., N, d), key (..., S, d), value (..., S, dv) with equal leading dims and dtype.

    The checks SDPA makes (ranks, key dim, sequence lengths), then what these kernels add.
    """
    try:
        F.check_qkv(q, k, v, enable_gqa=False)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    if not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
        raise ValueError(f"{name}: query {q.shape}, key {k.shape} and value {v.shape} must share "
                         f"their leading (batch, head) dims")
    if not q.dtype == k.dtype == v.dtype or not np.issubdtype(q.dtype, np.floating):
        raise TypeError(f"{name}: query, key and value must share one float dtype, got "
                        f"{q.dtype}, {k.dtype}, {v.dtype}")


def flat(t: Tensor) -> np.ndarray:
    """(..., T, D) -> (G, T, D), G the product of the leading dims (a view when possible)."""
    return t.data.reshape((math.prod(t.shape[:-2]),) + t.shape[-2:])


def check_int(op: str, name: str, value, minimum: int) -> int:
    """``value`` as an int ≥ ``minimum``: a TypeError for a non-number, a ValueError otherwise."""
    what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be {what}, got {value!r}")
    if not math.isfinite(value) or int(value) != value or value < minimum:
        raise ValueError(f"{op}: {name} must be {what}, got {value!r}")
    return int(value)


def empty_attention(op: str, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """No queries or no keys: an empty output, or zeros (no key to average), as SDPA gives."""
    out = np.zeros(q.shape[:-1] + v.shape[-1:], q.dtype)  # (..., N, dv)
    zeros = lambda g: tuple(np.zeros(t.shape, g.dtype) for t in (q, k, v))  # noqa: E731
    return Tensor.from_op(out, (q, k, v), zeros, op)



def dense_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None,
                    is_causal: bool = False, scale: float | None = None) -> np.ndarray:
    """Plain softmax attention in NumPy, the arena's and the claims' reference.

    q (..., L, d), k (..., S, d), v (..., S, dv), mask (L, S) bool or None (True = may attend)
    -> (..., L, dv). softmax(scale · q kᵀ masked) v, computed with the whole (L, S) score matrix;
    a query that may attend no key gets zeros, as in ``scaled_dot_product_attention``.
    """
    q, k, v = (np.asarray(getattr(t, "data", t)) for t in (q, k, v))
    L, S = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    allowed = np.ones((L, S), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if is_causal:
        allowed = allowed & np.tril(np.ones((L, S), dtype=bool))
    a = scale * (q @ np.swapaxes(k, -1, -2))  # (..., L, S) scores
    a = np.where(allowed, a, -np.inf)
    top = np.max(a, axis=-1, keepdims=True)
    p = np.exp(a - np.where(np.isfinite(top), top, 0))  # (..., L, S)
    total = p.sum(axis=-1, keepdims=True)
    p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    return p @ v  # (..., L, dv)
