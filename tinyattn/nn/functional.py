"""Stateless operations, named and shaped like ``torch.nn.functional``.

The fused ops (linear, softmax, log_softmax, layer_norm, gelu, scaled_dot_product_attention)
compute their forward with NumPy and carry a hand-derived backward next to it; the tests check
each against autograd through the primitive ops of ``tinyattn.autograd``.
"""

from __future__ import annotations

import functools
import math
import numbers
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import autograd
from ..autograd import Tensor, _axes, _result, unbroadcast
from ..threads import get_num_threads, set_num_threads

__all__ = [
    "linear", "relu", "gelu", "erf", "softmax", "log_softmax", "layer_norm", "dropout",
    "embedding", "cross_entropy", "scaled_dot_product_attention", "attention_by_primitives",
]


def _tensor(x, name: str = "input") -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return Tensor(x)
    raise TypeError(f"{name} must be a tinyattn Tensor or an ndarray, got {type(x).__name__}")


# ----------------------------------------------------------------------------------------------
# linear layers and activations
# ----------------------------------------------------------------------------------------------

def linear(input, weight, bias=None) -> Tensor:
    """y = x W^T + b.

    input (..., in_features), weight (out_features, in_features), bias (out_features,)
    -> (..., out_features). The batch axes are flattened so one GEMM does the work.
    """
    x, w = _tensor(input), _tensor(weight, "weight")
    if w.ndim != 2 or x.ndim == 0 or x.shape[-1] != w.shape[1]:
        raise ValueError(
            f"linear: input has shape {x.shape} but weight has shape {w.shape}; "
            f"expected input (..., {w.shape[-1]})"
        )
    b = None if bias is None else _tensor(bias, "bias")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"linear: bias has shape {b.shape}, expected ({w.shape[0]},)")
    x2 = x.data.reshape(-1, w.shape[1])  # (M, in)
    y = x2 @ w.data.T  # (M, out)
    if b is not None:
        y += b.data
    out_shape = x.shape[:-1] + (w.shape[0],)

    def backward(g):
        g2 = g.reshape(-1, w.shape[0])  # (M, out)
        gx = (g2 @ w.data).reshape(x.shape) if x.requires_grad else None
        gw = g2.T @ x2 if w.requires_grad else None
        gb = g2.sum(axis=0) if b is not None and b.requires_grad else None
        return gx, gw, gb

    parents = (x, w) if b is None else (x, w, b)
    return _result(y.reshape(out_shape), parents, backward)


def relu(input) -> Tensor:
    """max(x, 0), elementwise."""
    return _tensor(input).relu()


_ERF_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
          3.20937758913846947e03, 1.85777706184603153e-1)
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
          2.84423683343917062e03)
_ERF_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
          2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
          2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_ERF_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
          1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
          3.43936767414372164e03, 1.23033935480374942e03)
_ERF_BLOCK = 1 << 16  # elements per block: one block's temporaries stay in cache


def _rational(z: np.ndarray, P: tuple, Q: tuple) -> np.ndarray:
    """Cody's rational function of z, by Horner's rule on two new arrays:

    (((P[-1] z + P[0]) z + P[1]) z + … ) z + P[-2]  over  (((z + Q[0]) z + Q[1]) z + … ) z + Q[-1].
    """
    num, den = z * P[-1], z.copy()
    for p, q in zip(P[:-2], Q[:-1]):
        num += p
        num *= z
        den += q
        den *= z
    num += P[-2]
    den += Q[-1]
    num /= den
    return num


