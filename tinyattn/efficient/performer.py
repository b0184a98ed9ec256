"""Performer (FAVOR+): softmax attention estimated with positive orthogonal random features.

Choromanski et al., "Rethinking Attention with Performers" (ICLR 2021). The softmax kernel is an
expectation over Gaussian directions ω ~ N(0, I_D):

    exp(x·y) = E_ω[ exp(ω·x − |x|²/2) · exp(ω·y − |y|²/2) ],

so with m directions ω_1..ω_m and the positive feature map

    φ(x) = exp(ω_r·x − |x|²/2)_{r=1..m} / √m,          x = √scale · q,  y = √scale · k,

φ(x)·φ(y) is an unbiased estimate of exp(scale · q·k). The ω are drawn in orthogonal blocks of D
(a Gaussian D x D matrix -> QR -> orthonormal rows, each rescaled by an independent chi(D) norm,
so every row is still marginally N(0, I)); orthogonality lowers the variance. Attention then uses
associativity as linear attention does:

    out_i = φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ) / φ(q_i)ᵀ (Σ_j φ(k_j)),     O(L·m·D) instead of O(L·S·D).

The causal form carries the prefix sums Σ_{j≤i} φ(k_j) v_jᵀ and Σ_{j≤i} φ(k_j) chunk by chunk.

Claim: unbiased — for the KERNEL: E[φ(q)·φ(k)] = exp(scale q·k), with a single draw's error
falling like 1/√m. The attention OUTPUT is a ratio of two unbiased estimates, so it is only
consistent (its error → 0 as m grows), not unbiased. Random: the ``seed`` option fixes the draw.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Tensor, cat
from ..nn import functional as F
from .common import check_int, check_qkv, dense_attention, empty_attention
from .registry import Variant, register

__all__ = ["performer_attention", "performer_weights", "orthogonal_random_features", "favor_features"]

_CHUNK = 64  # causal: positions per chunk whose tril(φQ_c φK_cᵀ) is formed explicitly


def orthogonal_random_features(num_features: int, D: int, seed: int = 0) -> np.ndarray:
    """ω (num_features, D): rows drawn in orthogonal blocks of D, each marginally N(0, I_D).

    Per block: G ~ N(0, 1)^{D x D}, G = QR with the signs of diag(R) moved into Q (Q is then
    uniform on the orthogonal group), rows of Qᵀ scaled by independent chi(D) norms.
    """
    m = check_int("orthogonal_random_features", "num_features", num_features, 1)
    D = check_int("orthogonal_random_features", "D", D, 1)
    rng = np.random.default_rng(seed)
    blocks = -(-m // D)
    g = rng.standard_normal((blocks, D, D))  # (nb, D, D)
    qmat, r = np.linalg.qr(g)  # (nb, D, D) each
    qmat = qmat * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[:, None, :]  # Haar-distributed
    norms = np.sqrt(rng.chisquare(D, size=(blocks, D)))  # (nb, D): the lengths of Gaussian vectors
    omega = np.swapaxes(qmat, -1, -2) * norms[..., None]  # (nb, D, D): row i = norm_i · column i of Q
    return omega.reshape(blocks * D, D)[:m]  # (m, D)


def favor_features(x, omega, stabilizer: str | None = None) -> Tensor:
    """φ(x) = exp(x ωᵀ − |x|²/2) / √m, differentiable: x (..., T, D), ω (m, D) -> (..., T, m).

    ``stabilizer`` divides φ by a constant that cancels in attention's ratio, to keep exp finite:
    "row" (the max of each row's exponent: queries), "all" (the max over all T rows of a
    (batch, head): keys), or None (the exact φ, whose products estimate exp(x·y)).
    """
    x = F.check_tensor(x, "x")
    omega = np.asarray(getattr(omega, "data", omega), dtype=x.dtype)
    if omega.ndim != 2 or omega.shape[1] != x.shape[-1]:
        raise ValueError(f"favor_features: omega has shape {omega.shape}, expected (m, {x.shape[-1]})")
    if stabilizer not in (None, "row", "all"):
        raise ValueError(f"favor_features: stabilizer must be None, 'row' or 'all', got {stabilizer!r}")
    m = omega.shape[0]
    logits = x @ Tensor(omega.T) - (x * x).sum(dim=-1, keepdim=True) * 0.5  # (..., T, m)
    if stabilizer is not None:
        axes = (-1,) if stabilizer == "row" else (-2, -1)
        logits = logits - Tensor(np.max(logits.data, axis=axes, keepdims=True))  # a constant: no gradient
    return logits.exp() * (1.0 / math.sqrt(m))


def _features(q, k, num_features, seed, scale, stabilize: bool):
    """φ(√scale q) (..., L, m) and φ(√scale k) (..., S, m) with one shared draw of ω."""
    omega = orthogonal_random_features(num_features, q.shape[-1], seed)
    root = math.sqrt(F.check_scale(scale, q.shape[-1]))
    fq = favor_features(q * root, omega, "row" if stabilize else None)
    fk = favor_features(k * root, omega, "all" if stabilize else None)
    return fq, fk


def performer_weights(q, k, is_causal: bool = False, num_features: int = 256, seed: int = 0,
                      scale=None) -> np.ndarray:
    """The (…, L, S) weights Performer implicitly uses: A_ij = φ(q_i)·φ(k_j) / Σ_j' φ(q_i)·φ(k_j').

    O(L·S), for checks and pictures; causal keeps j ≤ i before normalizing. Equals what
    ``performer_attention`` computes by associativity: performer_attention(q, k, v) = A @ v.
    """
    q, k = F.check_tensor(q, "query"), F.check_tensor(k, "key")
    fq, fk = _features(q, k, num_features, seed, scale, stabilize=False)
    a = fq.data @ np.swapaxes(fk.data, -1, -2)  # (..., L, S) kernel estimates of exp(scale q·k)
    if is_causal:
        a = np.where(np.tril(np.ones(a.shape[-2:], dtype=bool)), a, 0)
    return a / a.sum(axis=-1, keepdims=True)


def _causal(fq: Tensor, fk: Tensor, v: Tensor) -> Tensor:
    """Causal FAVOR+ by prefix sums, chunk by chunk: fq (..., L, m), fk (..., S, m), v (..., S, dv).

    Chunk c (queries r0..r1−1) sees the state Σ_{j<r0} φ(k_j) v_jᵀ, Σ_{j<r0} φ(k_j) and, inside
    the chunk, tril(φQ_c φK_cᵀ): num = φQ_c state + A_c V_c, den = φQ_c z + rowsum(A_c).
    """
    L, S, m, dv = fq.shape[-2], fk.shape[-2], fq.shape[-1], v.shape[-1]
    state = Tensor(np.zeros(fq.shape[:-2] + (m, dv), fq.dtype))  # (..., m, dv)
    z = Tensor(np.zeros(fq.shape[:-2] + (m, 1), fq.dtype))  # (..., m, 1)
    outs = []
    for r0 in range(0, L, _CHUNK):
        r1 = min(r0 + _CHUNK, L)
        qc = fq[..., r0:r1, :]  # (..., c, m)
        num, den = qc @ state, qc @ z  # (..., c, dv), (..., c, 1)
        if r0 < S:
            kc, vc = fk[..., r0:min(r1, S), :], v[..., r0:min(r1, S), :]  # (..., c', m), (..., c', dv)
            tril = np.tril(np.ones((r1 - r0, kc.shape[-2]), fq.dtype))  # (c, c') keys j ≤ i
            a = (qc @ kc.transpose(-1, -2)) * Tensor(tril)  # (..., c, c')
            num = num + a @ vc
            den = den + a.sum(dim=-1, keepdim=True)
            state = state + kc.transpose(-1, -2) @ vc
            z = z + kc.sum(dim=-2, keepdim=True).transpose(-1, -2)
        outs.append(num / den)
    return cat(outs, dim=-2)  # (..., L, dv)


def performer_attention(q, k, v, is_causal: bool = False, num_features: int = 256, seed: int = 0,
                        scale=None) -> Tensor:
    """FAVOR+ attention (Choromanski et al. 2021): O(L·m·D) time, O((L + S)·m) memory.

    q (..., L, D), k (..., S, D), v (..., S, dv) -> (..., L, dv). With φ the positive orthogonal
    random features of ``favor_features`` (``num_features`` = m, drawn with ``seed``):
    out_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / φ(q_i)ᵀ Σ_j φ(k_j), over all j, or j ≤ i when causal (top-left
    aligned, as SDPA). A consistent estimate of softmax(scale · q kᵀ) v; the backward is the
    engine's, through the composed ops.
    """
    q, k, v = F.check_tensor(q, "query"), F.check_tensor(k, "key"), F.check_tensor(v, "value")
    check_qkv("performer_attention", q, k, v)
    check_int("performer_attention", "num_features", num_features, 1)
    if q.shape[-2] == 0 or k.shape[-2] == 0:
        return empty_attention("performer_attention", q, k, v)
    fq, fk = _features(q, k, num_features, seed, scale, stabilize=True)  # (..., L, m), (..., S, m)
    if is_causal:
        return _causal(fq, fk, v)
    kv = fk.transpose(-1, -2) @ v  # (..., m, dv)
    z = fk.sum(dim=-2, keepdim=True).transpose(-1, -2)  # (..., m, 1)
    return (fq @ kv) / (fq @ z)  # (..., L, dv)


register(Variant(
    name="performer", kind="attention", claim="unbiased",
    paper="Choromanski et al. 2021, Rethinking Attention with Performers (FAVOR+)",
    time="O(L·m·D)", memory="O((L + S)·m + m·D)",
    summary="exp(scale q·k) estimated by positive orthogonal random features; associativity",
    bound="the kernel estimate is unbiased with error ~ 1/√m; the output (a ratio) is only consistent",
    attend=lambda q, k, v, is_causal=False, num_features=256, seed=0: performer_attention(
        q, k, v, is_causal=is_causal, num_features=num_features, seed=seed),
    reference=lambda q, k, v, is_causal=False, **_: dense_attention(q, k, v, is_causal=is_causal),
    options={"num_features": 256, "seed": 0}))
