"""Linear attention: kernelized attention whose cost is linear in the sequence length.

Katharopoulos et al., "Transformers are RNNs: Fast Autoregressive Transformers with Linear
Attention" (2020). The softmax kernel exp(q·k) is replaced by φ(q)·φ(k) with φ(x) = elu(x) + 1 > 0,
and associativity does the rest:

    out_i = φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ) / (φ(q_i)ᵀ Σ_j φ(k_j) + eps),

O(L·D²) instead of O(L·S·D). The causal form carries the running sums (an RNN state) over j ≤ i.

Claim: approximate — a different attention, not an estimate of softmax attention; no bound on the
distance to it. Exact to its own O(L·S) form (``linear_attention_weights(q, k) @ v``).
"""

from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Tensor
from ..nn import functional as F
from .common import check_qkv, empty_attention, flat
from .registry import Variant, register

__all__ = ["linear_attention", "linear_attention_weights", "elu_feature_map"]


def _phi(x: np.ndarray) -> np.ndarray:
    """φ(x) = elu(x) + 1 = x + 1 for x > 0, e^x otherwise (always positive)."""
    return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))


def elu_feature_map(x) -> Tensor:
    """φ(x) = elu(x) + 1, elementwise, differentiable; φ'(x) = min(φ(x), 1)."""
    x = F.check_tensor(x)
    phi = _phi(x.data)
    return Tensor.from_op(phi, (x,), lambda g: (g * np.minimum(phi, 1),), "elu_feature_map")


def linear_attention_weights(q, k, is_causal: bool = False, eps: float = 1e-6) -> np.ndarray:
    """The (…, L, S) weights linear attention implicitly uses: P_ij = φ(q_i)·φ(k_j) / (Σ_j' … + eps).

    O(L·S): for pictures and checks. linear_attention(q, k, v) equals P @ v.
    """
    q, k = F.check_tensor(q, "query"), F.check_tensor(k, "key")
    w = _phi(q.data) @ np.swapaxes(_phi(k.data), -1, -2)  # (..., L, S) unnormalized weights
    if is_causal:
        w = np.where(np.tril(np.ones(w.shape[-2:], dtype=bool)), w, 0)
    return w / (w.sum(axis=-1, keepdims=True) + eps)


_ROWS = 512  # positions per step of the Python loop: every temporary stays small and in cache
_CHUNK = 64  # causal: positions per chunk whose C x C scores are formed explicitly


