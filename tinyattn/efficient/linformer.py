"""Linformer: attention over k projected keys and values instead of S keys.

Wang et al., "Linformer: Self-Attention with Linear Complexity" (2020). Two (k x S) matrices E, F
mix the S keys and values along the sequence into k "virtual" ones:

    out = softmax(scale · Q (E K)ᵀ) (F V),      Q (L, D), E K (k, D), F V (k, dv),

O(L·k·D) time and an (L, k) weight matrix P instead of (L, S). In the model E and F are learned
(``Linformer`` below makes them Parameters for a given S and k); left at None here they are a fixed
seeded Gaussian draw with entries N(0, 1/k). An untrained random projection is a poor
approximation — its error falls as k grows but stays above the size of the output until k nears S
(measured in tests/test_efficient_zoo.py); it is the learned E, F that make Linformer work.

Not causal: E K mixes every position, future ones included, so there is no is_causal form.

Claim: approximate — low rank: the weights the output applies to V are P F, of rank ≤ k. With
k = S and E = F = I it is exact attention.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Tensor
from ..nn import functional as fn
from ..nn.modules import Module, Parameter
from .common import check_int, check_qkv, dense_attention
from .registry import Variant, register

__all__ = ["linformer_attention", "linformer_weights", "linformer_projections", "Linformer"]


def linformer_projections(S: int, proj_len: int, seed: int = 0, dtype=np.float64):
    """The fixed default E, F: two independent (proj_len, S) draws of N(0, 1) / √proj_len."""
    S = check_int("linformer_projections", "S", S, 1)
    proj_len = check_int("linformer_projections", "proj_len", proj_len, 1)
    rng = np.random.default_rng(seed)
    E, F_ = (rng.standard_normal((2, proj_len, S)) / math.sqrt(proj_len)).astype(dtype)
    return E, F_


def _projection(P, name: str, S: int, proj_len: int, dtype) -> Tensor:
    """Check one of E, F: a (proj_len, S) Tensor or array, in the input dtype."""
    P = P if isinstance(P, Tensor) else Tensor(np.asarray(P, dtype=dtype))
    if P.shape != (proj_len, S):
        raise ValueError(f"linformer_attention: {name} has shape {P.shape}, expected (proj_len, S) = "
                         f"({proj_len}, {S})")
    if P.dtype != dtype:
        raise TypeError(f"linformer_attention: {name} has dtype {P.dtype} but the inputs are {dtype}")
    return P


def _checked(q, k, v, proj_len, E, F_, seed, is_causal):
    q, k, v = fn.check_tensor(q, "query"), fn.check_tensor(k, "key"), fn.check_tensor(v, "value")
    check_qkv("linformer_attention", q, k, v)
    if is_causal:
        raise ValueError("linformer_attention: is_causal=True is not supported: E K and F V mix every "
                         "position (future ones included) into each projected key")
    S = k.shape[-2]
    proj_len = check_int("linformer_attention", "proj_len", proj_len, 1)
    if S == 0:
        raise ValueError("linformer_attention: needs S >= 1 keys to project, got S = 0")
    if E is None or F_ is None:
        E0, F0 = linformer_projections(S, proj_len, seed, q.dtype)
        E, F_ = (E0 if E is None else E), (F0 if F_ is None else F_)
    return q, k, v, _projection(E, "E", S, proj_len, q.dtype), _projection(F_, "F", S, proj_len, q.dtype)


def linformer_attention(q, k, v, is_causal: bool = False, proj_len: int = 64, E=None, F=None,
                        seed: int = 0, scale=None) -> Tensor:
    """Linformer attention (Wang et al. 2020): softmax(scale · Q (E K)ᵀ) (F V), O(L·k·D).

    q (..., L, D), k (..., S, D), v (..., S, dv) -> (..., L, dv); E, F (proj_len, S) Tensors
    (Parameters to learn them; gradients flow into them) or None for the fixed draw of
    ``linformer_projections(S, proj_len, seed)``. proj_len is the paper's k.
    """
    q, k, v, E, F_ = _checked(q, k, v, proj_len, E, F, seed, is_causal)
    kp = E @ k  # (..., k, D): (k, S) @ (..., S, D) broadcasts over the leading dims
    vp = F_ @ v  # (..., k, dv)
    return fn.scaled_dot_product_attention(q, kp, vp, scale=scale)  # (..., L, dv)


def linformer_weights(q, k, proj_len: int = 64, E=None, F=None, seed: int = 0, scale=None) -> np.ndarray:
    """The (…, L, S) weights the output applies to V: softmax(scale · Q (E K)ᵀ) F, of rank ≤ k."""
    v = Tensor(np.zeros(k.shape[:-1] + (1,), k.dtype))
    q, k, _, E, F_ = _checked(q, k, v, proj_len, E, F, seed, False)
    a = fn.check_scale(scale, q.shape[-1]) * (q.data @ np.swapaxes(E.data @ k.data, -1, -2))  # (..., L, k)
    p = fn.softmax_inplace(a, -1)
    return p @ F_.data  # (..., L, S)


class Linformer(Module):
    """Learnable Linformer projections for sequences of length S: E, F Parameters (proj_len, S).

    forward(q, k, v) = linformer_attention(q, k, v, E=self.E, F=self.F); initialized as the fixed
    default draw, N(0, 1/proj_len).
    """

    def __init__(self, S: int, proj_len: int, seed: int = 0, dtype=np.float32):
        super().__init__()
        E, F_ = linformer_projections(S, proj_len, seed, dtype)
        self.S, self.proj_len = S, proj_len
        self.E, self.F = Parameter(E), Parameter(F_)

    def forward(self, q, k, v, scale=None) -> Tensor:
        return linformer_attention(q, k, v, proj_len=self.proj_len, E=self.E, F=self.F, scale=scale)


def _reference(q, k, v, is_causal=False, proj_len=64, seed=0, E=None, F=None):
    E0, F0 = linformer_projections(k.shape[-2], proj_len, seed, q.dtype)
    E = E0 if E is None else np.asarray(getattr(E, "data", E))
    F_ = F0 if F is None else np.asarray(getattr(F, "data", F))
    return dense_attention(q, E @ k, F_ @ v)


register(Variant(
    name="linformer", kind="attention", claim="approximate",
    paper="Wang et al. 2020, Linformer: Self-Attention with Linear Complexity",
    time="O(L·k·D)", memory="O(L·k)",
    summary="keys and values projected along the sequence to k rows by E, F (k x S)",
    bound="low rank: the weights on V are P F, rank ≤ k; exact for k = S, E = F = I",
    attend=lambda q, k, v, is_causal=False, proj_len=64, seed=0, E=None, F=None: linformer_attention(
        q, k, v, is_causal=is_causal, proj_len=proj_len, E=E, F=F, seed=seed),
    reference=_reference, options={"proj_len": 64, "seed": 0}, causal=False))
