"""Efficient attention: the same (or a cheaper) attention without the N x N score matrix.

- ``flash_attention``: exact softmax attention computed tile by tile with the online softmax
  (Dao et al. 2022); it stores only the output and one log-sum-exp per row, and its backward
  recomputes every tile. Memory O(N·d + block²) instead of O(N·S).
- ``sliding_window_attention``: exact attention under the band mask |i − j| ≤ window, computed
  on block tiles that cover the band: O(N · window) time and memory.
- ``linear_attention``: the kernelized attention of Katharopoulos et al. (2020) with
  φ(x) = elu(x) + 1; associativity turns O(N·S) into O(N + S). Not softmax attention.
- ``GroupedQueryAttention`` and ``KVCache``: fewer key/value heads than query heads (MHA, GQA,
  MQA), and the cache that makes token-by-token decoding cost O(T) per token.

Inputs of the functions are (B, H, N, d) tensors; any leading dims work as long as query, key
and value share them. Every op has a hand-written backward next to its forward.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .autograd import Tensor
from .nn import functional as F
from .nn.modules import Linear, Module

__all__ = [
    "flash_attention", "flash_tile_kinds", "sliding_window_attention", "sliding_window_mask",
    "sliding_window_tiles",
    "linear_attention", "linear_attention_weights", "elu_feature_map",
    "GroupedQueryAttention", "KVCache", "kv_cache_bytes",
    "TILE_SKIPPED", "TILE_MASKED", "TILE_FULL",
]

TILE_SKIPPED, TILE_MASKED, TILE_FULL = 0, 1, 2


# ----------------------------------------------------------------------------------------------
# shared checks
# ----------------------------------------------------------------------------------------------

def _check_qkv(name: str, q: Tensor, k: Tensor, v: Tensor) -> None:
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


def _flat(t: Tensor) -> np.ndarray:
    """(..., T, D) -> (G, T, D), G the product of the leading dims (a view when possible)."""
    return t.data.reshape((math.prod(t.shape[:-2]),) + t.shape[-2:])


def _check_int(op: str, name: str, value, minimum: int) -> int:
    """``value`` as an int ≥ ``minimum``: a TypeError for a non-number, a ValueError otherwise."""
    what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be {what}, got {value!r}")
    if not math.isfinite(value) or int(value) != value or value < minimum:
        raise ValueError(f"{op}: {name} must be {what}, got {value!r}")
    return int(value)


def _empty_attention(op: str, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """No queries or no keys: an empty output, or zeros (no key to average), as SDPA gives."""
    out = np.zeros(q.shape[:-1] + v.shape[-1:], q.dtype)  # (..., N, dv)
    zeros = lambda g: tuple(np.zeros(t.shape, g.dtype) for t in (q, k, v))  # noqa: E731
    return Tensor.from_op(out, (q, k, v), zeros, op)


# ----------------------------------------------------------------------------------------------
# flash attention
# ----------------------------------------------------------------------------------------------

def _tile_kind(r0: int, r1: int, c0: int, c1: int, is_causal: bool) -> int:
    """Rows [r0, r1) x keys [c0, c1): skipped (all above the diagonal), masked, or full.

    Causal is top-left aligned as in SDPA: query i sees keys j ≤ i.
    """
    if not is_causal or c1 - 1 <= r0:
        return TILE_FULL
    if c0 > r1 - 1:
        return TILE_SKIPPED
    return TILE_MASKED


def flash_tile_kinds(N: int, S: int, block_size: int = 128, is_causal: bool = False) -> np.ndarray:
    """The tile map of ``flash_attention``: (ceil(N/block), ceil(S/block)) ints.

    TILE_FULL (2): computed without a mask; TILE_MASKED (1): computed, then the causal mask is
    applied inside the tile; TILE_SKIPPED (0): entirely above the diagonal, never computed.
    """
    rows = range(0, N, block_size)
    cols = range(0, S, block_size)
    return np.array([[_tile_kind(r0, min(r0 + block_size, N), c0, min(c0 + block_size, S), is_causal)
                      for c0 in cols] for r0 in rows], dtype=np.int64).reshape(len(rows), len(cols))


def _tile_scores(qb: np.ndarray, kb: np.ndarray, r0: int, c0: int, kind: int) -> np.ndarray:
    """s = Q_i K_jᵀ for one tile (one of them pre-scaled), −inf above the diagonal if masked."""
    s = qb @ np.swapaxes(kb, -1, -2)  # (G, br, bc)
    if kind == TILE_MASKED:
        rows = np.arange(r0, r0 + s.shape[-2])[:, None]  # (br, 1)
        cols = np.arange(c0, c0 + s.shape[-1])[None, :]  # (1, bc)
        np.copyto(s, -np.inf, where=cols > rows)
    return s


def _flash_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, block: int,
                   is_causal: bool):
    """O and the row log-sum-exp of softmax(scale · q kᵀ) v, one query block at a time.

    q (G, N, d), k (G, S, d), v (G, S, dv) -> O (G, N, dv), lse (G, N).
    Per query block: for each key block, m' = max(m, rowmax(s)), ℓ = e^(m−m')ℓ + rowsum(e^(s−m')),
    acc = e^(m−m')acc + e^(s−m') V_j; at the end O = acc / ℓ and lse = m + log ℓ.
    """
    G, N, _ = q.shape
    S, dv, dtype = v.shape[-2], v.shape[-1], q.dtype
    out = np.empty((G, N, dv), dtype=dtype)
    lse = np.empty((G, N), dtype=dtype)
    for r0 in range(0, N, block):
        r1 = min(r0 + block, N)
        qb = q[:, r0:r1] * np.asarray(scale, dtype)  # (G, br, d)
        m = np.full((G, r1 - r0), -np.inf, dtype=dtype)  # running max
        ell = np.zeros((G, r1 - r0), dtype=dtype)  # running sum of e^(s − m)
        acc = np.zeros((G, r1 - r0, dv), dtype=dtype)  # running Σ e^(s − m) v
        for c0 in range(0, S, block):
            c1 = min(c0 + block, S)
            kind = _tile_kind(r0, r1, c0, c1, is_causal)
            if kind == TILE_SKIPPED:
                break  # every later key block is above the diagonal too
            s = _tile_scores(qb, k[:, c0:c1], r0, c0, kind)  # (G, br, bc)
            # every row sees key 0 (causal is top-left aligned), so m' is finite from the first
            # tile on and m − m' is never (−inf) − (−inf)
            m_new = np.maximum(m, s.max(axis=-1))  # (G, br)
            s -= m_new[..., None]
            np.exp(s, out=s)  # p̃ = e^(s − m'), in place
            alpha = np.exp(m - m_new)  # (G, br): rescales what was summed under the old max
            ell *= alpha
            ell += s.sum(axis=-1)
            acc *= alpha[..., None]
            acc += s @ v[:, c0:c1]  # (G, br, dv)
            m = m_new
        out[:, r0:r1] = acc / ell[..., None]
        lse[:, r0:r1] = m + np.log(ell)
    return out, lse


def _flash_backward(g, q, k, v, out, lse, scale: float, block: int, is_causal: bool):
    """dQ, dK, dV of flash attention, recomputing P = e^(s − lse) one tile at a time.

    g, out (G, N, dv), lse (G, N), q (G, N, d), k (G, S, d), v (G, S, dv).
    D = rowsum(dO ∘ O); per tile: dV_j += Pᵀ dO_i, dP = dO_i V_jᵀ, dS = P ∘ (dP − D_i),
    dQ_i += dS (scale · K_j), dK_j += scale · dSᵀ Q_i.
    """
    N, S = q.shape[-2], k.shape[-2]
    D = np.einsum("gnd,gnd->gn", g, out)  # (G, N)
    dq = np.zeros_like(q)  # (G, N, d)
    dk = np.empty_like(k)  # (G, S, d)
    dv = np.empty_like(v)  # (G, S, dv)
    for c0 in range(0, S, block):
        c1 = min(c0 + block, S)
        kb, vb = k[:, c0:c1] * np.asarray(scale, k.dtype), v[:, c0:c1]  # (G, bc, d), (G, bc, dv)
        dk_j = np.zeros_like(kb)
        dv_j = np.zeros_like(vb)
        first = (c0 // block) * block if is_causal else 0  # earlier query blocks are skipped tiles
        for r0 in range(first, N, block):
            r1 = min(r0 + block, N)
            kind = _tile_kind(r0, r1, c0, c1, is_causal)
            p = _tile_scores(q[:, r0:r1], kb, r0, c0, kind)  # (G, br, bc)
            p -= lse[:, r0:r1, None]
            np.exp(p, out=p)  # P recomputed, in place
            gi = g[:, r0:r1]  # (G, br, dv)
            dv_j += np.swapaxes(p, -1, -2) @ gi  # (G, bc, dv)
            ds = gi @ np.swapaxes(vb, -1, -2)  # dP (G, br, bc)
            ds = F.softmax_backward(ds, p, rowsum=D[:, r0:r1, None])  # dS = P ∘ (dP − D)
            dq[:, r0:r1] += ds @ kb  # (G, br, d)
            dk_j += np.swapaxes(ds, -1, -2) @ q[:, r0:r1]  # (G, bc, d)
        dk_j *= np.asarray(scale, k.dtype)
        dk[:, c0:c1] = dk_j
        dv[:, c0:c1] = dv_j
    return dq, dk, dv


def flash_attention(q, k, v, is_causal: bool = False, scale=None, block_size: int = 128) -> Tensor:
    """Exact softmax attention, tile by tile, never holding an N x S array (forward or backward).

    q (..., N, d), k (..., S, d), v (..., S, dv) -> (..., N, dv), equal to
    ``scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)`` up to round-off.
    Online softmax over key blocks j: m' = max(m, rowmax(S_ij)),
    ℓ' = e^(m − m')ℓ + rowsum(e^(S_ij − m')), O' = e^(m − m')O + e^(S_ij − m') V_j.
    Keeps O and lse = m + log ℓ; the backward recomputes P_ij = e^(S_ij − lse) per tile.
    Memory O(N·d + block²) per (batch, head); causal tiles above the diagonal are skipped.
    """
    q, k, v = F.check_tensor(q, "query"), F.check_tensor(k, "key"), F.check_tensor(v, "value")
    _check_qkv("flash_attention", q, k, v)
    block = _check_int("flash_attention", "block_size", block_size, 1)
    if q.shape[-2] == 0 or k.shape[-2] == 0:
        return _empty_attention("flash_attention", q, k, v)
    lead, N = q.shape[:-2], q.shape[-2]
    scale = F.check_scale(scale, q.shape[-1])
    qf, kf, vf = _flat(q), _flat(k), _flat(v)  # (G, N, d), (G, S, d), (G, S, dv)
    out, lse = _flash_forward(qf, kf, vf, scale, block, is_causal)  # (G, N, dv), (G, N)

    def backward(grad):
        g = grad.reshape(out.shape)  # (G, N, dv)
        dq, dk, dv = _flash_backward(g, qf, kf, vf, out, lse, scale, block, is_causal)
        return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)

    return Tensor.from_op(out.reshape(lead + (N, v.shape[-1])), (q, k, v), backward, "flash_attention")


# ----------------------------------------------------------------------------------------------
# sliding-window attention
# ----------------------------------------------------------------------------------------------

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
    _check_qkv("sliding_window_attention", q, k, v)
    window = _check_int("sliding_window_attention", "window", window, 0)
    if q.shape[-2] == 0 or k.shape[-2] == 0:
        return _empty_attention("sliding_window_attention", q, k, v)
    lead, N, S, dv = q.shape[:-2], q.shape[-2], k.shape[-2], v.shape[-1]
    scale = F.check_scale(scale, q.shape[-1])
    b, left, W, nb = _window_layout(N, S, window, is_causal)
    qf = _flat(q)  # (G, N, d)
    G, d = qf.shape[0], qf.shape[-1]
    qs = np.zeros((G, nb * b, d), dtype=q.dtype)  # (G, nb·b, d): zero rows pad the last block
    qs[:, :N] = qf * np.asarray(scale, q.dtype)
    qs = qs.reshape(G, nb, b, d)  # (G, nb, b, d)
    kwin = _window_views(_flat(k), b, left, W, nb)  # (G, nb, W, d)
    vwin = _window_views(_flat(v), b, left, W, nb)  # (G, nb, W, dv)

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


# ----------------------------------------------------------------------------------------------
# linear attention
# ----------------------------------------------------------------------------------------------

def _phi(x: np.ndarray) -> np.ndarray:
    """φ(x) = elu(x) + 1 = x + 1 for x > 0, e^x otherwise (always positive)."""
    return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))


def elu_feature_map(x) -> Tensor:
    """φ(x) = elu(x) + 1, elementwise, differentiable; φ'(x) = min(φ(x), 1)."""
    x = F.check_tensor(x)
    phi = _phi(x.data)
    return Tensor.from_op(phi, (x,), lambda g: (g * np.minimum(phi, 1),), "elu_feature_map")


def linear_attention_weights(q, k, is_causal: bool = False, eps: float = 1e-6) -> np.ndarray:
    """The (…, N, S) weights linear attention implicitly uses: A_ij = φ(q_i)·φ(k_j) / (Σ_j' … + eps).

    O(N·S): for pictures and checks. linear_attention(q, k, v) equals A @ v.
    """
    q, k = F.check_tensor(q, "query"), F.check_tensor(k, "key")
    a = _phi(q.data) @ np.swapaxes(_phi(k.data), -1, -2)  # (..., N, S)
    if is_causal:
        a = np.where(np.tril(np.ones(a.shape[-2:], dtype=bool)), a, 0)
    return a / (a.sum(axis=-1, keepdims=True) + eps)


_ROWS = 512  # positions per step of the Python loop: every temporary stays small and in cache
_CHUNK = 64  # causal: positions per chunk whose C x C scores are formed explicitly


def _rows(x: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Rows r0 .. r1−1 of (G, L, D), zero rows where r ≥ L: (G, r1 − r0, D)."""
    part = x[:, r0:min(r1, x.shape[1])]
    if part.shape[1] == r1 - r0:
        return part
    pad = np.zeros((x.shape[0], r1 - r0 - part.shape[1], x.shape[2]), dtype=x.dtype)
    return np.concatenate([part, pad], axis=1)  # (G, r1 − r0, D)


def _linear_forward(q, k, v, eps):
    """Non-causal: out = φQ (φKᵀ V) / (φQ Σ_j φ(k_j) + eps): one pass over keys, one over queries.

    q (G, N, d), k (G, S, d), v (G, S, e) -> out (G, N, e), saved (kv (G, d, e), z (G, d), den (G, N)).
    """
    G, N, d = q.shape
    e = v.shape[-1]
    kv = np.zeros((G, d, e), dtype=q.dtype)  # Σ_j φ(k_j) v_jᵀ
    z = np.zeros((G, d), dtype=q.dtype)  # Σ_j φ(k_j)
    for r0 in range(0, k.shape[1], _ROWS):
        fk = _phi(k[:, r0:r0 + _ROWS])  # (G, r, d)
        kv += np.swapaxes(fk, -1, -2) @ v[:, r0:r0 + _ROWS]
        z += fk.sum(axis=1)
    out = np.empty((G, N, e), dtype=q.dtype)
    den = np.empty((G, N), dtype=q.dtype)
    for r0 in range(0, N, _ROWS):
        rows = slice(r0, r0 + _ROWS)
        fq = _phi(q[:, rows])  # (G, r, d)
        den[:, rows] = np.einsum("grd,gd->gr", fq, z) + eps
        out[:, rows] = (fq @ kv) / den[:, rows, None]  # (G, r, e)
    return out, (kv, z, den)


def _linear_backward(g, q, k, v, out, saved):
    """dq, dk, dv of the non-causal form, recomputing φ block by block.

    dnum = g / den, dden = −rowsum(g ∘ out) / den; dφQ = dnum kvᵀ + dden zᵀ; dkv = φQᵀ dnum,
    dz = φQᵀ dden; dφ(k_j) = dkv v_j + dz, dv_j = dkvᵀ φ(k_j); dx = dφ(x) ∘ φ'(x).
    """
    kv, z, den = saved
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    dkv, dz = np.zeros_like(kv), np.zeros_like(z)  # (G, d, e), (G, d)
    for r0 in range(0, q.shape[1], _ROWS):
        rows = slice(r0, r0 + _ROWS)
        fq = _phi(q[:, rows])  # (G, r, d)
        dnum = g[:, rows] / den[:, rows, None]  # (G, r, e)
        dden = -np.einsum("gre,gre->gr", g[:, rows], out[:, rows]) / den[:, rows]  # (G, r)
        dfq = dnum @ np.swapaxes(kv, -1, -2) + dden[..., None] * z[:, None, :]  # (G, r, d)
        dq[:, rows] = dfq * np.minimum(fq, 1)  # φ'(x) = min(φ(x), 1)
        dkv += np.swapaxes(fq, -1, -2) @ dnum
        dz += np.einsum("grd,gr->gd", fq, dden)
    for r0 in range(0, k.shape[1], _ROWS):
        rows = slice(r0, r0 + _ROWS)
        fk = _phi(k[:, rows])  # (G, r, d)
        dk[:, rows] = (v[:, rows] @ np.swapaxes(dkv, -1, -2) + dz[:, None, :]) * np.minimum(fk, 1)
        dv[:, rows] = fk @ dkv  # (G, r, e)
    return dq, dk, dv


def _exclusive_cumsum(x: np.ndarray, axis: int) -> np.ndarray:
    """Σ over strictly earlier positions along ``axis``."""
    return np.cumsum(x, axis=axis) - x


def _reverse_exclusive_cumsum(x: np.ndarray, axis: int) -> np.ndarray:
    """Σ over strictly later positions along ``axis``."""
    return np.flip(_exclusive_cumsum(np.flip(x, axis), axis), axis)


def _chunked(x: np.ndarray, C: int) -> np.ndarray:
    """(G, n, D) -> (G, ceil(n / C), C, D), zero rows at the end."""
    G, n, D = x.shape
    return _rows(x, 0, -(-n // C) * C).reshape(G, -1, C, D)


def _unchunked(x: np.ndarray, n: int) -> np.ndarray:
    """(G, nc, C, D) -> the first n rows (G, n, D)."""
    return x.reshape(x.shape[0], -1, x.shape[-1])[:, :n]


def _causal_block(q, k, v, keys: int, state, z, eps) -> dict:
    """One block of n positions of causal linear attention, given the state before it.

    q, k (G, n, d), v (G, n, e): the block's rows, of which the first ``keys`` are real keys
    (the rest lie past S and get φ = 0). state (G, d, e) = Σ φ(k_j) v_jᵀ and z (G, d) = Σ φ(k_j)
    over all earlier positions. In chunks c of C positions, with S_c, z_c the state before c:
    num_c = φQ_c S_c + A_c V_c, den_c = φQ_c z_c + A_c 1 + eps, A_c = tril(φQ_c φK_cᵀ).
    """
    n = q.shape[1]
    C = min(_CHUNK, n)
    fk = _phi(k)  # (G, n, d)
    fk[:, keys:] = 0
    qc, kc, vc = _chunked(_phi(q), C), _chunked(fk, C), _chunked(v, C)  # (G, nc, C, ·)
    kv = np.swapaxes(kc, -1, -2) @ vc  # (G, nc, d, e): each chunk's Σ φ(k_j) v_jᵀ
    ksum = kc.sum(axis=2)  # (G, nc, d)
    st = state[:, None] + _exclusive_cumsum(kv, axis=1)  # (G, nc, d, e)
    zt = z[:, None] + _exclusive_cumsum(ksum, axis=1)  # (G, nc, d)
    tril = np.tril(np.ones((C, C), dtype=q.dtype))  # (C, C)
    a = qc @ np.swapaxes(kc, -1, -2)  # (G, nc, C, C)
    a *= tril
    den = np.einsum("gncd,gnd->gnc", qc, zt) + a.sum(axis=-1) + eps  # (G, nc, C)
    return dict(qc=qc, kc=kc, vc=vc, st=st, zt=zt, a=a, den=den, tril=tril, C=C,
                state_out=st[:, -1] + kv[:, -1], z_out=zt[:, -1] + ksum[:, -1])


def _blocks(N: int, S: int):
    """(index, r0, r1, number of real keys in rows r0..r1−1) of the causal loop."""
    for i, r0 in enumerate(range(0, N, _ROWS)):
        r1 = min(r0 + _ROWS, N)
        yield i, r0, r1, max(0, min(S, r1) - r0)


def _causal_linear_forward(q, k, v, eps):
    """Causal: the state Σ_{j≤i} φ(k_j) v_jᵀ carried from block to block (the RNN view).

    q (G, N, d), k (G, S, d), v (G, S, e) -> out (G, N, e) and the (state, z) entering each
    block. Keys j ≥ N are never seen; queries past S see all S keys.
    """
    G, N, d = q.shape
    e = v.shape[-1]
    state, z = np.zeros((G, d, e), dtype=q.dtype), np.zeros((G, d), dtype=q.dtype)
    out = np.empty((G, N, e), dtype=q.dtype)
    entering = []
    for _, r0, r1, keys in _blocks(N, k.shape[1]):
        entering.append((state, z))
        b = _causal_block(q[:, r0:r1], _rows(k, r0, r1), _rows(v, r0, r1), keys, state, z, eps)
        num = b["qc"] @ b["st"] + b["a"] @ b["vc"]  # (G, nc, C, e)
        out[:, r0:r1] = _unchunked(num / b["den"][..., None], r1 - r0)
        state, z = b["state_out"], b["z_out"]
    return out, entering


def _causal_linear_backward(g, q, k, v, out, entering, eps):
    """dq, dk, dv of the causal form: blocks in reverse, carrying d(state) backwards.

    Per block (recomputed): dnum = g / den, dden = −rowsum(g ∘ out) / den,
    dA = tril(dnum Vᵀ + dden 1ᵀ), dφQ = dnum S_cᵀ + dden z_cᵀ + dA φK, dS_c = φQ_cᵀ dnum.
    A chunk's Σ φ(k_j) v_jᵀ feeds the states of every later chunk and block, so its gradient
    is Σ_{later c} dS_c plus the gradient of the state leaving the block.
    """
    G, N, _ = q.shape
    dq, dk, dv = np.empty_like(q), np.zeros_like(k), np.zeros_like(v)
    dstate = np.zeros_like(entering[0][0])  # (G, d, e): gradient of the state leaving the block
    dz = np.zeros_like(entering[0][1])  # (G, d)
    for i, r0, r1, keys in reversed(list(_blocks(N, k.shape[1]))):
        state, z = entering[i]
        b = _causal_block(q[:, r0:r1], _rows(k, r0, r1), _rows(v, r0, r1), keys, state, z, eps)
        qc, kc, vc, den, C = b["qc"], b["kc"], b["vc"], b["den"], b["C"]
        gc, oc = _chunked(g[:, r0:r1], C), _chunked(out[:, r0:r1], C)  # (G, nc, C, e)
        dnum = gc / den[..., None]  # (G, nc, C, e)
        dden = -np.einsum("gnce,gnce->gnc", gc, oc) / den  # (G, nc, C)
        da = (dnum @ np.swapaxes(vc, -1, -2) + dden[..., None]) * b["tril"]  # (G, nc, C, C)
        dfq = dnum @ np.swapaxes(b["st"], -1, -2) + dden[..., None] * b["zt"][:, :, None] + da @ kc
        dst = np.swapaxes(qc, -1, -2) @ dnum  # (G, nc, d, e)
        dzt = np.einsum("gncd,gnc->gnd", qc, dden)  # (G, nc, d)
        dkv = _reverse_exclusive_cumsum(dst, axis=1) + dstate[:, None]  # (G, nc, d, e)
        dks = _reverse_exclusive_cumsum(dzt, axis=1) + dz[:, None]  # (G, nc, d)
        dfk = np.swapaxes(da, -1, -2) @ qc + vc @ np.swapaxes(dkv, -1, -2) + dks[:, :, None]
        dq[:, r0:r1] = _unchunked(dfq * np.minimum(qc, 1), r1 - r0)  # φ'(x) = min(φ(x), 1)
        dk[:, r0:r0 + keys] = _unchunked(dfk * np.minimum(kc, 1), keys)
        dv[:, r0:r0 + keys] = _unchunked(np.swapaxes(b["a"], -1, -2) @ dnum + kc @ dkv, keys)
        dstate = dstate + dst.sum(axis=1)  # the state entering feeds every S_c and the state leaving
        dz = dz + dzt.sum(axis=1)
    return dq, dk, dv


def linear_attention(q, k, v, is_causal: bool = False, eps: float = 1e-6) -> Tensor:
    """Linear attention (Katharopoulos et al. 2020): O(N + S) time and memory in sequence length.

    q (..., N, d), k (..., S, d), v (..., S, e) -> (..., N, e). With φ(x) = elu(x) + 1:
    out_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / (φ(q_i)ᵀ Σ_j φ(k_j) + eps), the sums over all j, or over
    j ≤ i when causal (top-left aligned, as SDPA's is_causal). Non-causal uses associativity,
    (φQ φKᵀ) V = φQ (φKᵀ V); causal carries the running state Σ_{j≤i} φ(k_j) v_jᵀ (the RNN
    view) from block to block. Not softmax attention: the weights are φ(q_i)·φ(k_j)
    normalized, not e^(q_i·k_j) normalized. Keeps only O(N) numbers for the backward.
    """
    q, k, v = F.check_tensor(q, "query"), F.check_tensor(k, "key"), F.check_tensor(v, "value")
    _check_qkv("linear_attention", q, k, v)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"linear_attention: eps must be a positive number (it keeps the "
                         f"normalizer φ(q)·Σφ(k) + eps away from 0), got {eps!r}")
    if q.shape[-2] == 0 or k.shape[-2] == 0:
        return _empty_attention("linear_attention", q, k, v)
    lead, N, e = q.shape[:-2], q.shape[-2], v.shape[-1]
    qf, kf, vf = _flat(q), _flat(k), _flat(v)  # (G, N, d), (G, S, d), (G, S, e)
    eps = np.asarray(eps, q.dtype)
    if is_causal:
        out, saved = _causal_linear_forward(qf, kf, vf, eps)
    else:
        out, saved = _linear_forward(qf, kf, vf, eps)

    def backward(grad):
        g = grad.reshape(out.shape)  # (G, N, e)
        if is_causal:
            dq, dk, dv = _causal_linear_backward(g, qf, kf, vf, out, saved, eps)
        else:
            dq, dk, dv = _linear_backward(g, qf, kf, vf, out, saved)
        return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)

    return Tensor.from_op(out.reshape(lead + (N, e)), (q, k, v), backward, "linear_attention")


# ----------------------------------------------------------------------------------------------
# grouped-query attention and the KV cache
# ----------------------------------------------------------------------------------------------

def kv_cache_bytes(num_layers: int, num_kv_heads: int, head_dim: int, seq_len: int,
                   batch: int = 1, bytes_per_element: int = 2) -> int:
    """Bytes of a KV cache: 2 (K and V) · layers · batch · seq_len · kv_heads · head_dim · bytes."""
    sizes = dict(num_layers=num_layers, num_kv_heads=num_kv_heads, head_dim=head_dim, seq_len=seq_len,
                 batch=batch, bytes_per_element=bytes_per_element)
    for name, n in sizes.items():
        _check_int("kv_cache_bytes", name, n, 0)
    return 2 * num_layers * batch * seq_len * num_kv_heads * head_dim * bytes_per_element


class KVCache:
    """The keys and values of past positions for one attention layer, for incremental decoding.

    ``append(k, v)`` adds k, v (B, H_kv, T, D) after the stored ones and returns all keys and
    values so far, (B, H_kv, P + T, D) each: the stored ones detached (no gradient flows into
    past steps) followed by the new ones. ``len(cache)`` is P, the number of stored positions;
    ``nbytes`` the bytes of the stored keys and values. Storage grows by doubling, so T calls
    of one token copy O(T) positions in total, not O(T²).
    """

    def __init__(self):
        self._k = self._v = None  # (B, H_kv, capacity, D) buffers
        self._len = 0

    def __len__(self) -> int:
        return self._len

    @property
    def keys(self) -> np.ndarray:
        """The stored keys (B, H_kv, P, D) (a view; empty cache: None)."""
        return None if self._k is None else self._k[:, :, :self._len]

    @property
    def values(self) -> np.ndarray:
        """The stored values (B, H_kv, P, D) (a view; empty cache: None)."""
        return None if self._v is None else self._v[:, :, :self._len]

    @property
    def nbytes(self) -> int:
        return 0 if self._k is None else self.keys.nbytes + self.values.nbytes

    def _reserve(self, k: np.ndarray, v: np.ndarray) -> None:
        """Make room for k's T more positions (first call: allocate)."""
        need = self._len + k.shape[2]
        if self._k is None:
            self._k = np.empty(k.shape[:2] + (need,) + k.shape[3:], k.dtype)  # (B, H_kv, T, D)
            self._v = np.empty(v.shape[:2] + (need,) + v.shape[3:], v.dtype)  # (B, H_kv, T, Dv)
            return
        if (k.shape[:2], k.shape[3], v.shape[3], k.dtype) != (self._k.shape[:2], self._k.shape[3],
                                                               self._v.shape[3], self._k.dtype):
            raise ValueError(f"KVCache holds keys {self.keys.shape} and values {self.values.shape} "
                             f"({self._k.dtype}); cannot append keys {k.shape} and values {v.shape} "
                             f"({k.dtype}): batch, heads, head_dim and dtype must match")
        if need > self._k.shape[2]:
            cap = max(need, 2 * self._k.shape[2])
            for name in ("_k", "_v"):
                old = getattr(self, name)
                new = np.empty(old.shape[:2] + (cap,) + old.shape[3:], old.dtype)  # (B, H_kv, cap, D)
                new[:, :, :self._len] = old[:, :, :self._len]
                setattr(self, name, new)

    def append(self, k, v):
        """Store k, v (B, H_kv, T, D); return (keys, values) of all P + T positions as Tensors.

        The returned tensors are views of the cache's storage; their gradient flows to the new
        k and v only (positions P .. P + T − 1).
        """
        k, v = F.check_tensor(k, "key"), F.check_tensor(v, "value")
        if k.ndim != 4 or v.ndim != 4 or k.shape[:3] != v.shape[:3]:
            raise ValueError(f"KVCache.append: expected key and value (B, H_kv, T, D) with equal "
                             f"B, H_kv, T; got {k.shape} and {v.shape}")
        self._reserve(k.data, v.data)
        start, self._len = self._len, self._len + k.shape[2]
        self._k[:, :, start:self._len] = k.data
        self._v[:, :, start:self._len] = v.data
        new_part = lambda g: (g[:, :, start:],)  # noqa: E731  (only the appended positions)
        keys = Tensor.from_op(self.keys, (k,), new_part, "kv_cache")  # (B, H_kv, P + T, D)
        values = Tensor.from_op(self.values, (v,), new_part, "kv_cache")  # (B, H_kv, P + T, Dv)
        return keys, values

    def __repr__(self) -> str:
        shape = None if self._k is None else self.keys.shape
        return f"KVCache(positions={self._len}, keys={shape}, nbytes={self.nbytes})"


class GroupedQueryAttention(Module):
    """Self-attention with ``num_kv_heads`` key/value heads shared by groups of query heads.

    x (B, T, E) -> (B, T, E). num_kv_heads == num_heads is multi-head attention (MHA),
    num_kv_heads == 1 multi-query attention (MQA), anything dividing num_heads in between is
    grouped-query attention (Ainslie et al. 2023). With head_dim = E / num_heads:
    Q = x W_qᵀ + b_q (B, T, H·D), K = x W_kᵀ + b_k and V = x W_vᵀ + b_v (B, T, H_kv·D);
    query head h uses key/value head h // (H / H_kv); out = concat(heads) W_oᵀ + b_o.
    Parameters: q_proj (E -> E), k_proj and v_proj (E -> H_kv·D), out_proj (E -> E).
    """

    def __init__(self, embed_dim: int, num_heads: int, num_kv_heads: int, bias: bool = True, dtype=None):
        super().__init__()
        for name, n in (("embed_dim", embed_dim), ("num_heads", num_heads), ("num_kv_heads", num_kv_heads)):
            _check_int("GroupedQueryAttention", name, n, 1)
        if embed_dim % num_heads:
            raise ValueError(f"GroupedQueryAttention: embed_dim {embed_dim} is not divisible by "
                             f"num_heads {num_heads}")
        if num_heads % num_kv_heads:
            raise ValueError(f"GroupedQueryAttention: num_heads {num_heads} is not a multiple of "
                             f"num_kv_heads {num_kv_heads}; each key/value head serves a group of "
                             f"equal size")
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.head_dim = embed_dim // num_heads
        kv_dim = num_kv_heads * self.head_dim
        self.q_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        self.k_proj = Linear(embed_dim, kv_dim, bias=bias, dtype=dtype)
        self.v_proj = Linear(embed_dim, kv_dim, bias=bias, dtype=dtype)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"num_kv_heads={self.num_kv_heads}")

    def forward(self, x, is_causal: bool = False, cache: KVCache = None) -> Tensor:
        """x (B, T, E) -> (B, T, E); with a cache, x holds the T positions after the P cached ones.

        The new keys/values are appended to ``cache`` and the queries attend all P + T positions.
        Causal with a cache is aligned bottom-right: new query t (position P + t) sees keys
        j ≤ P + t. Without a cache this is SDPA's top-left causal mask (P = 0).
        """
        x = F.check_tensor(x, "x")
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"GroupedQueryAttention: x has shape {x.shape}; expected "
                             f"(B, T, {self.embed_dim})")
        B, T, E = x.shape
        H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        q = self.q_proj(x).reshape(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).reshape(B, T, Hkv, D).transpose(1, 2)  # (B, H_kv, T, D)
        v = self.v_proj(x).reshape(B, T, Hkv, D).transpose(1, 2)  # (B, H_kv, T, D)
        past = 0
        if cache is not None:
            past = len(cache)
            k, v = cache.append(k, v)  # (B, H_kv, P + T, D)
        mask = None
        if is_causal and past > 0:
            mask = np.tril(np.ones((T, past + T), dtype=bool), k=past)  # (T, P + T), bottom-right
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and past == 0,
                                               enable_gqa=True)  # (B, H, T, D)
        return self.out_proj(heads.transpose(1, 2).reshape(B, T, E))  # (B, T, E)
