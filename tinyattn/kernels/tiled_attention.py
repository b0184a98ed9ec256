"""The fast path of ``nn.functional.scaled_dot_product_attention``: the same math, reorganized.

``scaled_dot_product_attention`` in ``tinyattn/nn/functional.py`` is the reference: it builds
the (..., L, S) scores, softmaxes them and multiplies by V, one line per formula, and its
backward is six lines. When ``tinyattn.kernels.ENABLED`` (the default), it hands the checked
inputs to ``attention`` below, which computes exactly the same values (equal to float64
round-off: ``tests/test_kernels.py``, forward and backward, every mask kind, GQA, fully masked
rows, dropout) with four tricks. Measured with ``python benchmarks/attention.py`` on the 2-core
machine of ``benchmarks/README.md``:

1. **Tiles of about one L2 cache.** The scores are computed, masked, exponentiated and used in
   tiles of about 1 MiB (whole matrices when they are small, else blocks of rows), so each tile
   is still in cache for the next pass instead of streaming the whole (G, L, S) array through
   memory five times.
2. **Threads over tiles, one BLAS thread each.** NumPy releases the GIL in ``matmul`` and in
   ufuncs, so the softmax passes of different tiles run on different cores too; the process's
   BLAS thread count is set to 1 while the tiles run and restored after. Without this, the
   elementwise passes run on one core while the BLAS threads wait.
3. **Normalize the output, not the weights.** With ℓ the row sums of X = exp(scores − max), the
   output is (X V) / ℓ: one division of an (L, Ev) array instead of an (L, S) one. X is kept
   for the backward, where P = X / ℓ appears only inside products.
4. **rowsum(dP ∘ P) = rowsum(dO ∘ O).** The softmax backward needs D = rowsum(dP ∘ P), an
   O(L·S) pass; since dP = dO Vᵀ and O = P V, it equals rowsum(dO ∘ O), an O(L·Ev) product
   (the trick FlashAttention uses too).

Together they buy (``python benchmarks/attention.py --runs 5``, quiet 2-core machine): the SDPA
forward of shape (8, 8, 512, 64) runs 1.91× faster than the reference (1.80–2.05× over 5 runs),
within 1.44× of its two raw matrix products; a whole encoder layer, forward and backward, 1.05×
faster (its time is mostly the projections' GEMMs). The tricks were not timed one by one.
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..autograd import Tensor, unbroadcast
from ..threads import get_num_threads, set_num_threads

__all__ = ["attention", "TILE_BYTES"]

TILE_BYTES = 1 << 20  # one tile of scores: about a core's L2 cache


def attention(q: Tensor, k: Tensor, v: Tensor, allowed, bias, keep, scale: float,
              return_weights: bool = False):
    """softmax(scale·Q Kᵀ + bias, masked where not ``allowed``) V, tiled and threaded.

    q (..., L, E), k (..., S, E), v (..., S, Ev) tensors (key/value heads already repeated for
    GQA); allowed: bool array (True = may attend) or None; bias: float tensor or None; keep: the
    dropout multipliers (0 or 1/(1−p)) of shape batch + (L, S), or None. All broadcast to the
    scores' shape batch + (L, S). Returns the output (..., L, Ev) [and the weights].
    """
    L, S, E, Ev = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    dtype = np.result_type(q.dtype, k.dtype, v.dtype)
    scale_ = np.asarray(scale, dtype)
    Q = _flatten_batch(q.data, batch, (L, E))  # (G, L, E)
    K = _flatten_batch(k.data, batch, (S, E))  # (G, S, E)
    V = _flatten_batch(v.data, batch, (S, Ev))  # (G, S, Ev)
    G = Q.shape[0]
    blocked = None if allowed is None else _flatten_batch(~allowed, batch, (L, S))  # (G, L, S)
    B = None if bias is None else _flatten_batch(bias.data, batch, (L, S))  # (G, L, S)
    keep = None if keep is None else keep.reshape(G, L, S)  # (G, L, S)
    X = np.empty((G, L, S), dtype)  # exp(scores − row max): the unnormalized weights
    O = np.empty((G, L, Ev), dtype)  # the output
    ell = np.empty((G, L, 1), dtype)  # row sums ℓ of X (1 for a fully masked row)

    def forward_tile(gs, rs):
        x = X[gs, rs]  # (g, r, S), one cache-sized tile
        np.matmul(Q[gs, rs] * scale_, np.swapaxes(K[gs], -1, -2), out=x)
        if B is not None:
            x += B[gs, rs]
        if blocked is not None:
            np.copyto(x, -np.inf, where=blocked[gs, rs])
        m = np.max(x, axis=-1, keepdims=True, initial=-np.inf)  # initial: S may be 0
        m[m == -np.inf] = 0.0  # a fully masked row: exp(-inf) = 0 everywhere, never NaN
        x -= m
        np.exp(x, out=x)
        rowsum = np.sum(x, axis=-1, keepdims=True)  # (g, r, 1)
        rowsum[rowsum == 0] = 1.0  # fully masked rows: output 0 instead of 0/0
        ell[gs, rs] = rowsum
        o = (x * keep[gs, rs] if keep is not None else x) @ V[gs]  # (g, r, Ev)
        o /= rowsum
        O[gs, rs] = o

    _for_each_tile(forward_tile, G, L, S, X.itemsize)

    def backward(g):
        dO = _flatten_batch(g, batch, (L, Ev)) / ell  # (G, L, Ev): dO / ℓ
        D = np.sum(dO * O, axis=-1, keepdims=True)  # (G, L, 1): rowsum(dP ∘ P) / ℓ
        dQ = np.empty((G, L, E), dtype) if q.requires_grad else None
        dK = np.zeros((G, S, E), dtype) if k.requires_grad else None
        dV = np.zeros((G, S, Ev), dtype) if v.requires_grad else None
        dB = np.empty((G, L, S), dtype) if bias is not None and bias.requires_grad else None

        def backward_tile(gs, rs):
            x = X[gs, rs]  # (g, r, S) = ℓ P
            xd = x * keep[gs, rs] if keep is not None else x
            if dV is not None:
                dV[gs] += np.swapaxes(xd, -1, -2) @ dO[gs, rs]  # Pᵀ dO
            ds = dO[gs, rs] @ np.swapaxes(V[gs], -1, -2)  # (g, r, S): dP / ℓ
            if keep is not None:
                ds *= keep[gs, rs]
            ds -= D[gs, rs]
            ds *= x  # dS = P ∘ (dP − rowsum(dP ∘ P)), the softmax backward
            if dQ is not None:
                dq = ds @ K[gs]  # (g, r, E)
                dq *= scale_
                dQ[gs, rs] = dq
            if dK is not None:
                dK[gs] += np.swapaxes(ds, -1, -2) @ (Q[gs, rs] * scale_)  # (g, S, E)
            if dB is not None:
                dB[gs, rs] = ds

        _for_each_tile(backward_tile, G, L, S, X.itemsize)
        grads = (
            None if dQ is None else unbroadcast(dQ.reshape(batch + (L, E)), q.shape),
            None if dK is None else unbroadcast(dK.reshape(batch + (S, E)), k.shape),
            None if dV is None else unbroadcast(dV.reshape(batch + (S, Ev)), v.shape),
        )
        if bias is not None:
            grads += (None if dB is None else unbroadcast(dB.reshape(batch + (L, S)), bias.shape),)
        return grads

    parents = (q, k, v) if bias is None else (q, k, v, bias)
    output = Tensor.from_op(O.reshape(batch + (L, Ev)), parents, backward, "scaled_dot_product_attention")
    if return_weights:
        P = X / ell if keep is None else X * keep / ell  # (G, L, S)
        return output, Tensor(P.reshape(batch + (L, S)))
    return output


def _flatten_batch(x: np.ndarray, batch: tuple, tail: tuple) -> np.ndarray:
    """x broadcast to batch + tail, then viewed as (G,) + tail; copies only if it must."""
    return np.broadcast_to(x, batch + tail).reshape((math.prod(batch),) + tail)


def _tile_groups(G: int, L: int, S: int, itemsize: int) -> list:
    """Split a (G, L, S) score array into tiles of about TILE_BYTES, grouped by matrix.

    Returns [(batch slice, [row slices])]: each group owns whole matrices, so groups can run
    in parallel (the backward accumulates dK and dV over a matrix's row tiles).
    """
    per_matrix = max(1, L * S * itemsize)
    if per_matrix <= TILE_BYTES:
        step = TILE_BYTES // per_matrix
        return [(slice(g, g + step), [slice(None)]) for g in range(0, G, step)]
    rows = max(1, TILE_BYTES // (S * itemsize))
    return [(slice(g, g + 1), [slice(r, r + rows) for r in range(0, L, rows)]) for g in range(G)]


@functools.lru_cache(maxsize=None)
def _thread_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tinyattn")


def _for_each_tile(work, G: int, L: int, S: int, itemsize: int) -> None:
    """Call work(batch slice, row slice) on every tile, one group per thread.

    As many threads as BLAS may use (``ta.set_num_threads``), each making single-threaded BLAS
    calls. Tiles write disjoint slices.
    """
    groups = _tile_groups(G, L, S, itemsize)

    def run(group):
        gs, row_slices = group
        for rs in row_slices:
            work(gs, rs)

    blas_threads = get_num_threads() or 1
    workers = min(blas_threads, len(groups))
    if workers <= 1:
        for group in groups:
            run(group)
        return
    set_num_threads(1)
    try:
        list(_thread_pool(workers).map(run, groups))
    finally:
        set_num_threads(blas_threads)