def _rows(x: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Rows r0 .. r1−1 of (G, n, D), zero rows where r ≥ n: (G, r1 − r0, D)."""
    part = x[:, r0:min(r1, x.shape[1])]
    if part.shape[1] == r1 - r0:
        return part
    pad = np.zeros((x.shape[0], r1 - r0 - part.shape[1], x.shape[2]), dtype=x.dtype)
    return np.concatenate([part, pad], axis=1)  # (G, r1 − r0, D)


def _linear_forward(q, k, v, eps):
    """Non-causal: O = φQ (φKᵀ V) / (φQ Σ_j φ(k_j) + eps): one pass over keys, one over queries.

    q (G, L, D), k (G, S, D), v (G, S, Dv) -> O (G, L, Dv), saved (kv (G, D, Dv), z (G, D), den (G, L)).
    """
    G, L, D = q.shape
    Dv = v.shape[-1]
    kv = np.zeros((G, D, Dv), dtype=q.dtype)  # Σ_j φ(k_j) v_jᵀ
    z = np.zeros((G, D), dtype=q.dtype)  # Σ_j φ(k_j)
    for r0 in range(0, k.shape[1], _ROWS):
        fk = _phi(k[:, r0:r0 + _ROWS])  # (G, r, D)
        kv += np.swapaxes(fk, -1, -2) @ v[:, r0:r0 + _ROWS]
        z += fk.sum(axis=1)
    out = np.empty((G, L, Dv), dtype=q.dtype)
    den = np.empty((G, L), dtype=q.dtype)
    for r0 in range(0, L, _ROWS):
        rows = slice(r0, r0 + _ROWS)
        fq = _phi(q[:, rows])  # (G, r, D)
        den[:, rows] = np.einsum("grd,gd->gr", fq, z) + eps
        out[:, rows] = (fq @ kv) / den[:, rows, None]  # (G, r, Dv)
    return out, (kv, z, den)


def _linear_backward(g, q, k, v, out, saved):
    """dq, dk, dv of the non-causal form, recomputing φ block by block.

    dnum = g / den, dden = −rowsum(g ∘ out) / den; dφQ = dnum kvᵀ + dden zᵀ; dkv = φQᵀ dnum,
    dz = φQᵀ dden; dφ(k_j) = dkv v_j + dz, dv_j = dkvᵀ φ(k_j); dx = dφ(x) ∘ φ'(x).
    """
    kv, z, den = saved
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    dkv, dz = np.zeros_like(kv), np.zeros_like(z)  # (G, D, Dv), (G, D)
    for r0 in range(0, q.shape[1], _ROWS):
        rows = slice(r0, r0 + _ROWS)
        fq = _phi(q[:, rows])  # (G, r, D)
        dnum = g[:, rows] / den[:, rows, None]  # (G, r, Dv)
        dden = -np.einsum("gre,gre->gr", g[:, rows], out[:, rows]) / den[:, rows]  # (G, r)
        dfq = dnum @ np.swapaxes(kv, -1, -2) + dden[..., None] * z[:, None, :]  # (G, r, D)
        dq[:, rows] = dfq * np.minimum(fq, 1)  # φ'(x) = min(φ(x), 1)
        dkv += np.swapaxes(fq, -1, -2) @ dnum
        dz += np.einsum("grd,gr->gd", fq, dden)
    for r0 in range(0, k.shape[1], _ROWS):
        rows = slice(r0, r0 + _ROWS)
        fk = _phi(k[:, rows])  # (G, r, D)
        dk[:, rows] = (v[:, rows] @ np.swapaxes(dkv, -1, -2) + dz[:, None, :]) * np.minimum(fk, 1)
        dv[:, rows] = fk @ dkv  # (G, r, Dv)
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

    q, k (G, n, D), v (G, n, Dv): the block's rows, of which the first ``keys`` are real keys
    (the rest lie past S and get φ = 0). state (G, D, Dv) = Σ φ(k_j) v_jᵀ and z (G, D) = Σ φ(k_j)
    over all earlier positions. In chunks c of C positions, with U_c, z_c the state before c:
    num_c = φQ_c U_c + W_c V_c, den_c = φQ_c z_c + W_c 1 + eps, W_c = tril(φQ_c φK_cᵀ) (the
    chunk's unnormalized weights).
    """
    n = q.shape[1]
    C = min(_CHUNK, n)
    fk = _phi(k)  # (G, n, D)
    fk[:, keys:] = 0
    qc, kc, vc = _chunked(_phi(q), C), _chunked(fk, C), _chunked(v, C)  # (G, nc, C, ·)
    kv = np.swapaxes(kc, -1, -2) @ vc  # (G, nc, D, Dv): each chunk's Σ φ(k_j) v_jᵀ
    ksum = kc.sum(axis=2)  # (G, nc, D)
    st = state[:, None] + _exclusive_cumsum(kv, axis=1)  # (G, nc, D, Dv): U_c
    zt = z[:, None] + _exclusive_cumsum(ksum, axis=1)  # (G, nc, D)
    tril = np.tril(np.ones((C, C), dtype=q.dtype))  # (C, C)
    a = qc @ np.swapaxes(kc, -1, -2)  # (G, nc, C, C): W_c before the tril
    a *= tril
    den = np.einsum("gncd,gnd->gnc", qc, zt) + a.sum(axis=-1) + eps  # (G, nc, C)
    return dict(qc=qc, kc=kc, vc=vc, st=st, zt=zt, a=a, den=den, tril=tril, C=C,
                state_out=st[:, -1] + kv[:, -1], z_out=zt[:, -1] + ksum[:, -1])


def _blocks(L: int, S: int):
    """(index, r0, r1, number of real keys in rows r0..r1−1) of the causal loop."""
    for i, r0 in enumerate(range(0, L, _ROWS)):
        r1 = min(r0 + _ROWS, L)
        yield i, r0, r1, max(0, min(S, r1) - r0)


def _causal_linear_forward(q, k, v, eps):
    """Causal: the state Σ_{j≤i} φ(k_j) v_jᵀ carried from block to block (the RNN view).

    q (G, L, D), k (G, S, D), v (G, S, Dv) -> O (G, L, Dv) and the (state, z) entering each
    block. Keys j ≥ L are never seen; queries past S see all S keys.
    """
    G, L, D = q.shape
    Dv = v.shape[-1]
    state, z = np.zeros((G, D, Dv), dtype=q.dtype), np.zeros((G, D), dtype=q.dtype)
    out = np.empty((G, L, Dv), dtype=q.dtype)
    entering = []
    for _, r0, r1, keys in _blocks(L, k.shape[1]):
        entering.append((state, z))
        b = _causal_block(q[:, r0:r1], _rows(k, r0, r1), _rows(v, r0, r1), keys, state, z, eps)
        num = b["qc"] @ b["st"] + b["a"] @ b["vc"]  # (G, nc, C, Dv)
        out[:, r0:r1] = _unchunked(num / b["den"][..., None], r1 - r0)
        state, z = b["state_out"], b["z_out"]
    return out, entering


def _causal_linear_backward(g, q, k, v, out, entering, eps):
    """dq, dk, dv of the causal form: blocks in reverse, carrying d(state) backwards.

    Per block (recomputed): dnum = g / den, dden = −rowsum(g ∘ out) / den,
    dW = tril(dnum Vᵀ + dden 1ᵀ), dφQ = dnum U_cᵀ + dden z_cᵀ + dW φK, dU_c = φQ_cᵀ dnum.
    A chunk's Σ φ(k_j) v_jᵀ feeds the states of every later chunk and block, so its gradient
    is Σ_{later c} dU_c plus the gradient of the state leaving the block.
    """
    G, L, _ = q.shape
    dq, dk, dv = np.empty_like(q), np.zeros_like(k), np.zeros_like(v)
    dstate = np.zeros_like(entering[0][0])  # (G, D, Dv): gradient of the state leaving the block
    dz = np.zeros_like(entering[0][1])  # (G, D)
    for i, r0, r1, keys in reversed(list(_blocks(L, k.shape[1]))):
        state, z = entering[i]
        b = _causal_block(q[:, r0:r1], _rows(k, r0, r1), _rows(v, r0, r1), keys, state, z, eps)
        qc, kc, vc, den, C = b["qc"], b["kc"], b["vc"], b["den"], b["C"]
        gc, oc = _chunked(g[:, r0:r1], C), _chunked(out[:, r0:r1], C)  # (G, nc, C, Dv)
        dnum = gc / den[..., None]  # (G, nc, C, Dv)
        dden = -np.einsum("gnce,gnce->gnc", gc, oc) / den  # (G, nc, C)
        da = (dnum @ np.swapaxes(vc, -1, -2) + dden[..., None]) * b["tril"]  # (G, nc, C, C)
        dfq = dnum @ np.swapaxes(b["st"], -1, -2) + dden[..., None] * b["zt"][:, :, None] + da @ kc
        dst = np.swapaxes(qc, -1, -2) @ dnum  # (G, nc, D, Dv)
        dzt = np.einsum("gncd,gnc->gnd", qc, dden)  # (G, nc, D)
        dkv = _reverse_exclusive_cumsum(dst, axis=1) + dstate[:, None]  # (G, nc, D, Dv)
        dks = _reverse_exclusive_cumsum(dzt, axis=1) + dz[:, None]  # (G, nc, D)
        dfk = np.swapaxes(da, -1, -2) @ qc + vc @ np.swapaxes(dkv, -1, -2) + dks[:, :, None]
        dq[:, r0:r1] = _unchunked(dfq * np.minimum(qc, 1), r1 - r0)  # φ'(x) = min(φ(x), 1)
        dk[:, r0:r0 + keys] = _unchunked(dfk * np.minimum(kc, 1), keys)
        dv[:, r0:r0 + keys] = _unchunked(np.swapaxes(b["a"], -1, -2) @ dnum + kc @ dkv, keys)
        dstate = dstate + dst.sum(axis=1)  # the state entering feeds every S_c and the state leaving
        dz = dz + dzt.sum(axis=1)
    return dq, dk, dv


def linear_attention(q, k, v, is_causal: bool = False, eps: float = 1e-6) -> Tensor:
    """Linear attention (Katharopoulos et al. 2020): O(L + S) time and memory in sequence length.

    q (..., L, D), k (..., S, D), v (..., S, Dv) -> (..., L, Dv). With φ(x) = elu(x) + 1:
    out_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / (φ(q_i)ᵀ Σ_j φ(k_j) + eps), the sums over all j, or over
    j ≤ i when causal (top-left aligned, as SDPA's is_causal). Non-causal uses associativity,
    (φQ φKᵀ) V = φQ (φKᵀ V); causal carries the running state Σ_{j≤i} φ(k_j) v_jᵀ (the RNN
    view) from block to block. Not softmax attention: the weights are φ(q_i)·φ(k_j)
    normalized, not e^(q_i·k_j) normalized. Keeps only O(L) numbers for the backward.
    """
    q, k, v = F.check_tensor(q, "query"), F.check_tensor(k, "key"), F.check_tensor(v, "value")
    check_qkv("linear_attention", q, k, v)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"linear_attention: eps must be a positive number (it keeps the "
                         f"normalizer φ(q)·Σφ(k) + eps away from 0), got {eps!r}")
    if q.shape[-2] == 0 or k.shape[-2] == 0:
        return empty_attention("linear_attention", q, k, v)
    lead, L, Dv = q.shape[:-2], q.shape[-2], v.shape[-1]
    qf, kf, vf = flat(q), flat(k), flat(v)  # (G, L, D), (G, S, D), (G, S, Dv)
    eps = np.asarray(eps, q.dtype)
    if is_causal:
        out, saved = _causal_linear_forward(qf, kf, vf, eps)
    else:
        out, saved = _linear_forward(qf, kf, vf, eps)

    def backward(grad):
        g = grad.reshape(out.shape)  # (G, L, Dv)
        if is_causal:
            dq, dk, dv = _causal_linear_backward(g, qf, kf, vf, out, saved, eps)
        else:
            dq, dk, dv = _linear_backward(g, qf, kf, vf, out, saved)
        return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)

    return Tensor.from_op(out.reshape(lead + (L, Dv)), (q, k, v), backward, "linear_attention")


def _linear_reference(q, k, v, is_causal=False, **_):
    q, k, v = (np.asarray(getattr(t, "data", t)) for t in (q, k, v))
    return linear_attention_weights(q, k, is_causal=is_causal) @ v


register(Variant(
    name="linear", kind="attention", claim="approximate",
    paper="Katharopoulos et al. 2020, Transformers are RNNs",
    time="O(L·D²)", memory="O(L·D + D²)",
    summary="exp(q·k) replaced by φ(q)·φ(k), φ = elu + 1; associativity gives a D x Dv state",
    bound="none: a different kernel, not an estimate of softmax attention (exact to its own L x S form)",
    attend=lambda q, k, v, is_causal=False: linear_attention(q, k, v, is_causal=is_causal),
    reference=_linear_reference))