def _erf_block(x: np.ndarray) -> np.ndarray:
    """erf on a 1-D float block: Cody's rational for |x| ≤ 0.46875, else 1 − erfc(|x|).

    For |x| > 4 the middle-range rational still gives erfc to far better than the 1e-8
    relative that 1 − erfc needs, and erf(6) rounds to 1, so two branches cover every x.
    """
    y = np.abs(x)
    np.minimum(y, 6.0, out=y)
    zz = y * y
    small = _rational(zz, _ERF_A, _ERF_B)
    small *= y  # erf(y) for y ≤ 0.46875
    tail = _rational(y, _ERF_C, _ERF_D)  # exp(y²) erfc(y)
    np.negative(zz, out=zz)
    np.exp(zz, out=zz)
    tail *= zz
    np.subtract(1.0, tail, out=tail)  # 1 − erfc(y) for y > 0.46875
    out = np.where(y <= 0.46875, small, tail)
    return np.copysign(out, x, out=out)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, vectorized (W. J. Cody 1969, the rationals of SPECFUN's CALERF).

    Within a few ulp of ``math.erf`` in float64 (checked in the tests); evaluated in the dtype
    of a float ``x``, in cache-sized blocks. NumPy has no erf and SciPy is not a dependency.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    flat = x.reshape(-1)
    out = np.empty_like(flat)
    for i in range(0, flat.size, _ERF_BLOCK):
        out[i:i + _ERF_BLOCK] = _erf_block(flat[i:i + _ERF_BLOCK])
    return out.reshape(x.shape)


def gelu(input, approximate: str = "none") -> Tensor:
    """GELU(x) = x Φ(x), Φ the standard normal CDF.

    approximate="none": Φ(x) = (1 + erf(x / √2)) / 2, d/dx = Φ(x) + x φ(x).
    approximate="tanh": Φ(x) ≈ (1 + tanh(√(2/π) (x + 0.044715 x³))) / 2.
    """
    x = _tensor(input)
    d = x.data
    if approximate == "none":
        cdf = 0.5 * (1.0 + erf(d * (1.0 / math.sqrt(2.0))))

        def backward(g):
            pdf = np.exp(-0.5 * d * d) * (1.0 / math.sqrt(2.0 * math.pi))
            return (g * (cdf + d * pdf),)

        return _result(d * cdf, (x,), backward)
    if approximate == "tanh":
        k = math.sqrt(2.0 / math.pi)
        inner = k * (d + 0.044715 * d * d * d)
        t = np.tanh(inner)

        def backward_tanh(g):
            dinner = k * (1.0 + 3 * 0.044715 * d * d)
            return (g * (0.5 * (1.0 + t) + 0.5 * d * (1.0 - t * t) * dinner),)

        return _result(0.5 * d * (1.0 + t), (x,), backward_tanh)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


# ----------------------------------------------------------------------------------------------
# softmax family and normalization
# ----------------------------------------------------------------------------------------------

def _softmax_inplace(x: np.ndarray, axis: int) -> np.ndarray:
    """Overwrite x with exp(x − max) / sum along ``axis``; a row that is all −inf becomes zeros.

    Three passes over x (subtract, exp, scale) plus two reductions: the O(T²) budget of SDPA.
    """
    m = np.max(x, axis=axis, keepdims=True)
    m[m == -np.inf] = 0.0  # a fully masked row: exp(-inf - 0) = 0 everywhere, never NaN
    x -= m
    np.exp(x, out=x)
    s = np.sum(x, axis=axis, keepdims=True)
    s[s == 0] = 1.0
    x *= 1.0 / s
    return x


def _softmax_backward(g: np.ndarray, p: np.ndarray, axis: int) -> np.ndarray:
    """dS = P ∘ (dP − rowsum(dP ∘ P)): the softmax Jacobian applied to g."""
    return p * (g - np.sum(g * p, axis=axis, keepdims=True))


def softmax(input, dim: int) -> Tensor:
    """softmax(x)_i = exp(x_i) / Σ_j exp(x_j) along ``dim``; backward y ∘ (g − Σ g ∘ y)."""
    x = _tensor(input)
    axis = _axes(dim, x.ndim)[0]
    p = _softmax_inplace(x.data.copy(), axis)
    return _result(p, (x,), lambda g: (_softmax_backward(g, p, axis),))


def log_softmax(input, dim: int) -> Tensor:
    """x_i − log Σ_j exp(x_j) along ``dim``; backward g − softmax(x) Σ g."""
    x = _tensor(input)
    axis = _axes(dim, x.ndim)[0]
    m = np.max(x.data, axis=axis, keepdims=True)
    shifted = x.data - m
    out = shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))

    def backward(g):
        return (g - np.exp(out) * np.sum(g, axis=axis, keepdims=True),)

    return _result(out, (x,), backward)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    """y = (x − mean) / sqrt(var + eps) ∘ weight + bias over the last len(normalized_shape) axes.

    var is the biased variance (divide by n). With x̂ the normalized input and ĝ = g ∘ weight,
    dx = (ĝ − mean(ĝ) − x̂ ∘ mean(ĝ ∘ x̂)) / sqrt(var + eps).
    """
    x = _tensor(input)
    shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"layer_norm: input of shape {x.shape} does not end in normalized_shape {shape}")
    w = None if weight is None else _tensor(weight, "weight")
    b = None if bias is None else _tensor(bias, "bias")
    for name, p in (("weight", w), ("bias", b)):
        if p is not None and p.shape != shape:
            raise ValueError(f"layer_norm: {name} has shape {p.shape}, expected {shape}")
    n = int(np.prod(shape))
    d = x.data.reshape(-1, n)  # (M, n): the normalized axes flattened
    mu = d.mean(axis=1, keepdims=True)  # (M, 1)
    xhat = d - mu  # (M, n), normalized in place below
    rstd = 1.0 / np.sqrt(np.einsum("ij,ij->i", xhat, xhat)[:, None] / n + eps)  # (M, 1)
    xhat *= rstd
    y = xhat * w.data.reshape(-1) if w is not None else xhat.copy()
    if b is not None:
        y += b.data.reshape(-1)

    affine = tuple(p for p in (w, b) if p is not None)

    def backward(g):
        g2 = g.reshape(-1, n)  # (M, n)
        gx = None
        if x.requires_grad:
            gx = g2 * w.data.reshape(-1) if w is not None else g2.copy()  # ĝ, then dx in place
            dot = np.einsum("ij,ij->i", gx, xhat)[:, None] / n  # (M, 1): mean(ĝ ∘ x̂)
            gx -= gx.mean(axis=1, keepdims=True)
            gx -= xhat * dot
            gx *= rstd
            gx = gx.reshape(x.shape)
        gw = np.einsum("ij,ij->j", g2, xhat).reshape(shape) if w is not None and w.requires_grad else None
        gb = g2.sum(axis=0).reshape(shape) if b is not None and b.requires_grad else None
        return (gx,) + ((gw,) if w is not None else ()) + ((gb,) if b is not None else ())

    y = y.reshape(x.shape)
    return _result(y, (x,) + affine, backward)


