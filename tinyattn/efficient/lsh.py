"""Reformer LSH attention: hash, sort by bucket, attend within chunks, combine several rounds.

Kitaev et al., "Reformer: The Efficient Transformer" (ICLR 2020). Shared-QK attention, as in the
paper: one projection gives the queries and the keys are the normalized queries,
k_j = q_j / |q_j| (the ``key`` argument of ``lsh_attention`` is checked for its shape and NOT
used). A random rotation R (D, n_buckets/2) hashes a unit vector to

    h(x) = argmax([x R ; −x R])          (angular LSH: close directions share a bucket),

and each hash round r sorts the positions by (bucket, position), cuts the sorted sequence into
chunks of c and lets each query attend the keys of its own chunk and of the previous one (chunk 0
looks back to the last), when they share its bucket (causal: also j ≤ i). A query always sees
itself, so no row is empty. Rounds are combined by their log-sum-exp,

    out_i = Σ_r e^(lse_r(i) − logsumexp_r lse_r(i)) out_r(i),

with every score lowered by log N_ij, N_ij the number of rounds in which j is in i's set (the
paper's correction for duplicates): the result is then exactly softmax attention restricted to
the union of the rounds' sets, ``lsh_mask``. Cost per round O(L·c·D) (chunks of c against 2c keys)
plus the sort. The backward is the engine's, through gathers, matmuls and softmax.

Claim: approximate — exact when every key shares the query's bucket and chunk window in some round
(e.g. n_buckets = 1 with chunk_size ≥ L / 2); keys hashed elsewhere in every round are dropped.
L must be a multiple of chunk_size (or chunk_size ≥ L: one chunk).
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor, stack
from ..nn import functional as F
from .common import check_int, check_qkv, dense_attention, empty_attention
from .registry import Variant, register

__all__ = ["lsh_attention", "lsh_buckets", "lsh_mask"]


def _check(L: int, n_buckets, n_rounds, chunk_size):
    n_buckets = check_int("lsh_attention", "n_buckets", n_buckets, 1)
    if n_buckets > 1 and n_buckets % 2:
        raise ValueError(f"lsh_attention: n_buckets must be 1 or even (h = argmax([xR; −xR])), "
                         f"got {n_buckets}")
    n_rounds = check_int("lsh_attention", "n_rounds", n_rounds, 1)
    c = min(check_int("lsh_attention", "chunk_size", chunk_size, 1), L)
    if L % c:
        raise ValueError(f"lsh_attention: L = {L} is not a multiple of chunk_size {chunk_size}; expected "
                         f"chunk_size dividing L, or chunk_size >= L")
    return n_buckets, n_rounds, c


def lsh_buckets(x: np.ndarray, n_buckets: int, n_rounds: int, seed: int = 0) -> np.ndarray:
    """Angular LSH of x (G, L, D): (n_rounds, G, L) buckets h = argmax([x R_r ; −x R_r]).

    R_r (D, n_buckets/2) is a Gaussian draw seeded by (seed, r), so the first rounds of a run with
    more rounds are the same; n_buckets = 1 puts everything in bucket 0.
    """
    x = np.asarray(x)
    out = np.zeros((n_rounds,) + x.shape[:-1], dtype=np.int64)
    if n_buckets == 1:
        return out
    for r in range(n_rounds):
        R = np.random.default_rng([seed, r]).standard_normal((x.shape[-1], n_buckets // 2))  # (D, nb/2)
        proj = x @ R.astype(x.dtype)  # (G, L, nb/2)
        out[r] = np.argmax(np.concatenate([proj, -proj], axis=-1), axis=-1)
    return out


def _unit(x):
    """x / |x| along the last axis (Tensor or array); a zero vector stays zero."""
    if isinstance(x, Tensor):
        norm = (x * x).sum(dim=-1, keepdim=True).sqrt()  # (..., L, 1)
        return x / (norm + Tensor((norm.data == 0).astype(x.dtype)))
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _sorted_layout(buckets: np.ndarray, c: int):
    """Per round: the sort order (R, G, L), each token's position in it (R, G, L) and its chunk."""
    L = buckets.shape[-1]
    order = np.argsort(buckets * L + np.arange(L), axis=-1, kind="stable")  # (R, G, L) by (bucket, pos)
    pos = np.argsort(order, axis=-1)  # (R, G, L): where each token sits in the sorted sequence
    return order, pos, pos // c


def _member(buckets, chunks, nc: int, i: np.ndarray, j: np.ndarray, is_causal: bool) -> np.ndarray:
    """(R, G, ...) bool: is key j in query i's set in round r (same bucket, same or previous chunk)?

    i, j (G, ...) token indices, broadcast against each other; buckets, chunks (R, G, L).
    """
    R, G = buckets.shape[:2]
    shape = np.broadcast_shapes(i.shape, j.shape)
    i, j = np.broadcast_to(i, shape).reshape(G, -1), np.broadcast_to(j, shape).reshape(G, -1)  # (G, n)
    take = lambda a, t: np.take_along_axis(a, np.broadcast_to(t, (R,) + t.shape), axis=-1)  # noqa: E731
    same = take(buckets, i) == take(buckets, j)  # (R, G, n)
    ci, cj = take(chunks, i), take(chunks, j)
    near = (ci == cj) | ((nc > 1) & (cj == (ci - 1) % nc))
    ok = same & near & ((j <= i) if is_causal else True)
    return ok.reshape((R,) + shape)


