"""The fast path of ``nn.functional.scaled_dot_product_attention``: the same math, reorganized.

``scaled_dot_product_attention`` in ``tinyattn/nn/functional.py`` is the reference: it builds
the (..., L, S) scores, softmaxes them and multiplies by V, one line per formula, and its
backward is six lines. When ``tinyattn.kernels.ENABLED`` (the default), it hands the checked
inputs to ``attention`` below, which computes exactly the same values (equal to float64
round-off: ``tests/test_kernels.py``, forward and backward, every mask kind, GQA, fully masked
rows, dropout) with five tricks. Measured with ``python benchmarks/attention.py`` on the 2-core
machine of ``benchmarks/README.md``:

1. **Tiles of about one L2 cache.** The scores are computed, masked, exponentiated and used in
   tiles of about 1 MiB (whole matrices when they are small, else blocks of rows), so each tile
   is still in cache for the next pass instead of streaming the whole (..., L, S) array through
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
5. **Heads are read where they lie.** MultiheadAttention's heads are (N, L, H, D) projections
   viewed as (N, H, L, D): strided. Flattening the batch to one axis would copy all three; the
   kernel keeps two batch axes (everything before the heads, and the heads), which any view
   allows, and ``matmul`` reads the strided matrices directly (Q is scaled tile by tile anyway).
   For all-MiniLM-L6-v2 encoding 64 sentences (``benchmarks/pretrained.py``; the old and new
   kernel alternating in one process, medians of 9) this cut the attention's time from about 100
   to 65 ms and the page faults of the whole encode from 37,500 to 28,300: a fresh
   multi-megabyte copy costs a page fault for every 4 KiB it touches.

Together they buy (``python benchmarks/attention.py --runs 5``, quiet 2-core machine): the SDPA
forward of shape (8, 8, 512, 64) runs 1.62× faster than the reference (1.60–1.83× over 5 runs),
within 1.28× of its two raw matrix products; a whole encoder layer, forward and backward, about
as fast either way (1.02×: its time is mostly the projections' GEMMs). On an earlier machine the
same script gave 1.91× and 1.44×. Only trick 5 was timed on its own (above).
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
    Q = _two_batch_axes(q.data, batch, (L, E))  # (B0, B1, L, E)
    K = _two_batch_axes(k.data, batch, (S, E))  # (B0, B1, S, E)
    V = _two_batch_axes(v.data, batch, (S, Ev))  # (B0, B1, S, Ev)
    B0, B1 = Q.shape[:2]
    blocked = None if allowed is None else _two_batch_axes(~allowed, batch, (L, S))  # (B0, B1, L, S)
    B = None if bias is None else _two_batch_axes(bias.data, batch, (L, S))  # (B0, B1, L, S)
    keep = None if keep is None else keep.reshape(B0, B1, L, S)  # (B0, B1, L, S)
    X = np.empty((B0, B1, L, S), dtype)  # exp(scores − row max): the unnormalized weights
    O = np.empty((B0, B1, L, Ev), dtype)  # the output
    ell = np.empty((B0, B1, L, 1), dtype)  # row sums ℓ of X (1 for a fully masked row)

    def forward_tile(gs, rs):
        t = (*gs, rs)  # one cache-sized tile: some matrices, some of their rows
        x = X[t]  # (b0, b1, r, S)
        np.matmul(Q[t] * scale_, np.swapaxes(K[gs], -1, -2), out=x)  # scale the (r, E) side: E ≤ S
        if B is not None:
            x += B[t]
        if blocked is not None:
            np.copyto(x, -np.inf, where=blocked[t])
        m = np.max(x, axis=-1, keepdims=True, initial=-np.inf)  # initial: S may be 0
        m[m == -np.inf] = 0.0  # a fully masked row: exp(-inf) = 0 everywhere, never NaN
        x -= m
        np.exp(x, out=x)
        rowsum = np.sum(x, axis=-1, keepdims=True)  # (b0, b1, r, 1)
        rowsum[rowsum == 0] = 1.0  # fully masked rows: output 0 instead of 0/0
        ell[t] = rowsum
        o = O[t]  # (b0, b1, r, Ev)
        np.matmul(x * keep[t] if keep is not None else x, V[gs], out=o)
        o /= rowsum

    _for_each_tile(forward_tile, B0, B1, L, S, X.itemsize)

    def backward(g):
        dO = _two_batch_axes(g, batch, (L, Ev)) / ell  # (B0, B1, L, Ev): dO / ℓ
        D = np.sum(dO * O, axis=-1, keepdims=True)  # (B0, B1, L, 1): rowsum(dP ∘ P) / ℓ
        dQ = np.empty((B0, B1, L, E), dtype) if q.requires_grad else None
        dK = np.zeros((B0, B1, S, E), dtype) if k.requires_grad else None
        dV = np.zeros((B0, B1, S, Ev), dtype) if v.requires_grad else None
        dB = np.empty((B0, B1, L, S), dtype) if bias is not None and bias.requires_grad else None

        def backward_tile(gs, rs):
            t = (*gs, rs)
            x = X[t]  # (b0, b1, r, S) = ℓ P
            xd = x * keep[t] if keep is not None else x
            if dV is not None:
                dV[gs] += np.swapaxes(xd, -1, -2) @ dO[t]  # Pᵀ dO
            ds = dO[t] @ np.swapaxes(V[gs], -1, -2)  # (b0, b1, r, S): dP / ℓ
            if keep is not None:
                ds *= keep[t]
            ds -= D[t]
            ds *= x  # dS = P ∘ (dP − rowsum(dP ∘ P)), the softmax backward
            if dQ is not None:
                dq = ds @ K[gs]  # (b0, b1, r, E)
                dq *= scale_
                dQ[t] = dq
            if dK is not None:
                dK[gs] += np.swapaxes(ds, -1, -2) @ (Q[t] * scale_)  # (b0, b1, S, E)
            if dB is not None:
                dB[t] = ds

        _for_each_tile(backward_tile, B0, B1, L, S, X.itemsize)
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
        P = X / ell if keep is None else X * keep / ell  # (B0, B1, L, S)
        return output, Tensor(P.reshape(batch + (L, S)))
    return output


def _two_batch_axes(x: np.ndarray, batch: tuple, tail: tuple) -> np.ndarray:
    """x broadcast to batch + tail, then viewed as (B0, B1) + tail: B1 the last batch axis (the
    heads, for attention's (N, H, L, E)), B0 the others merged. Heads split off a projection,
    (N, L, H, E) transposed, stay a view: matmul reads strided matrices, so nothing is copied."""
    B1 = batch[-1] if batch else 1
    return np.broadcast_to(x, batch + tail).reshape((math.prod(batch[:-1]), B1) + tail)


def _tile_groups(B0: int, B1: int, L: int, S: int, itemsize: int) -> list:
    """Split a (B0, B1, L, S) score array into tiles of about TILE_BYTES, grouped by matrix.

    Returns [((b0 slice, b1 slice), [row slices])]: each group owns whole matrices, so groups can
    run in parallel (the backward accumulates dK and dV over a matrix's row tiles).
    """
    per_matrix = max(1, L * S * itemsize)
    if per_matrix * B1 <= TILE_BYTES:  # whole rows of B1 matrices per tile
        step = TILE_BYTES // max(1, per_matrix * B1)
        return [((slice(i, i + step), slice(None)), [slice(None)]) for i in range(0, B0, step)]
    if per_matrix <= TILE_BYTES:  # several matrices of one row per tile
        step = TILE_BYTES // per_matrix
        return [((slice(i, i + 1), slice(j, j + step)), [slice(None)])
                for i in range(B0) for j in range(0, B1, step)]
    rows = max(1, TILE_BYTES // (S * itemsize))  # one matrix, a few rows per tile
    return [((slice(i, i + 1), slice(j, j + 1)), [slice(r, r + rows) for r in range(0, L, rows)])
            for i in range(B0) for j in range(B1)]


@functools.lru_cache(maxsize=None)
def _thread_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tinyattn")


def _for_each_tile(work, B0: int, B1: int, L: int, S: int, itemsize: int) -> None:
    """Call work(batch slice, row slice) on every tile, one group per thread.

    As many threads as BLAS may use (``ta.set_num_threads``), each making single-threaded BLAS
    calls. Tiles write disjoint slices.
    """
    groups = _tile_groups(B0, B1, L, S, itemsize)

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