# ----------------------------------------------------------------------------------------------
# dropout, embedding, losses
# ----------------------------------------------------------------------------------------------

def _check_p(p: float, name: str = "dropout probability") -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} has to be between 0 and 1, but got {p}")


def _keep_mask(shape, p: float, dtype) -> np.ndarray:
    """A {0, 1/(1-p)} mask (inverted dropout) drawn from the global generator."""
    if p == 1.0:
        return np.zeros(shape, dtype)
    keep = autograd.get_rng().random(shape, dtype=np.float32) >= p
    return keep.astype(dtype) * np.asarray(1.0 / (1.0 - p), dtype)


def dropout(input, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1 / (1 − p) (training only)."""
    _check_p(p)
    x = _tensor(input)
    if not training or p == 0.0:
        return x
    mask = _keep_mask(x.shape, p, x.dtype)
    return _result(x.data * mask, (x,), lambda g: (g * mask,))


def embedding(input, weight, padding_idx=None) -> Tensor:
    """Rows of ``weight`` (num_embeddings, dim) picked by integer ``input`` (...) -> (..., dim).

    Repeated indices accumulate their gradients; the ``padding_idx`` row gets none.
    """
    idx = input.data if isinstance(input, Tensor) else np.asarray(input)
    w = _tensor(weight, "weight")
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"embedding indices must be integers, got dtype {idx.dtype}")
    n = w.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = idx.min() if idx.min() < 0 else idx.max()
        raise IndexError(f"embedding index {bad} is out of range for {n} embeddings (0..{n - 1})")

    def backward(g):
        grad = np.zeros_like(w.data)
        np.add.at(grad, idx.reshape(-1), g.reshape(-1, w.shape[1]))
        if padding_idx is not None:
            grad[padding_idx] = 0
        return (grad,)

    return _result(w.data[idx], (w,), backward)


def cross_entropy(input, target, weight=None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy between logits and class indices, as ``torch.nn.functional.cross_entropy``.

    input (N, C) or (N, C, d1, ...) or (C,); target (N,) / (N, d1, ...) / () of int class
    indices in [0, C) or ``ignore_index``; weight (C,) optional class weights.
    loss_i = −w[t_i] log softmax(x_i)[t_i]; "mean" divides by Σ_i w[t_i] over kept targets.
    With label smoothing ε: (1 − ε) loss_i − (ε / C) Σ_c w_c log softmax(x_i)[c].
    """
    x = _tensor(input)
    t = np.asarray(target.data if isinstance(target, Tensor) else target)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"cross_entropy: target must hold integer class indices, got dtype {t.dtype}")
    expected = x.shape[:1] + x.shape[2:] if x.ndim >= 2 else ()
    if t.shape != expected:
        raise ValueError(f"cross_entropy: input has shape {x.shape}, so target must have shape "
                         f"{expected}, got {t.shape}")
    C = x.shape[1] if x.ndim >= 2 else x.shape[0]
    logits = x.unsqueeze(0) if x.ndim == 1 else x
    if logits.ndim > 2:
        logits = logits.permute(0, *range(2, logits.ndim), 1)  # (N, d1, ..., C)
    logp = log_softmax(logits.reshape(-1, C), dim=1)  # (M, C)
    flat = t.reshape(-1)
    keep = flat != ignore_index
    bad = flat[keep & ((flat < 0) | (flat >= C))]
    if bad.size:
        raise IndexError(f"cross_entropy: target {int(bad[0])} is out of bounds for {C} classes")
    safe = np.where(keep, flat, 0)
    w = np.ones(C, x.dtype) if weight is None else np.asarray(_tensor(weight, "weight").data, x.dtype)
    wt = Tensor((w[safe] * keep).astype(x.dtype))  # (M,) weight of each target, 0 if ignored
    picked = logp[np.arange(flat.size), safe]  # (M,)
    loss = -(picked * wt)
    if label_smoothing:
        smooth = -(logp * Tensor(w)).sum(dim=1) * Tensor(keep.astype(x.dtype))  # (M,)
        loss = loss * (1.0 - label_smoothing) + smooth * (label_smoothing / C)
    if reduction == "none":
        return loss.reshape(t.shape)
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / float(wt.data.sum())


