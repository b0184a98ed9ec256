"""Flash attention: exact softmax attention, tile by tile, without the L x S score matrix.

Dao et al., "FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness" (2022),
in the loop order of FlashAttention-2 (Dao 2023): the outer loop over query blocks Q_i, the inner
over key blocks K_j, V_j, with the online softmax

    m' = max(m, rowmax(A_ij)),   ℓ' = e^(m − m') ℓ + rowsum(e^(A_ij − m')),
    O' = e^(m − m') O + e^(A_ij − m') V_j,       at the end O / ℓ and lse = m + log ℓ,

where A_ij = scale · Q_i K_jᵀ is one tile of scores. The backward recomputes each tile from the
saved lse: P_ij = exp(A_ij − lse_i).

Claim: exact — equals ``scaled_dot_product_attention`` to float64 round-off, forward and backward.
Cost: O(L·S·D) time like plain attention; memory O(L·D + block²) instead of O(L·S). Causal tiles
entirely above the diagonal are skipped.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..nn import functional as F
from .common import check_int, check_qkv, dense_attention, empty_attention, flat
from .registry import Variant, register

__all__ = ["flash_attention", "flash_tile_kinds", "TILE_SKIPPED", "TILE_MASKED", "TILE_FULL"]

TILE_SKIPPED, TILE_MASKED, TILE_FULL = 0, 1, 2


def _tile_kind(r0: int, r1: int, c0: int, c1: int, is_causal: bool) -> int:
    """Rows [r0, r1) x keys [c0, c1): skipped (all above the diagonal), masked, or full.

    Causal is top-left aligned as in SDPA: query i sees keys j ≤ i.
    """
    if not is_causal or c1 - 1 <= r0:
        return TILE_FULL
    if c0 > r1 - 1:
        return TILE_SKIPPED
    return TILE_MASKED


def flash_tile_kinds(L: int, S: int, block_size: int = 128, is_causal: bool = False) -> np.ndarray:
    """The tile map of ``flash_attention``: (ceil(L/block), ceil(S/block)) ints.

    TILE_FULL (2): computed without a mask; TILE_MASKED (1): computed, then the causal mask is
    applied inside the tile; TILE_SKIPPED (0): entirely above the diagonal, never computed.
    """
    rows = range(0, L, block_size)
    cols = range(0, S, block_size)
    return np.array([[_tile_kind(r0, min(r0 + block_size, L), c0, min(c0 + block_size, S), is_causal)
                      for c0 in cols] for r0 in rows], dtype=np.int64).reshape(len(rows), len(cols))


def _tile_scores(qb: np.ndarray, kb: np.ndarray, r0: int, c0: int, kind: int) -> np.ndarray:
    """A_ij = Q_i K_jᵀ for one tile (one of them pre-scaled), −inf above the diagonal if masked."""
    a = qb @ np.swapaxes(kb, -1, -2)  # (G, br, bc)
    if kind == TILE_MASKED:
        rows = np.arange(r0, r0 + a.shape[-2])[:, None]  # (br, 1)
        cols = np.arange(c0, c0 + a.shape[-1])[None, :]  # (1, bc)
        np.copyto(a, -np.inf, where=cols > rows)
    return a


def _flash_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, block: int,
                   is_causal: bool):
    """O and the row log-sum-exp of softmax(scale · Q Kᵀ) V, one query block at a time.

    q (G, L, D), k (G, S, D), v (G, S, Dv) -> O (G, L, Dv), lse (G, L).
    Per query block i: for each key block j, m' = max(m, rowmax(A_ij)),
    ℓ = e^(m−m')ℓ + rowsum(e^(A_ij−m')), o = e^(m−m')o + e^(A_ij−m') V_j;
    at the end O_i = o / ℓ and lse_i = m + log ℓ.
    """
    G, L, _ = q.shape
    S, Dv, dtype = v.shape[-2], v.shape[-1], q.dtype
    out = np.empty((G, L, Dv), dtype=dtype)
    lse = np.empty((G, L), dtype=dtype)
    for r0 in range(0, L, block):
        r1 = min(r0 + block, L)
        qb = q[:, r0:r1] * np.asarray(scale, dtype)  # (G, br, D)
        m = np.full((G, r1 - r0), -np.inf, dtype=dtype)  # running max
        ell = np.zeros((G, r1 - r0), dtype=dtype)  # running sum of e^(A − m)
        o = np.zeros((G, r1 - r0, Dv), dtype=dtype)  # running Σ e^(A − m) v
        for c0 in range(0, S, block):
            c1 = min(c0 + block, S)
            kind = _tile_kind(r0, r1, c0, c1, is_causal)
            if kind == TILE_SKIPPED:
                break  # every later key block is above the diagonal too
            a = _tile_scores(qb, k[:, c0:c1], r0, c0, kind)  # A_ij (G, br, bc)
            # every row sees key 0 (causal is top-left aligned), so m' is finite from the first
            # tile on and m − m' is never (−inf) − (−inf)
            m_new = np.maximum(m, a.max(axis=-1))  # (G, br)
            a -= m_new[..., None]
            np.exp(a, out=a)  # P̃_ij = e^(A_ij − m'), in place
            alpha = np.exp(m - m_new)  # (G, br): rescales what was summed under the old max
            ell *= alpha
            ell += a.sum(axis=-1)
            o *= alpha[..., None]
            o += a @ v[:, c0:c1]  # (G, br, Dv)
            m = m_new
        out[:, r0:r1] = o / ell[..., None]
        lse[:, r0:r1] = m + np.log(ell)
    return out, lse


def _flash_backward(g, q, k, v, out, lse, scale: float, block: int, is_causal: bool):
    """dQ, dK, dV of flash attention, recomputing P_ij = e^(A_ij − lse_i) one tile at a time.

    g = dO, out = O (G, L, Dv), lse (G, L), q (G, L, D), k (G, S, D), v (G, S, Dv).
    δ = rowsum(dO ∘ O); per tile: dV_j += P_ijᵀ dO_i, dP_ij = dO_i V_jᵀ, dA_ij = P_ij ∘ (dP_ij − δ_i),
    dQ_i += dA_ij (scale · K_j), dK_j += scale · dA_ijᵀ Q_i.
    """
    L, S = q.shape[-2], k.shape[-2]
    delta = np.einsum("gld,gld->gl", g, out)  # (G, L): δ = rowsum(dO ∘ O)
    dq = np.zeros_like(q)  # (G, L, D)
    dk = np.empty_like(k)  # (G, S, D)
    dv = np.empty_like(v)  # (G, S, Dv)
    for c0 in range(0, S, block):
        c1 = min(c0 + block, S)
        kb, vb = k[:, c0:c1] * np.asarray(scale, k.dtype), v[:, c0:c1]  # (G, bc, D), (G, bc, Dv)
        dk_j = np.zeros_like(kb)
        dv_j = np.zeros_like(vb)
        first = (c0 // block) * block if is_causal else 0  # earlier query blocks are skipped tiles
        for r0 in range(first, L, block):
            r1 = min(r0 + block, L)
            kind = _tile_kind(r0, r1, c0, c1, is_causal)
            p = _tile_scores(q[:, r0:r1], kb, r0, c0, kind)  # A_ij (G, br, bc)
            p -= lse[:, r0:r1, None]
            np.exp(p, out=p)  # P_ij recomputed, in place
            gi = g[:, r0:r1]  # dO_i (G, br, Dv)
            dv_j += np.swapaxes(p, -1, -2) @ gi  # (G, bc, Dv)
            da = gi @ np.swapaxes(vb, -1, -2)  # dP_ij (G, br, bc)
            da = F.softmax_backward(da, p, rowsum=delta[:, r0:r1, None])  # dA_ij = P ∘ (dP − δ)
            dq[:, r0:r1] += da @ kb  # (G, br, D)
            dk_j += np.swapaxes(da, -1, -2) @ q[:, r0:r1]  # (G, bc, D)
        dk_j *= np.asarray(scale, k.dtype)
        dk[:, c0:c1] = dk_j
        dv[:, c0:c1] = dv_j
    return dq, dk, dv


def flash_attention(q, k, v, is_causal: bool = False, scale=None, block_size: int = 128) -> Tensor:
    """Exact softmax attention, tile by tile, never holding an L x S array (forward or backward).

    q (..., L, D), k (..., S, D), v (..., S, Dv) -> (..., L, Dv), equal to
    ``scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)`` up to round-off.
    Online softmax over key blocks j, with A_ij = scale · Q_i K_jᵀ: m' = max(m, rowmax(A_ij)),
    ℓ' = e^(m − m')ℓ + rowsum(e^(A_ij − m')), O' = e^(m − m')O + e^(A_ij − m') V_j.
    Keeps O and lse = m + log ℓ; the backward recomputes P_ij = e^(A_ij − lse) per tile.
    Memory O(L·D + block²) per (batch, head); causal tiles above the diagonal are skipped.
    """
    q, k, v = F.check_tensor(q, "query"), F.check_tensor(k, "key"), F.check_tensor(v, "value")
    check_qkv("flash_attention", q, k, v)
    block = check_int("flash_attention", "block_size", block_size, 1)
    if q.shape[-2] == 0 or k.shape[-2] == 0:
        return empty_attention("flash_attention", q, k, v)
    lead, L = q.shape[:-2], q.shape[-2]
    scale = F.check_scale(scale, q.shape[-1])
    qf, kf, vf = flat(q), flat(k), flat(v)  # (G, L, D), (G, S, D), (G, S, Dv)
    out, lse = _flash_forward(qf, kf, vf, scale, block, is_causal)  # (G, L, Dv), (G, L)

    def backward(grad):
        g = grad.reshape(out.shape)  # (G, L, Dv)
        dq, dk, dv = _flash_backward(g, qf, kf, vf, out, lse, scale, block, is_causal)
        return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)

    return Tensor.from_op(out.reshape(lead + (L, v.shape[-1])), (q, k, v), backward, "flash_attention")


register(Variant(
    name="flash", kind="attention", claim="exact",
    paper="Dao et al. 2022, FlashAttention (loop order of FlashAttention-2, Dao 2023)",
    time="O(L·S·D)", memory="O(L·D + block²)",
    summary="softmax attention tile by tile with the online softmax; the backward recomputes tiles",
    attend=lambda q, k, v, is_causal=False, block_size=128: flash_attention(q, k, v, is_causal=is_causal,
                                                                             block_size=block_size),
    reference=lambda q, k, v, is_causal=False, **_: dense_attention(q, k, v, is_causal=is_causal),
    options={"block_size": 128}))
