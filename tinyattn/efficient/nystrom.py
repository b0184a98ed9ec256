"""Nyströmformer: softmax attention from m landmarks and a Nyström (pseudo-inverse) middle factor.

Xiong et al., "Nyströmformer: A Nyström-Based Algorithm for Approximating Self-Attention" (AAAI
2021). The landmarks Q̃, K̃ (m, D) are segment means of Q and K (m consecutive segments of
near-equal length); with F̃ = softmax(scale Q K̃ᵀ) (L, m), Ã = softmax(scale Q̃ K̃ᵀ) (m, m) and
B̃ = softmax(scale Q̃ Kᵀ) (m, S),

    out = F̃ Ã⁺ (B̃ V),                 O((L + S)·m·D + m³) instead of O(L·S·D),

Ã⁺ the Moore–Penrose pseudo-inverse. When every token is its own landmark (m = L = S) the three
factors are all P = softmax(scale Q Kᵀ) and P P⁺ P = P: exact attention.

The pseudo-inverse: by default ``np.linalg.pinv`` (SVD) with a hand-derived backward (``pinv``,
Golub & Pereyra 1973:
dA = −A⁺ᵀ G A⁺ᵀ + (I − A A⁺) Gᵀ A⁺ A⁺ᵀ + A⁺ᵀ A⁺ Gᵀ (I − A⁺ A), valid where the rank is locally
constant); or, with ``pinv_iterations=n``, the paper's iterative approximation
(Razavi et al. 2014), composed of differentiable matmuls:
Z₀ = Aᵀ / (‖A‖₁ ‖A‖_∞), Z ← ¼ Z (13 I − A Z (15 I − A Z (7 I − A Z))).

Not causal: a landmark is a mean over a segment, future positions included.

Which pseudo-inverse is better is measured, not assumed: on Gaussian inputs Ã (means of keys, so
nearly uniform rows) is ill-conditioned, its exact pseudo-inverse is huge and the output error
with it does not fall steadily with m; the paper's 6 iterations act as a regularizer and give an
error that falls with m (tests/test_efficient_zoo.py). The registry's default is the paper's 6.

Claim: approximate — exact for m = L = S with the exact pseudo-inverse; with the paper's iterative
one the error falls as m grows.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..nn import functional as F
from .common import check_int, check_qkv
from .registry import Variant, register

__all__ = ["nystrom_attention", "nystrom_reference", "landmark_matrix", "pinv", "iterative_pinv"]


def landmark_matrix(T: int, m: int, dtype=np.float64) -> np.ndarray:
    """(m, T) averaging matrix: row i is 1/|seg_i| on the i-th of m consecutive near-equal segments.

    landmark_matrix(T, m) @ X gives the m segment means of X (T, D) (``np.array_split`` sizes).
    """
    T = check_int("landmark_matrix", "T", T, 1)
    m = check_int("landmark_matrix", "num_landmarks", m, 1)
    if m > T:
        raise ValueError(f"landmark_matrix: num_landmarks {m} > sequence length {T}; expected <= {T}")
    M = np.zeros((m, T), dtype=dtype)
    for i, seg in enumerate(np.array_split(np.arange(T), m)):
        M[i, seg] = 1.0 / len(seg)
    return M


def pinv(a) -> Tensor:
    """Moore–Penrose pseudo-inverse of (..., m, n) -> (..., n, m), with the backward of its SVD form.

    With G = dL/dA⁺: dL/dA = −A⁺ᵀ G A⁺ᵀ + (I − A A⁺) Gᵀ A⁺ A⁺ᵀ + A⁺ᵀ A⁺ Gᵀ (I − A⁺ A).
    """
    a = F.check_tensor(a, "a")
    ap = np.linalg.pinv(a.data)  # (..., n, m)

    def backward(g):
        T = lambda x: np.swapaxes(x, -1, -2)  # noqa: E731
        apt, gt = T(ap), T(g)  # (..., m, n), (..., m, n)
        left = np.eye(a.shape[-2], dtype=a.dtype) - a.data @ ap  # (..., m, m): I − A A⁺
        right = np.eye(a.shape[-1], dtype=a.dtype) - ap @ a.data  # (..., n, n): I − A⁺ A
        return (-apt @ g @ apt + left @ gt @ ap @ apt + apt @ ap @ gt @ right,)

    return Tensor.from_op(ap, (a,), backward, "pinv")


def iterative_pinv(a: Tensor, iterations: int = 6) -> Tensor:
    """The Nyströmformer's iterative pseudo-inverse of square (..., m, m), composed of matmuls.

    Z₀ = Aᵀ / (max column sum · max row sum of |A|); Z ← ¼ Z (13 I − AZ (15 I − AZ (7 I − AZ))).
    Converges (third order) to A⁺ for a nonsingular A; the engine differentiates every step.
    """
    iterations = check_int("iterative_pinv", "iterations", iterations, 0)
    eye = Tensor(np.eye(a.shape[-1], dtype=a.dtype))
    cols = a.abs().sum(dim=-2).amax(dim=-1, keepdim=True)  # (..., 1) max column sum
    size = cols * a.abs().sum(dim=-1).amax(dim=-1, keepdim=True)  # (..., 1) times max row sum
    z = a.transpose(-1, -2) / size.unsqueeze(-1)  # (..., m, m)
    for _ in range(iterations):
        az = a @ z
        z = (z @ (eye * 13 - az @ (eye * 15 - az @ (eye * 7 - az)))) * 0.25
    return z


def _checked(q, k, v, num_landmarks, is_causal):
    q, k, v = F.check_tensor(q, "query"), F.check_tensor(k, "key"), F.check_tensor(v, "value")
    check_qkv("nystrom_attention", q, k, v)
    if is_causal:
        raise ValueError("nystrom_attention: is_causal=True is not supported: each landmark is the mean "
                         "of a segment, future positions included")
    m = check_int("nystrom_attention", "num_landmarks", num_landmarks, 1)
    L, S = q.shape[-2], k.shape[-2]
    if m > min(L, S):
        raise ValueError(f"nystrom_attention: num_landmarks {m} exceeds min(L, S) = {min(L, S)} "
                         f"(L = {L} queries, S = {S} keys)")
    return q, k, v, m


def nystrom_attention(q, k, v, is_causal: bool = False, num_landmarks: int = 32, pinv_iterations=None,
                      scale=None) -> Tensor:
    """Nyström attention (Xiong et al. 2021): F̃ Ã⁺ (B̃ V), landmarks the segment means of Q and K.

    q (..., L, D), k (..., S, D), v (..., S, dv) -> (..., L, dv), num_landmarks m ≤ min(L, S).
    pinv_iterations: None for the exact pseudo-inverse (``pinv``), or n for the paper's iterative
    one (``iterative_pinv``, the paper uses 6).
    """
    q, k, v, m = _checked(q, k, v, num_landmarks, is_causal)
    if pinv_iterations is not None:
        check_int("nystrom_attention", "pinv_iterations", pinv_iterations, 0)
    s = F.check_scale(scale, q.shape[-1])
    qt = Tensor(landmark_matrix(q.shape[-2], m, q.dtype)) @ q  # (..., m, D) query landmarks Q̃
    kt = Tensor(landmark_matrix(k.shape[-2], m, k.dtype)) @ k  # (..., m, D) key landmarks K̃
    f = F.softmax((q @ kt.transpose(-1, -2)) * s, dim=-1)  # (..., L, m)
    a = F.softmax((qt @ kt.transpose(-1, -2)) * s, dim=-1)  # (..., m, m)
    b = F.softmax((qt @ k.transpose(-1, -2)) * s, dim=-1)  # (..., m, S)
    a_inv = pinv(a) if pinv_iterations is None else iterative_pinv(a, pinv_iterations)
    return f @ (a_inv @ (b @ v))  # (..., L, dv)


def _softmax(x: np.ndarray) -> np.ndarray:
    return F.softmax_inplace(x.copy(), -1)


def _iterative_pinv_np(a: np.ndarray, iterations: int) -> np.ndarray:
    """``iterative_pinv`` in plain NumPy."""
    eye = np.eye(a.shape[-1], dtype=a.dtype)
    size = np.abs(a).sum(axis=-2).max(axis=-1) * np.abs(a).sum(axis=-1).max(axis=-1)  # (...,)
    z = np.swapaxes(a, -1, -2) / size[..., None, None]
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def nystrom_reference(q, k, v, is_causal=False, num_landmarks=32, pinv_iterations=None,
                      scale=None) -> np.ndarray:
    """The same Nyström approximation in plain NumPy (arrays in and out): ``np.linalg.pinv``, or
    the iterative pseudo-inverse when ``pinv_iterations`` is an int."""
    q, k, v = (np.asarray(getattr(t, "data", t)) for t in (q, k, v))
    _checked(Tensor(q), Tensor(k), Tensor(v), num_landmarks, is_causal)
    s = F.check_scale(scale, q.shape[-1])
    qt = landmark_matrix(q.shape[-2], num_landmarks, q.dtype) @ q  # (..., m, D)
    kt = landmark_matrix(k.shape[-2], num_landmarks, k.dtype) @ k  # (..., m, D)
    T = lambda x: np.swapaxes(x, -1, -2)  # noqa: E731
    f, a, b = _softmax(s * q @ T(kt)), _softmax(s * qt @ T(kt)), _softmax(s * qt @ T(k))
    a_inv = np.linalg.pinv(a) if pinv_iterations is None else _iterative_pinv_np(a, pinv_iterations)
    return f @ a_inv @ b @ v  # (..., L, dv)


register(Variant(
    name="nystrom", kind="attention", claim="approximate",
    paper="Xiong et al. 2021, Nyströmformer",
    time="O((L + S)·m·D + m³)", memory="O((L + S)·m + m²)",
    summary="softmax(Q K̃ᵀ) pinv(softmax(Q̃ K̃ᵀ)) softmax(Q̃ Kᵀ) V with m segment-mean landmarks",
    bound="exact for m = L = S (every token a landmark); error falls with the number of landmarks m",
    attend=lambda q, k, v, is_causal=False, num_landmarks=32, pinv_iterations=6: nystrom_attention(
        q, k, v, is_causal=is_causal, num_landmarks=num_landmarks, pinv_iterations=pinv_iterations),
    reference=nystrom_reference, options={"num_landmarks": 32, "pinv_iterations": 6}, causal=False))