# ----------------------------------------------------------------------------------------------
# scaled dot-product attention
# ----------------------------------------------------------------------------------------------

def _check_qkv(q: Tensor, k: Tensor, v: Tensor, enable_gqa: bool) -> int:
    """Validate (..., L, E), (..., S, E), (..., S, Ev); return the GQA repeat factor."""
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.ndim < 2:
            raise ValueError(f"{name} must be at least 2-D (..., seq, dim), got shape {t.shape}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"key has shape {k.shape} but query has shape {q.shape}; "
                         f"expected key (..., S, {q.shape[-1]})")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"key has shape {k.shape} and value has shape {v.shape}: "
                         f"their sequence lengths ({k.shape[-2]} and {v.shape[-2]}) must match")
    if k.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"key {k.shape} and value {v.shape} must have the same batch/head dims")
    repeat = 1
    if enable_gqa and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        hq, hkv = q.shape[-3], k.shape[-3]
        if hq % hkv:
            raise ValueError(f"enable_gqa: query has {hq} heads, key/value have {hkv}; "
                             f"the query heads must be a multiple of the key/value heads")
        repeat = hq // hkv
    kshape = k.shape[:-3] + (k.shape[-3] * repeat,) + k.shape[-2:] if repeat > 1 else k.shape
    try:
        np.broadcast_shapes(q.shape[:-2], kshape[:-2])
    except ValueError:
        raise ValueError(f"query {q.shape} and key {k.shape} have batch/head dims that do not "
                         f"broadcast (pass enable_gqa=True for grouped-query attention)") from None
    return repeat


