"""ALiBi: attention with linear biases, position as a penalty on the distance i − j.

Press, Smith and Lewis, "Train Short, Test Long: Attention with Linear Biases Enables Input
Length Extrapolation" (ICLR 2022). No position embedding at all; head h adds to its scores

    A_ij,h = q_i·k_j / √D − m_h · (i − j)      (j ≤ i, causal),

with the slopes a geometric sequence: for H a power of two m_h = 2^(−8h/H), h = 1..H
(H = 8: 1/2, 1/4, ..., 1/256). For other H the paper's code takes the slopes of the power of two
H' = 2^⌊log₂ H⌋ and adds every other slope of 2H' for the remaining H − H' heads.

The bias depends on i − j only, so the scores of a query and its keys do not change when both are
shifted by the same amount: a sliding-window cache that renumbers its positions gives the same
attention as the absolute positions. Non-causal use (not in the paper) takes −m_h · |i − j|.

Claim: a position scheme (a bias added to the scores; it is differentiable trivially, it has no
parameters).
"""

from __future__ import annotations

import math

import numpy as np

from .common import check_int
from .registry import Variant, register

__all__ = ["alibi_slopes", "alibi_bias"]


def alibi_slopes(num_heads: int) -> np.ndarray:
    """The ALiBi slope m_h of every head, (H,) float64: 2^(−8h/H) for H a power of two, else the
    paper's rule (the slopes of 2^⌊log₂ H⌋ heads, then every other slope of twice as many)."""
    check_int("alibi_slopes", "num_heads", num_heads, 1)
    power = 2 ** math.floor(math.log2(num_heads))
    slopes = 2.0 ** (-8.0 * np.arange(1, power + 1) / power)  # (H',)
    if power == num_heads:
        return slopes
    return np.concatenate([slopes, alibi_slopes(2 * power)[0::2][:num_heads - power]])  # (H,)


def alibi_bias(num_heads: int, L: int, S: int, is_causal: bool = True, dtype=np.float64) -> np.ndarray:
    """The ALiBi bias added to the scores, (H, L, S); the L queries are the last L of the S positions.

    Query row i sits at position p_i = S − L + i (aligned bottom-right, as a KV cache appends new
    queries after the cached keys) and key column j at position j: bias = −m_h · (p_i − j) for
    j ≤ p_i and −inf for j > p_i when causal; −m_h · |p_i − j| when not.
    """
    check_int("alibi_bias", "L", L, 0)
    check_int("alibi_bias", "S", S, 0)
    if L > S:
        raise ValueError(f"alibi_bias: L = {L} queries are the last of S = {S} positions; expected L <= S")
    distance = (S - L + np.arange(L))[:, None] - np.arange(S)[None, :]  # (L, S): p_i − j
    m = alibi_slopes(num_heads)[:, None, None]  # (H, 1, 1)
    if not is_causal:
        return (-m * np.abs(distance)).astype(dtype)  # (H, L, S)
    bias = np.where(distance >= 0, -m * distance, -np.inf)  # (H, L, S)
    return bias.astype(dtype)


register(Variant(
    name="alibi", kind="position", claim="position scheme",
    paper="Press et al. 2022 (ALiBi)",
    time="O(L·S) additions to the scores", memory="no parameters; an (H, L, S) bias",
    summary="adds −m_h·(i − j) to the scores of head h, slopes 2^(−8h/H); depends on i − j only, "
            "extrapolates past the training length"))