def lsh_mask(q, n_buckets: int = 8, n_rounds: int = 2, chunk_size: int = 32, seed: int = 0,
             is_causal: bool = False) -> np.ndarray:
    """The (..., L, L) bool union over rounds of the pairs LSH attention attends (True = attended).

    O(L²): for checks, recall and pictures; ``lsh_attention`` equals softmax attention of q against
    the normalized queries under this mask.
    """
    qd = np.asarray(getattr(q, "data", q))
    L = qd.shape[-2]
    n_buckets, n_rounds, c = _check(L, n_buckets, n_rounds, chunk_size)
    qf = qd.reshape((-1,) + qd.shape[-2:])  # (G, L, D)
    buckets = lsh_buckets(_unit(qf), n_buckets, n_rounds, seed)  # (R, G, L)
    _, _, chunks = _sorted_layout(buckets, c)
    G, t = qf.shape[0], np.arange(L)
    i, j = np.broadcast_to(t[:, None], (G, L, L)), np.broadcast_to(t[None, :], (G, L, L))
    return _member(buckets, chunks, L // c, i, j, is_causal).any(axis=0).reshape(qd.shape[:-2] + (L, L))


def lsh_attention(q, k, v, is_causal: bool = False, n_buckets: int = 8, n_rounds: int = 2,
                  chunk_size: int = 32, seed: int = 0, scale=None) -> Tensor:
    """Reformer LSH attention, shared-QK: q (..., L, D), k unused (shape checked), v (..., L, dv).

    -> (..., L, dv) = softmax(scale · q k̂ᵀ) v restricted to ``lsh_mask`` (k̂ = q / |q|), computed
    round by round on chunks of ``chunk_size`` sorted by bucket: O(n_rounds · L · chunk_size · D).
    """
    q, k, v = F.check_tensor(q, "query"), F.check_tensor(k, "key"), F.check_tensor(v, "value")
    check_qkv("lsh_attention", q, k, v)
    if k.shape != q.shape:
        raise ValueError(f"lsh_attention: shared-QK attention needs key of the query's shape {q.shape} "
                         f"(its keys are the normalized queries), got {k.shape}")
    lead, L, D = q.shape[:-2], q.shape[-2], q.shape[-1]
    if L == 0:
        return empty_attention("lsh_attention", q, k, v)
    n_buckets, n_rounds, c = _check(L, n_buckets, n_rounds, chunk_size)
    s = F.check_scale(scale, D)
    qf = q.reshape((-1, L, D))  # (G, L, D)
    vf = v.reshape((-1, L, v.shape[-1]))  # (G, L, dv)
    G, nc = qf.shape[0], L // c
    keys = _unit(qf)  # (G, L, D) k̂ = q / |q|
    buckets = lsh_buckets(keys.data, n_buckets, n_rounds, seed)  # (R, G, L)
    order, pos, chunks = _sorted_layout(buckets, c)
    g = np.arange(G)[:, None, None]  # (G, 1, 1)
    outs, lses = [], []
    for r in range(n_rounds):
        qi = order[r].reshape(G, nc, c)  # (G, nc, c) token index of each sorted query
        kj = np.concatenate([qi, np.roll(qi, 1, axis=1)], axis=-1) if nc > 1 else qi  # (G, nc, w·c)
        member = _member(buckets, chunks, nc, qi[..., :, None], kj[..., None, :], is_causal)  # (R, ..., w·c)
        count = member.sum(axis=0)  # N_ij: in how many rounds j is in i's set
        scores = (qf[g, qi] @ keys[g, kj].transpose(-1, -2)) * s  # (G, nc, c, w·c)
        scores = scores - Tensor(np.log(np.maximum(count, 1)).astype(q.dtype))  # duplicates counted once
        scores = scores.masked_fill(~member[r], -np.inf)  # this round's set only
        top = Tensor(scores.data.max(axis=-1, keepdims=True))  # finite: a query always sees itself
        lse = (scores - top).exp().sum(dim=-1, keepdim=True).log() + top  # (G, nc, c, 1)
        p = (scores - lse).exp()  # (G, nc, c, w·c)
        unsort = (np.arange(G)[:, None], pos[r])  # sorted slot of each token
        outs.append((p @ vf[g, kj]).reshape((G, L, -1))[unsort])  # (G, L, dv) in token order
        lses.append(lse.reshape((G, L, 1))[unsort])  # (G, L, 1)
    weights = F.softmax(stack(lses, dim=0), dim=0)  # (R, G, L, 1)
    out = (stack(outs, dim=0) * weights).sum(dim=0)  # (G, L, dv)
    return out.reshape(lead + (L, v.shape[-1]))


def _reference(q, k, v, is_causal=False, n_buckets=8, n_rounds=2, chunk_size=32, seed=0):
    mask = lsh_mask(q, n_buckets, n_rounds, chunk_size, seed, is_causal)
    return dense_attention(q, _unit(np.asarray(q)), v, mask=mask)


register(Variant(
    name="lsh", kind="attention", claim="approximate",
    paper="Kitaev et al. 2020, Reformer: The Efficient Transformer",
    time="O(n_rounds·L·c·D + L log L)", memory="O(n_rounds·L·c)",
    summary="shared-QK; angular LSH buckets, sorted into chunks; rounds combined by log-sum-exp",
    bound="exact when every key shares the query's bucket (and chunk window) in some round",
    attend=lambda q, k, v, is_causal=False, n_buckets=8, n_rounds=2, chunk_size=32, seed=0: lsh_attention(
        q, k, v, is_causal=is_causal, n_buckets=n_buckets, n_rounds=n_rounds, chunk_size=chunk_size,
        seed=seed),
    reference=_reference, options={"n_buckets": 8, "n_rounds": 2, "chunk_size": 32, "seed": 0}))
