"""Sliding-window attention: exact attention under a band mask, in O(L · window).

Beltagy et al., "Longformer: The Long-Document Transformer" (2020), and Child et al. (2019) for
local attention: query i sees the keys j with |i − j| ≤ w (causal: 0 ≤ i − j ≤ w), so

    out_i = Σ_{j : |i−j| ≤ w} softmax_j(scale · q_i·k_j) v_j.

Queries are cut into blocks of b; block r attends only the b + 2w keys that can reach it, so the
scores are (nb, b, b + 2w) instead of (L, S).

Claim: exact under its mask — equals ``scaled_dot_product_attention`` with
``sliding_window_mask`` to float64 round-off, forward and backward. Cost O(L · w · D) time and
O(L · w) memory.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..nn import functional as F
from .common import check_int, check_qkv, dense_attention, empty_attention, flat
from .registry import Variant, register

__all__ = ["sliding_window_attention", "sliding_window_mask", "sliding_window_tiles"]


def sliding_window_mask(L: int, S: int, window: int, is_causal: bool = False) -> np.ndarray:
    """The (L, S) bool band in SDPA polarity (True = may attend): |i − j| ≤ window,
    or 0 ≤ i − j ≤ window when causal. O(L·S): for checks and pictures only."""
    diff = np.arange(L)[:, None] - np.arange(S)[None, :]  # (L, S): i − j
    low = 0 if is_causal else -window
    return (diff >= low) & (diff <= window)


def _window_layout(L: int, S: int, window: int, is_causal: bool):
    """Block size b, left reach, width and block count of the tiles that cover the band.

    Query block r (rows rb .. rb+b−1) sees keys rb − left .. rb − left + width − 1,
    width = b + left + right.
    """
    window = min(window, max(L, S) - 1)  # a wider band is the same band
    left, right = window, 0 if is_causal else window
    b = min(max(window, 16), L)
    return b, left, b + left + right, -(-L // b)


def sliding_window_tiles(L: int, S: int, window: int, is_causal: bool = False) -> list:
    """The tiles ``sliding_window_attention`` computes: one (q0, q1, k0, k1) per query block.

    Queries q0 .. q1−1 are scored against keys k0 .. k1−1 (clipped to [0, S)); together the
    tiles cover every (i, j) of the band, in about L · (b + 2·window) scores instead of L · S.
    """
    b, left, width, nb = _window_layout(L, S, window, is_causal)
    return [(r * b, min(r * b + b, L), max(r * b - left, 0), min(max(r * b - left + width, 0), S))
            for r in range(nb)]


def _window_views(x: np.ndarray, b: int, left: int, width: int, nb: int) -> np.ndarray:
    """Pad (G, S, D) with ``left`` zero rows in front and view it as (G, nb, width, D) windows.

    Window r starts at padded row r·b, i.e. at key r·b − left (a read-only strided view).
    """
    G, S, D = x.shape
    rows = (nb + -(-width // b)) * b  # room for every window and for the chunked scatter-add
    xp = np.zeros((G, rows, D), dtype=x.dtype)
    keep = min(S, rows - left)
    xp[:, left:left + keep] = x[:, :keep]
    sg, sr, sd = xp.strides
    return np.lib.stride_tricks.as_strided(xp, (G, nb, width, D), (sg, b * sr, sr, sd), writeable=False)


def _window_adjoint(dwin: np.ndarray, b: int, left: int, S: int) -> np.ndarray:
    """Adjoint of ``_window_views``: add overlapping window gradients (G, nb, width, D) -> (G, S, D)."""
    G, nb, width, D = dwin.shape
    rows = (nb + -(-width // b)) * b
    dxp = np.zeros((G, rows, D), dtype=dwin.dtype)
    for t in range(0, width, b):  # windows overlap; each chunk of b columns is a disjoint scatter
        cols = min(b, width - t)
        dxp[:, t:t + nb * b].reshape(G, nb, b, D)[:, :, :cols] += dwin[:, :, t:t + cols]
    dx = np.zeros((G, S, D), dtype=dwin.dtype)
    keep = min(S, rows - left)
    dx[:, :keep] = dxp[:, left:left + keep]
    return dx


def sliding_window_attention(q, k, v, window: int, is_causal: bool = False, scale=None) -> Tensor:
    """Exact attention under a band mask, computed on block tiles: O(L · window) time and memory.

    q (..., L, D), k (..., S, D), v (..., S, Dv) -> (..., L, Dv), equal to
    ``scaled_dot_product_attention(q, k, v, attn_mask=sliding_window_mask(L, S, window, is_causal))``.
    Query i sees keys with |i − j| ≤ window (causal: 0 ≤ i − j ≤ window); a query that sees no
    key (L > S + window) gets zeros. Queries are cut into blocks of b; block r attends the width
    keys starting at r·b − window, so the scores are (nb, b, width) instead of (L, S).
    """
    q, k, v = F.check_tensor(q, "query"), F.check_tensor(k, "key"), F.check_tensor(v, "value")
    check_qkv("sliding_window_attention", q, k, v)
    window = check_int("sliding_window_attention", "window", window, 0)
    if q.shape[-2] == 0 or k.shape[-2] == 0:
        return empty_attention("sliding_window_attention", q, k, v)
    lead, L, S, Dv = q.shape[:-2], q.shape[-2], k.shape[-2], v.shape[-1]
    scale = F.check_scale(scale, q.shape[-1])
    b, left, width, nb = _window_layout(L, S, window, is_causal)
    qf = flat(q)  # (G, L, D)
    G, D = qf.shape[0], qf.shape[-1]
    qs = np.zeros((G, nb * b, D), dtype=q.dtype)  # (G, nb·b, D): zero rows pad the last block
    qs[:, :L] = qf * np.asarray(scale, q.dtype)
    qs = qs.reshape(G, nb, b, D)  # (G, nb, b, D)
    kwin = _window_views(flat(k), b, left, width, nb)  # (G, nb, width, D)
    vwin = _window_views(flat(v), b, left, width, nb)  # (G, nb, width, Dv)

    row = np.arange(b)[:, None]  # (b, 1) row inside the block
    col = np.arange(width)[None, :]  # (1, width) column inside the window
    low = 0 if is_causal else -window
    band = (row + left - col >= low) & (row + left - col <= window)  # (b, width): i − j in [low, window]
    key = np.arange(nb)[:, None] * b - left + np.arange(width)[None, :]  # (nb, width) key index j
    valid = (key >= 0) & (key < S)  # (nb, width)
    p = qs @ np.swapaxes(kwin, -1, -2)  # (G, nb, b, width): the scores A, softmaxed to P in place
    np.copyto(p, -np.inf, where=~band)
    np.copyto(p, -np.inf, where=~valid[:, None, :])
    F.softmax_inplace(p, -1)  # (G, nb, b, width), rows with no key become zeros
    out = (p @ vwin).reshape(G, nb * b, Dv)[:, :L]  # (G, L, Dv)

    def backward(grad):
        g = np.zeros((G, nb * b, Dv), dtype=grad.dtype)
        g[:, :L] = grad.reshape(G, L, Dv)
        g = g.reshape(G, nb, b, Dv)  # (G, nb, b, Dv)
        dvwin = np.swapaxes(p, -1, -2) @ g  # (G, nb, width, Dv)
        da = g @ np.swapaxes(vwin, -1, -2)  # dP (G, nb, b, width)
        da = F.softmax_backward(da, p)  # dA = P ∘ (dP − rowsum(dP ∘ P))
        dq = (da @ kwin).reshape(G, nb * b, D)[:, :L] * np.asarray(scale, q.dtype)  # (G, L, D)
        dkwin = np.swapaxes(da, -1, -2) @ qs  # (G, nb, width, D)
        return (dq.reshape(q.shape), _window_adjoint(dkwin, b, left, S).reshape(k.shape),
                _window_adjoint(dvwin, b, left, S).reshape(v.shape))

    return Tensor.from_op(out.reshape(lead + (L, Dv)), (q, k, v), backward, "sliding_window_attention")


def _window_reference(q, k, v, is_causal=False, window=64):
    mask = sliding_window_mask(q.shape[-2], k.shape[-2], window, is_causal)
    return dense_attention(q, k, v, mask=mask)


register(Variant(
    name="sliding_window", kind="attention", claim="exact under its mask",
    paper="Beltagy et al. 2020, Longformer (local attention: Child et al. 2019)",
    time="O(L·w·D)", memory="O(L·w)",
    summary="each query sees the keys within w positions; block tiles cover the band",
    attend=lambda q, k, v, is_causal=False, window=64: sliding_window_attention(q, k, v, window,
                                                                                 is_causal=is_causal),
    reference=_window_reference, options={"window": 64}))