def _mask_bias(attn_mask, is_causal: bool, L: int, S: int, dtype):
    """Return (bool_mask_or_None, float_mask_tensor_or_None) in SDPA polarity (True = attend)."""
    if is_causal:
        if attn_mask is not None:
            raise ValueError("scaled_dot_product_attention: pass either attn_mask or "
                             "is_causal=True, not both")
        return np.tril(np.ones((L, S), dtype=bool)), None
    if attn_mask is None:
        return None, None
    m = attn_mask if isinstance(attn_mask, Tensor) else Tensor(np.asarray(attn_mask))
    if m.dtype == np.bool_:
        return m.data, None
    if np.issubdtype(m.dtype, np.floating):
        return None, m if m.dtype == dtype else m.to(dtype)
    raise TypeError(f"attn_mask must be bool (True = may attend) or float (added to the "
                    f"scores), got dtype {m.dtype}")


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale=None, enable_gqa: bool = False,
                                 *, return_weights: bool = False):
    """softmax(Q Kᵀ · scale + mask) V, fused, with a hand-derived backward.

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev). The leading dims
    broadcast; with ``enable_gqa`` key/value may have fewer heads (dim -3), each repeated.
    attn_mask: bool (True = may attend) or float (added), broadcastable to (..., L, S).
    is_causal: query i attends keys j ≤ i (top-left aligned). scale defaults to 1/√E.
    A query whose keys are all masked gets zero weights, zero output and zero gradient.
    return_weights=True (a tinyattn extension) also returns P (..., L, S) after dropout.

    Backward, with P the weights and O = P V:
    dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − rowsum(dP ∘ P)), dQ = scale·dS K, dK = scale·dSᵀ Q.
    Two details make it fast without changing the math: the row sums ℓ of exp(S − max) divide
    the (L, Ev) output instead of the (L, S) weights, and rowsum(dP ∘ P) = rowsum(dO ∘ O) is an
    O(L·Ev) product. The work runs in tiles of about one L2 cache of scores, on as many
    threads as BLAS may use (``_for_each_tile``).
    """
    q, k, v = _tensor(query, "query"), _tensor(key, "key"), _tensor(value, "value")
    repeat = _check_qkv(q, k, v, enable_gqa)
    _check_p(dropout_p, "dropout_p")
    L, S, E, Ev = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    scale = 1.0 / math.sqrt(E) if scale is None else float(scale)
    kd = np.repeat(k.data, repeat, axis=-3) if repeat > 1 else k.data  # (..., H, S, E)
    vd = np.repeat(v.data, repeat, axis=-3) if repeat > 1 else v.data  # (..., H, S, Ev)
    bool_mask, float_mask = _mask_bias(attn_mask, is_causal, L, S, q.dtype)
    batch = np.broadcast_shapes(q.shape[:-2], kd.shape[:-2])
    for m in (bool_mask, None if float_mask is None else float_mask.data):
        if m is not None:
            try:
                np.broadcast_shapes(m.shape, batch + (L, S))
            except ValueError:
                raise ValueError(f"attn_mask has shape {m.shape}, which does not broadcast to "
                                 f"the scores' shape {batch + (L, S)}") from None

    dtype = np.result_type(q.dtype, kd.dtype, vd.dtype)
    scale_ = np.asarray(scale, dtype)
    Q = _flatten_batch(q.data, batch, (L, E))  # (G, L, E)
    K = _flatten_batch(kd, batch, (S, E))  # (G, S, E)
    V = _flatten_batch(vd, batch, (S, Ev))  # (G, S, Ev)
    G = Q.shape[0]
    blocked = None if bool_mask is None else _flatten_batch(~bool_mask, batch, (L, S))  # (G, L, S)
    bias = None if float_mask is None else _flatten_batch(float_mask.data, batch, (L, S))  # (G, L, S)
    keep = _keep_mask((G, L, S), dropout_p, dtype) if dropout_p > 0 else None  # (G, L, S)
    X = np.empty((G, L, S), dtype)  # exp(scores − row max): the unnormalized weights
    O = np.empty((G, L, Ev), dtype)  # the output
    ell = np.empty((G, L, 1), dtype)  # row sums ℓ of X (1 for a fully masked row)

    def forward_tile(gs, rs):
        x = X[gs, rs]  # (g, r, S), one cache-sized tile
        np.matmul(Q[gs, rs] * scale_, np.swapaxes(K[gs], -1, -2), out=x)
        if bias is not None:
            x += bias[gs, rs]
        if blocked is not None:
            np.copyto(x, -np.inf, where=blocked[gs, rs])
        m = np.max(x, axis=-1, keepdims=True)
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
        dB = np.empty((G, L, S), dtype) if float_mask is not None and float_mask.requires_grad else None

        def backward_tile(gs, rs):
            x = X[gs, rs]  # (g, r, S) = ℓ P
            xd = x * keep[gs, rs] if keep is not None else x
            if dV is not None:
                dV[gs] += np.swapaxes(xd, -1, -2) @ dO[gs, rs]  # Pᵀ dO
            ds = dO[gs, rs] @ np.swapaxes(V[gs], -1, -2)  # (g, r, S): dP / ℓ
            if keep is not None:
                ds *= keep[gs, rs]
            ds -= D[gs, rs]
            ds *= x  # dS = P ∘ (dP − rowsum(dP ∘ P))
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
            None if dK is None else unbroadcast(_sum_groups(dK.reshape(batch + (S, E)), repeat), k.shape),
            None if dV is None else unbroadcast(_sum_groups(dV.reshape(batch + (S, Ev)), repeat), v.shape),
        )
        if float_mask is not None:
            grads += (None if dB is None else unbroadcast(dB.reshape(batch + (L, S)), float_mask.shape),)
        return grads

    parents = (q, k, v) if float_mask is None else (q, k, v, float_mask)
    output = _result(O.reshape(batch + (L, Ev)), parents, backward)
    if return_weights:
        P = X / ell if keep is None else X * keep / ell  # (G, L, S)
        return output, Tensor(P.reshape(batch + (L, S)))
    return output


