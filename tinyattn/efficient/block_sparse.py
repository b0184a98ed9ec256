"""Block-sparse attention (BigBird / Longformer): window, global and random key blocks.

Zaheer et al., "Big Bird: Transformers for Longer Sequences" (NeurIPS 2020); Beltagy et al.,
"Longformer" (2020) for window + global. Queries and keys are cut into blocks of b positions
(nq = ⌈L/b⌉ query blocks, nk = ⌈S/b⌉ key blocks); query block r attends the key blocks c with

- window: |r − c| ≤ window (causal: 0 ≤ r − c ≤ window),
- global: the first ``num_global`` blocks (g = num_global · b tokens) attend every key block and
  are attended by every query block,
- random: ``num_random`` further key blocks per (non-global) query block, drawn with ``seed``
  among those not yet attended (causal: among c ≤ r),

and causal attention keeps j ≤ i inside the blocks. Only the P allowed (r, c) block pairs are
gathered: the scores are (P, b, b), with P ≈ nq · (2·window + 1 + num_global + num_random) plus
num_global · nk for the global rows, so the cost is O(L · (w + g + r) · b · D) instead of O(L · S · D):

    out_i = Σ_{j allowed} softmax_j(scale · q_i·k_j) v_j,  the softmax over the row's gathered blocks.

Claim: exact under its mask — equals ``scaled_dot_product_attention`` with ``block_sparse_mask``
to float64 round-off, forward and backward (a hand-derived backward over the same block pairs).
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..nn import functional as F
from .common import check_int, check_qkv, dense_attention, empty_attention, flat
from .registry import Variant, register

__all__ = ["block_sparse_attention", "block_sparse_mask", "block_sparse_layout", "block_sparse_pairs"]


def _check_layout(op, L, S, block, window, num_global, num_random):
    return (check_int(op, "L", L, 0), check_int(op, "S", S, 0), check_int(op, "block", block, 1),
            check_int(op, "window", window, 0), check_int(op, "num_global", num_global, 0),
            check_int(op, "num_random", num_random, 0))


def block_sparse_layout(L: int, S: int, block: int = 16, window: int = 1, num_global: int = 1,
                        num_random: int = 1, seed: int = 0, is_causal: bool = False) -> np.ndarray:
    """The (nq, nk) bool block layout: True where query block r attends key block c.

    window blocks |r − c| ≤ window, global rows and columns r, c < num_global, and num_random
    seeded random blocks per non-global row among the rest; causal keeps c ≤ r.
    """
    L, S, block, window, num_global, num_random = _check_layout("block_sparse_layout", L, S, block, window,
                                                                num_global, num_random)
    nq, nk = -(-L // block), -(-S // block)
    r = np.arange(nq)[:, None]  # (nq, 1)
    c = np.arange(nk)[None, :]  # (1, nk)
    reach = (c <= r) if is_causal else np.ones((nq, nk), dtype=bool)  # (nq, nk)
    low = 0 if is_causal else -window
    layout = (r - c >= low) & (r - c <= window)  # (nq, nk) window blocks
    layout |= (r < num_global) | (c < num_global)  # global rows and columns
    layout &= reach
    rng = np.random.default_rng(seed)
    for row in range(num_global, nq):
        free = np.flatnonzero(reach[row] & ~layout[row])
        layout[row, rng.choice(free, size=min(num_random, free.size), replace=False)] = True
    return layout


def block_sparse_pairs(L: int, S: int, block: int = 16, window: int = 1, num_global: int = 1,
                       num_random: int = 1, seed: int = 0, is_causal: bool = False):
    """The (r, c) block pairs the attention gathers, row-major: two (P,) int arrays.

    ``block_sparse_attention`` computes exactly P · block² scores (P = len(rows)).
    """
    return np.nonzero(block_sparse_layout(L, S, block, window, num_global, num_random, seed, is_causal))


def block_sparse_mask(L: int, S: int, block: int = 16, window: int = 1, num_global: int = 1,
                      num_random: int = 1, seed: int = 0, is_causal: bool = False) -> np.ndarray:
    """The (L, S) bool mask in SDPA polarity (True = may attend): the layout expanded to tokens,
    and j ≤ i when causal. O(L·S): for checks and pictures only."""
    layout = block_sparse_layout(L, S, block, window, num_global, num_random, seed, is_causal)
    mask = np.repeat(np.repeat(layout, block, axis=0), block, axis=1)[:L, :S]  # (L, S)
    if is_causal:
        mask &= np.tril(np.ones((L, S), dtype=bool))
    return mask


def _blocks(x: np.ndarray, n: int, b: int) -> np.ndarray:
    """(G, T, D) -> (n, G, b, D): zero rows pad the last block; the block index first."""
    G, T, D = x.shape
    xp = np.zeros((G, n * b, D), dtype=x.dtype)
    xp[:, :T] = x
    return np.ascontiguousarray(xp.reshape(G, n, b, D).transpose(1, 0, 2, 3))


def _unblocks(x: np.ndarray, T: int) -> np.ndarray:
    """(n, G, b, D) -> (G, T, D), dropping the padding rows."""
    n, G, b, D = x.shape
    return x.transpose(1, 0, 2, 3).reshape(G, n * b, D)[:, :T]


def _pair_allowed(rows, cols, b: int, S: int, is_causal: bool) -> np.ndarray:
    """(P, 1, b, b) bool: inside each gathered block, key j < S (not padding) and j ≤ i if causal."""
    i = rows[:, None, None] * b + np.arange(b)[None, :, None]  # (P, b, 1) query index
    j = cols[:, None, None] * b + np.arange(b)[None, None, :]  # (P, 1, b) key index
    allowed = (j < S) & ((j <= i) if is_causal else True)  # (P, b, b)
    return allowed[:, None]


def _forward(qb, kb, vb, rows, cols, allowed):
    """The segmented softmax over each query row's gathered blocks.

    qb (nq, G, b, D) pre-scaled, kb (nk, G, b, D), vb (nk, G, b, dv) -> out (nq, G, b, dv) and the
    weights p (P, G, b, b). Per row: m = max over its blocks, ℓ = Σ e^(s − m), out = Σ e^(s − m) V / ℓ.
    """
    s = qb[rows] @ np.swapaxes(kb[cols], -1, -2)  # (P, G, b, b): the only scores computed
    np.copyto(s, -np.inf, where=~allowed)
    top = np.full(qb.shape[:3], -np.inf, dtype=qb.dtype)  # (nq, G, b)
    np.maximum.at(top, rows, s.max(axis=-1))
    top[top == -np.inf] = 0  # a row that sees no key: e^(−inf) = 0, never NaN
    s -= top[rows][..., None]
    np.exp(s, out=s)  # e^(s − m), in place
    ell = np.zeros(qb.shape[:3], dtype=qb.dtype)  # (nq, G, b)
    np.add.at(ell, rows, s.sum(axis=-1))
    ell[ell == 0] = 1  # rows with no key keep zero weights
    s /= ell[rows][..., None]  # p (P, G, b, b)
    out = np.zeros(qb.shape[:3] + vb.shape[-1:], dtype=qb.dtype)  # (nq, G, b, dv)
    np.add.at(out, rows, s @ vb[cols])
    return out, s


def _backward(gb, out, p, qb, kb, vb, rows, cols, scale):
    """dq, dk, dv blocks over the same pairs: dV_c += Pᵀ dO_r, dP = dO_r V_cᵀ,
    dS = P ∘ (dP − rowsum(dO ∘ O)_r), dQ_r += scale · dS K_c, dK_c += dSᵀ (scale · Q_r)."""
    gp = gb[rows]  # (P, G, b, dv)
    dvb = np.zeros_like(vb)
    np.add.at(dvb, cols, np.swapaxes(p, -1, -2) @ gp)
    D = np.einsum("rgbe,rgbe->rgb", gb, out)  # (nq, G, b)
    dp = gp @ np.swapaxes(vb[cols], -1, -2)  # (P, G, b, b)
    ds = F.softmax_backward(dp, p, rowsum=D[rows][..., None])  # dS = P ∘ (dP − D)
    dqb = np.zeros_like(qb)
    np.add.at(dqb, rows, ds @ kb[cols])
    dkb = np.zeros_like(kb)
    np.add.at(dkb, cols, np.swapaxes(ds, -1, -2) @ qb[rows])
    return dqb * np.asarray(scale, qb.dtype), dkb, dvb


def block_sparse_attention(q, k, v, is_causal: bool = False, block: int = 16, window: int = 1,
                           num_global: int = 1, num_random: int = 1, seed: int = 0, scale=None) -> Tensor:
    """BigBird block-sparse attention, gathering only the allowed blocks: O(L·(w + g + r)·b·D).

    q (..., L, D), k (..., S, D), v (..., S, dv) -> (..., L, dv), equal to
    ``scaled_dot_product_attention(q, k, v, attn_mask=block_sparse_mask(L, S, ...))``; the layout
    is ``block_sparse_layout`` (window, global and seeded random blocks). A query that may attend
    no key gets zeros.
    """
    q, k, v = F.check_tensor(q, "query"), F.check_tensor(k, "key"), F.check_tensor(v, "value")
    check_qkv("block_sparse_attention", q, k, v)
    L, S = q.shape[-2], k.shape[-2]
    _, _, b, window, num_global, num_random = _check_layout("block_sparse_attention", L, S, block, window,
                                                            num_global, num_random)
    if L == 0 or S == 0:
        return empty_attention("block_sparse_attention", q, k, v)
    scale = F.check_scale(scale, q.shape[-1])
    rows, cols = block_sparse_pairs(L, S, b, window, num_global, num_random, seed, is_causal)  # (P,), (P,)
    nq, nk = -(-L // b), -(-S // b)
    qb = _blocks(flat(q) * np.asarray(scale, q.dtype), nq, b)  # (nq, G, b, D), pre-scaled
    kb, vb = _blocks(flat(k), nk, b), _blocks(flat(v), nk, b)  # (nk, G, b, D), (nk, G, b, dv)
    out, p = _forward(qb, kb, vb, rows, cols, _pair_allowed(rows, cols, b, S, is_causal))

    def backward(grad):
        gb = _blocks(grad.reshape((-1, L, v.shape[-1])), nq, b)  # (nq, G, b, dv)
        dqb, dkb, dvb = _backward(gb, out, p, qb, kb, vb, rows, cols, scale)
        return (_unblocks(dqb, L).reshape(q.shape), _unblocks(dkb, S).reshape(k.shape),
                _unblocks(dvb, S).reshape(v.shape))

    return Tensor.from_op(_unblocks(out, L).reshape(q.shape[:-1] + v.shape[-1:]), (q, k, v), backward,
                          "block_sparse_attention")


def _reference(q, k, v, is_causal=False, block=16, window=1, num_global=1, num_random=1, seed=0):
    mask = block_sparse_mask(q.shape[-2], k.shape[-2], block, window, num_global, num_random, seed, is_causal)
    return dense_attention(q, k, v, mask=mask)


register(Variant(
    name="block_sparse", kind="attention", claim="exact under its mask",
    paper="Zaheer et al. 2020, Big Bird (window + global as in Beltagy et al. 2020, Longformer)",
    time="O(L·(w + g + r)·b·D)", memory="O(L·(w + g + r)·b)",
    summary="blocks of b: each query block sees its window, the global and a few random key blocks",
    attend=lambda q, k, v, is_causal=False, block=16, window=1, num_global=1, num_random=1, seed=0:
        block_sparse_attention(q, k, v, is_causal=is_causal, block=block, window=window,
                               num_global=num_global, num_random=num_random, seed=seed),
    reference=_reference,
    options={"block": 16, "window": 1, "num_global": 1, "num_random": 1, "seed": 0}))
