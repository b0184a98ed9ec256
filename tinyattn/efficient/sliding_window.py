"""Sliding-window attention: exact attention under a band mask, in O(L · window).

Beltagy et al., "Longformer: The Long-Document Transformer" (2020), and Child et al. (2019) for
local attention: query i sees the keys j with |i − j| ≤ w (causal: 0 ≤ i − j ≤ w), so

    out_i = Σ_{j : |i−j| ≤ w} softmax_j(scale · q_i·k_j) v_j.

Queries are cut into blocks of b; block r attends only the W = b + 2w keys that can reach it, so the
scores are (nb, b, W) instead of (L, S).

Claim: exact under its mask — equals ``scaled_dot_product_attention`` with
``sliding_window_mask`` to float64 round-off, forward and backward. Cost O(L · w · d) time and
O(L · w) memory.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..nn import functional as F
from .common import check_int, check_qkv, dense_attention, empty_attention, flat
from .registry import Variant, register

__all__ = ["sliding_window_attention", "sliding_window_mask", "sliding_window_tiles"]


def sliding_window_mask(N: int, S: int, window: int, is_causal: bool = False) -> np.ndarray:
    """The (N, S) bool band in SDPA polarity (True = may attend): |i − j| ≤ window,
    or 0 ≤ i − j ≤ window when causal. O(N·S): for checks and pictures only."""
    diff = np.arange(N)[:, None] - np.arange(S)[None, :]  # (N, S): i − j
    low = 0 if is_causal else -window
    return (diff >= low) & (diff <= window)


def _window_layout(N: int, S: int, window: int, is_causal: bool):
    """Block size b, left reach, width W and block count of the tiles that cover the band.

    Query block r (rows rb .. rb+b−1) sees keys rb − left .. rb − left + W − 1, W = b + left + right.
    """
    window = min(window, max(N, S) - 1)  # a wider band is the same band
    left, right = window, 0 if is_causal else window
    b = min(max(window, 16), N)
    return b, left, b + left + right, -(-N // b)


def sliding_window_tiles(N: int, S: int, window: int, is_causal: bool = False) -> list:
    """The tiles ``sliding_window_attention`` computes: one (q0, q1, k0, k1) per query block.

    Queries q0 .. q1−1 are scored against keys k0 .. k1−1 (clipped to [0, S)); together the
    tiles cover every (i, j) of the band, in about N · (b + 2·window) scores instead of N · S.
    """
    b, left, W, nb = _window_layout(N, S, window, is_causal)
    return [(r * b, min(r * b + b, N), max(r * b - left, 0), min(max(r * b - left + W, 0), S))
            for r in range(nb)]


def _window_views(x: np.ndarray, b: int, left: int, W: int, nb: int) -> np.ndarray:
    """Pad (G, S, D) with ``left`` zero rows in front and view it as (G, nb, W, D) windows.

    Window r starts at padded row r·b, i.e. at key r·b − left (a read-only strided view).
    """
    G, S, D = x.shape
    rows = (nb + -(-W // b)) * b  # room for every window and for the chunked scatter-add
    xp = np.zeros((G, rows, D), dtype=x.dtype)
    keep = min(S, rows - left)
    xp[:, left:left + keep] = x[:, :keep]
    sg, sr, sd = xp.strides
    return np.lib.stride_tricks.as_strided(xp, (G, nb, W, D), (sg, b * sr, sr, sd), writeable=False)


def _window_adjoint(dwin: np.ndarray, b: int, left: int, S: int) -> np.ndarray:
    """Adjoint of ``_window_views``: add overlapping window gradients (G, nb, W, D) -> (G, S, D)."""
    G, nb, W, D = dwin.shape
    rows = (nb + -(-W // b)) * b
    dxp = np.zeros((G, rows, D), dtype=dwin.dtype)
    for t in range(0, W, b):  # windows overlap; each chunk of b columns is a disjoint scatter
        width = min(b, W - t)
        dxp[:, t:t + nb * b].reshape(G, nb, b, D)[:, :, :width] += dwin[:, :, t:t + width]
    dx = np.zeros((G, S, D), dtype=dwin.dtype)
    keep = min(S, rows - left)
    dx[:, :keep] = dxp[:, left:left + keep]
    return dx


def sliding_window_attention(q, k, v, window: int, is_causal: bool = False, scale=None) -> Tensor:
    """Exact attention under a band mask, computed on block tiles: O(N · window) time and memory.

    q (..., N, d), k (..., S, d), v (..., S, dv) -> (..., N, dv), equal to
    ``scaled_dot_product_attention(q, k, v, attn_mask=sliding_window_mask(N, S, window, is_causal))``.
    Query i sees keys with |i − j| ≤ window (causal: 0 ≤ i − j ≤ window); a query that sees no
    key (N > S + window) gets zeros. Queries are cut into blocks of b; block r attends the W
    keys starting at r·b − window, so the scores are (nb, b, W) instead of (N, S).
    """
    q, k, v = F.check_tensor(q, "query"), F.check_tensor(k, "key"), F.check_tensor(v, "value")
    check_qkv("sliding_window_attention", q, k, v)
    window = check_int("sliding_window_attention", "window", window, 0)
    if q.shape[-2] == 0 or k.shape[-2] == 0:
        return empty_attention("sliding_window_attention", q, k, v)
    lead, N, S, dv = q.shape[:-2], q.shape[-2], k.shape[-2], v.shape[-1]
    scale = F.check_scale(scale, q.shape[-1])
    b, left, W, nb = _window_layout(N, S, window, is_causal)
    qf = flat(q)  # (G, N, d)
    G, d = qf.shape[0], qf.shape[-1]
    qs = np.zeros((G, nb * b, d), dtype=q.dtype)  # (G, nb·b, d): zero rows pad the last block
    qs[:, :N] = qf * np.asarray(scale, q.dtype)
    qs = qs.reshape(G, nb, b, d)  # (G, nb, b, d)
    kwin = _window_views(flat(k), b, left, W, nb)  # (G, nb, W, d)
    vwin = _window_views(flat(v), b, left, W, nb)  # (G, nb, W, dv)

    a = np.arange(b)[:, None]  # (b, 1) row inside the block
    c = np.arange(W)[None, :]  # (1, W) column inside the window
    low = 0 if is_causal else -window
    band = (a + left - c >= low) & (a + left - c <= window)  # (b, W): i − j in [low, window]
    key = np.arange(nb)[:, None] * b - left + np.arange(W)[None, :]  # (nb, W) key index j
    valid = (key >= 0) & (key < S)  # (nb, W)
    p = qs @ np.swapaxes(kwin, -1, -2)  # (G, nb, b, W) scores
    np.copyto(p, -np.inf, where=~band)
    np.copyto(p, -np.inf, where=~valid[:, None, :])
    F.softmax_inplace(p, -1)  # (G, nb, b, W), rows with no key become zeros
    out = (p @ vwin).reshape(G, nb * b, dv)[:, :N]  # (G, N, dv)

    def backward(grad):
        g = np.zeros((G, nb * b, dv), dtype=grad.dtype)
        g[:, :N] = grad.reshape(G, N, dv)
        g = g.reshape(G, nb, b, dv)  # (G, nb, b, dv)
        dvwin = np.swapaxes(p, -1, -2) @ g  # (G, nb, W, dv)
        ds = g @ np.swapaxes(vwin, -1, -2)  # dP (G, nb, b, W)
        ds = F.softmax_backward(ds, p)  # dS = P ∘ (dP − rowsum(dP ∘ P))
        dq = (ds @ kwin).reshape(G, nb * b, d)[:, :N] * np.asarray(scale, q.dtype)  # (G, N, d)
        dkwin = np.swapaxes(ds, -1, -2) @ qs  # (G, nb, W, d)
        return (dq.reshape(q.shape), _window_adjoint(dkwin, b, left, S).reshape(k.shape),
                _window_adjoint(dvwin, b, left, S).reshape(v.shape))

    return Tensor.from_op(out.reshape(lead + (N, dv)), (q, k, v), backward, "sliding_window_attention")


def _window_reference(q, k, v, is_causal=False, window=64):
    mask = sliding_window_mask(q.shape[-2], k.shape[-2], window, is_causal)
    return dense_attention(q, k, v, mask=mask)


register(Variant(
    name="sliding_window", kind="attention", claim="exact under its mask",
    paper="Beltagy et al. 2020, Longformer (local attention: Child et al. 2019)",
    time="O(L·w·d)", memory="O(L·w)",
    summary="each query sees the keys within w positions; block tiles cover the band",
    attend=lambda q, k, v, is_causal=False, window=64: sliding_window_attention(q, k, v, window,
                                                                                 is_causal=is_causal),
    reference=_window_reference, options={"window": 64}))