_TILE_BYTES = 1 << 20  # one tile of scores: about a core's L2 cache


def _flatten_batch(x: np.ndarray, batch: tuple, tail: tuple) -> np.ndarray:
    """x broadcast to batch + tail, then viewed as (G,) + tail; copies only if it must."""
    return np.broadcast_to(x, batch + tail).reshape((-1,) + tail)


def _tile_groups(G: int, L: int, S: int, itemsize: int) -> list:
    """Split a (G, L, S) score array into tiles of about _TILE_BYTES, grouped by matrix.

    Returns [(batch slice, [row slices])]: each group owns whole matrices, so groups can run
    in parallel (the backward accumulates dK and dV over a matrix's row tiles).
    """
    per_matrix = L * S * itemsize
    if per_matrix <= _TILE_BYTES:
        step = _TILE_BYTES // per_matrix
        return [(slice(g, g + step), [slice(None)]) for g in range(0, G, step)]
    rows = max(1, _TILE_BYTES // (S * itemsize))
    return [(slice(g, g + 1), [slice(r, r + rows) for r in range(0, L, rows)]) for g in range(G)]


@functools.lru_cache(maxsize=None)
def _thread_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tinyattn")


def _for_each_tile(work, G: int, L: int, S: int, itemsize: int) -> None:
    """Call work(batch slice, row slice) on every tile, one group per thread.

    As many threads as BLAS may use (``ta.set_num_threads``), each making single-threaded BLAS
    calls: NumPy releases the GIL in matmul and ufuncs, so the softmax passes use every core
    too, instead of one core while BLAS threads sit idle. Tiles write disjoint slices.
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


def _sum_groups(grad: np.ndarray, repeat: int) -> np.ndarray:
    """Adjoint of repeat_interleave on dim -3: (..., Hkv·r, S, D) -> (..., Hkv, S, D)."""
    if repeat == 1:
        return grad
    shape = grad.shape
    return grad.reshape(shape[:-3] + (shape[-3] // repeat, repeat) + shape[-2:]).sum(axis=-3)


def attention_by_primitives(query, key, value, attn_mask=None, is_causal: bool = False, scale=None):
    """The same attention composed from autograd primitives (matmul, mul, masked_fill, softmax).

    Slower than the fused op and without its hand-written backward: it is the oracle the tests
    compare the fused backward with, and the step-by-step version notebook 03 walks through.
    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (output (..., L, Ev), P (..., L, S)).
    """
    q, k, v = _tensor(query, "query"), _tensor(key, "key"), _tensor(value, "value")
    _check_qkv(q, k, v, enable_gqa=False)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., L, S)
    bool_mask, float_mask = _mask_bias(attn_mask, is_causal, q.shape[-2], k.shape[-2], q.dtype)
    if float_mask is not None:
        scores = scores + float_mask
    if bool_mask is not None:
        full = np.broadcast_shapes(scores.shape, bool_mask.shape)
        scores = scores.expand(full).masked_fill(~bool_mask, -np.inf)
    weights = softmax(scores, dim=-1)  # (..., L, S)
    return weights @ v, weights
