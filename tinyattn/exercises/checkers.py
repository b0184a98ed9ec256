"""Homework checkers: test your own NumPy version of each attention building block.

    import tinyattn.exercises as ex

    def softmax(x, axis=-1):
        ...                         # your code

    ex.check_softmax(softmax)       # prints one "passed" line and returns True,
                                    # or raises AssertionError with a hint

Each checker calls your function on several cases (batch > 1, odd sizes, large-magnitude inputs,
fully masked rows), compares the result with tinyattn's own implementation, and on a mismatch
probes for the usual mistakes so the hint names the likely cause. Hints say what is wrong and
where, and the idea that fixes it; they never hand over the solution's code (the exercise
notebooks' own hints climb a ladder that stops before the answer, and the worked solutions live
apart, in notebooks/exercises/solutions/). With ``raise_on_failure=False`` a failure prints "not yet: <hint>"
and returns False instead of raising (the exercise notebooks use this).

Conventions: a bool mask uses True = may attend (as ``scaled_dot_product_attention``; note that
``MultiheadAttention``'s ``attn_mask`` uses the opposite polarity). A query row whose keys are all
masked gets zero weights and a zero output. Your function receives float64 copies of the inputs;
the comparison tolerance is rtol = 1e-5, atol = 1e-6.
"""

from __future__ import annotations

import math
import os
import traceback

import numpy as np

from ..autograd import Tensor, tensor
from ..nn import functional as F
from ..nn.modules import MultiheadAttention, causal_mask, sinusoidal_table

__all__ = [
    "check_softmax", "check_softmax_backward", "check_scaled_dot_product_attention",
    "check_causal_mask", "check_split_heads", "check_merge_heads", "check_multi_head_forward",
    "check_positional_encoding", "check_layer_norm_backward", "check_online_softmax",
]

RTOL, ATOL = 1e-5, 1e-6


# ----------------------------------------------------------------------------------------------
# machinery shared by the checkers
# ----------------------------------------------------------------------------------------------

def _run(name: str, body, fn, raise_on_failure: bool) -> bool:
    """Run ``body(fn)``; print "<name> passed: <summary>" or report the AssertionError."""
    try:
        if not callable(fn):
            raise AssertionError(f"expected your function, got a {type(fn).__name__}: pass the "
                                 f"function itself (its name, without calling it)")
        summary = body(fn)
    except AssertionError as e:
        e.args = (f"{name}: {e.args[0] if e.args else e}",)
        if raise_on_failure:
            raise
        print(f"not yet: {e.args[0]}")
        return False
    print(f"{name} passed: {summary}")
    return True


def _fail(what: str, cause: str | None = None):
    raise AssertionError(what + (f"\n  likely cause: {cause}" if cause else ""))


def _name(fn) -> str:
    return getattr(fn, "__name__", "your function")


def _student_line(exc: BaseException) -> str:
    """The deepest line of the traceback outside NumPy and this file, or ''; an exception raised
    in another process (the grader's kernel) carries that line as ``exc.student_line``."""
    if isinstance(getattr(exc, "student_line", None), str):
        return exc.student_line
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if os.path.abspath(f.filename) != os.path.abspath(__file__)
              and f"{os.sep}numpy{os.sep}" not in f.filename]
    return f"\n  at line {frames[-1].lineno}: {frames[-1].line}" if frames and frames[-1].line else ""


def _exception_hint(exc: BaseException) -> str:
    text = str(exc)
    if "matmul" in text or "remapped shapes" in text:
        return ("\n  hint: for arrays with batch axes transpose only the last two axes; "
                ".T reverses every axis")
    if "could not be broadcast" in text:
        return ("\n  hint: a sum or max without keepdims=True drops the reduced axis, so it no "
                "longer lines up with the array it is combined with")
    if "boolean index did not match" in text:
        return ("\n  hint: a bool array used as an index must have exactly the shape of the "
                "indexed array; a mask that only broadcasts to it needs np.where")
    return ""


def _same_array(a, b) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(
        a, b, equal_nan=bool(np.issubdtype(a.dtype, np.inexact)))


def _call(fn, args: tuple, about: str, **kwargs):
    """Call the student's ``fn`` on copies of ``args``; turn its exceptions into hints."""
    copies = tuple(_fresh(a) if isinstance(a, np.ndarray) else a for a in args)
    try:
        with np.errstate(all="ignore"):
            out = fn(*copies, **kwargs)
    except NotImplementedError:
        raise AssertionError(f"{_name(fn)} is not written yet (it raised NotImplementedError): "
                             f"write it in its cell, run that cell, then run this check "
                             f"again") from None
    except Exception as e:
        raise AssertionError(f"{_name(fn)} raised {type(e).__name__}: {e}\n  on {about}"
                             f"{_student_line(e)}{_exception_hint(e)}") from e
    for i, (a, c) in enumerate(zip(args, copies)):
        if isinstance(a, np.ndarray) and not _same_array(a, c):
            _fail(f"{_name(fn)} changed argument {i + 1} in place on {about}",
                  "an in-place operation (x -= ..., x /= ..., x[...] = ...) on an input array; "
                  "the caller's arrays must come back unchanged, so work on a new array")
    return out


def _fresh(a: np.ndarray) -> np.ndarray:
    """A copy the student may keep; a probed k or v is traced from the copy itself."""
    return probe_keys(a.view(np.ndarray).copy(), a.log) if isinstance(a, _KeyProbe) else a.copy()


def _array(out, what: str, shape: tuple, about: str, shape_cause=None) -> np.ndarray:
    """``out`` as an ndarray of the expected shape, or a failure that says what is off."""
    if out is None:
        _fail(f"{what} is None on {about}", "the function has no `return` statement")
    try:
        arr = np.asarray(out.data if isinstance(out, Tensor) else out)
    except ValueError:
        _fail(f"{what} on {about} is a {type(out).__name__} that is not an array; expected an "
              f"ndarray of shape {tuple(shape)}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        _fail(f"{what} has dtype {arr.dtype} on {about}; expected a numeric ndarray")
    if arr.shape != tuple(shape):
        _fail(f"{what} has shape {arr.shape} on {about}, expected {tuple(shape)}",
              shape_cause(arr.shape) if shape_cause else None)
    return arr


def _tuple(out, n: int, names: str, about: str) -> tuple:
    if not isinstance(out, (tuple, list)) or len(out) != n:
        got = f"a {type(out).__name__}" + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")
        _fail(f"expected a tuple {names} on {about}, got {got}",
              f"return all {n} results, in that order: return {names.strip('()')}")
    return tuple(out)


def _close(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    return np.isclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True)


def _same(got: np.ndarray, variant) -> bool:
    """True if the student's result equals a (known-wrong) variant."""
    return variant is not None and got.shape == variant.shape and bool(_close(got, variant).all())


def _index(idx) -> tuple:
    return tuple(int(i) for i in idx)


def _differs(got: np.ndarray, want: np.ndarray) -> str | None:
    """None if close; else how many values differ and the worst one."""
    close = _close(got, want)
    if close.all():
        return None
    with np.errstate(all="ignore"):
        err = np.abs(got.astype(np.float64) - want)
    err = np.where(close, 0.0, np.where(np.isnan(err), np.inf, err))
    idx = _index(np.unravel_index(np.argmax(err), err.shape))
    return (f"{int((~close).sum())} of {close.size} values differ; the worst is at index {idx}: "
            f"got {got[idx]:.6g}, expected {want[idx]:.6g}")


def _first(got: np.ndarray, candidates) -> str | None:
    """The cause of the first (variant_thunk, cause) whose variant equals ``got``."""
    for variant, cause in candidates:
        try:
            with np.errstate(all="ignore"):
                v = variant()
        except ValueError:  # the mistake is impossible for these shapes (they do not broadcast)
            continue
        if _same(got, v):
            return cause
    return None


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


_OVERFLOW = ("overflow for large inputs: exp(x) is inf once x > 709 and inf / inf is NaN; "
             "subtract the row max (the largest entry of each row) before exp: softmax does not "
             "change when the same constant is subtracted from a whole row")
_ALL_MASKED_NAN = ("a fully masked row (every entry -inf) became NaN: its max is -inf and "
                   "-inf - (-inf) is NaN. tinyattn's convention is zeros for such a row: treat a "
                   "max of -inf as 0 so every exp is 0, and do not divide by a zero sum")


# ----------------------------------------------------------------------------------------------
# softmax and its backward
# ----------------------------------------------------------------------------------------------

def _softmax_ref(x: np.ndarray, axis: int) -> np.ndarray:
    return F.softmax(tensor(x), dim=axis).data


def _softmax_cause(x: np.ndarray, axis: int, got: np.ndarray) -> str | None:
    fully_masked = np.isneginf(x).all(axis=axis, keepdims=True)
    bad = ~np.isfinite(got)
    if bad.any():
        if (bad & np.broadcast_to(fully_masked, x.shape)).any():
            return _ALL_MASKED_NAN
        if np.max(np.abs(x[np.isfinite(x)]), initial=0.0) > 100:
            return _OVERFLOW
        return "NaN or inf in the output: look for a division by zero or exp of a large number"
    ax = axis % x.ndim
    for other in range(x.ndim):
        if other != ax and _same(got, _softmax_ref(x, other)):
            ignored = " (the axis argument seems to be ignored)" if other == x.ndim - 1 else ""
            return f"normalized along axis {other} instead of axis {ax}{ignored}"
    if (got[np.broadcast_to(np.isneginf(x), x.shape)] != 0).any():
        return "an entry with x = -inf must get exactly 0: exp(-inf) = 0"
    sums = got.sum(axis=ax)
    live = ~fully_masked.squeeze(axis=ax)
    if not np.allclose(sums[live], 1.0, rtol=RTOL, atol=ATOL):
        def sum_without_keepdims():
            e = np.exp(x - x.max(axis=ax, keepdims=True))
            return e / e.sum(axis=ax)

        return _first(got, [(sum_without_keepdims, "the sums were taken without keepdims=True, so "
                             "they broadcast along the wrong axis: each row was divided by the "
                             "sums of other rows")]) or (
            f"rows do not sum to 1 along axis {ax} (one sums to {sums[live].flat[0]:.6g}): "
            f"divide each exp by the sum of its own row")

    def max_without_keepdims():
        e = np.exp(x - x.max(axis=ax))
        return e / e.sum(axis=ax, keepdims=True)

    return _first(got, [(max_without_keepdims, "the max was taken without keepdims=True, so it "
                         "broadcasts along the wrong axis: each row was shifted by the maxima of "
                         "other rows, which changes its softmax")])


def _check_softmax(fn) -> str:
    rng = _rng(0)
    masked = rng.standard_normal((3, 6))
    masked[0, [1, 4]] = -np.inf
    masked[2] = -np.inf
    cases = [
        ("a square matrix", rng.standard_normal((4, 4)), None),
        ("a batch of rows", rng.standard_normal((2, 3, 5)), None),
        ("axis=0", rng.standard_normal((4, 7)), 0),
        ("axis=1 of a 3-D array", rng.standard_normal((2, 5, 3)), 1),
        ("a single column", rng.standard_normal((3, 1)), -1),
        ("large inputs (|x| up to ~3000)", 1000 * rng.standard_normal((2, 4, 9)), -1),
        ("-inf entries and a fully masked row (expected: zeros)", masked, -1),
    ]
    for label, x, axis in cases:
        about = f"x of shape {x.shape}" + ("" if axis is None else f", axis={axis}") + f" [{label}]"
        out = _call(fn, (x,), about) if axis is None else _call(fn, (x,), about, axis=axis)
        got = _array(out, "the output", x.shape, about, lambda s: "softmax keeps the shape of x; "
                     "use keepdims=True in the row sums and maxima")
        axis = -1 if axis is None else axis
        diff = _differs(got, _softmax_ref(x, axis))
        if diff:
            _fail(f"on {about}: {diff}", _softmax_cause(x, axis, got))
    return (f"{len(cases)} cases (square, batch, axis 0 and 1, a single column, |x| ~ 1000, "
            f"-inf entries)")


def check_softmax(fn, raise_on_failure: bool = True) -> bool:
    """Check ``fn(x, axis=-1) -> ndarray``: softmax of x along ``axis``, same shape as x.

    softmax(x)_i = exp(x_i) / Σ_j exp(x_j) along the axis; rows that are entirely -inf give zeros.
    """
    return _run("check_softmax", _check_softmax, fn, raise_on_failure)


def _softmax_grad_ref(x: np.ndarray, dout: np.ndarray) -> np.ndarray:
    xt = tensor(x, requires_grad=True)
    F.softmax(xt, dim=-1).backward(dout)
    return xt.grad


def _softmax_backward_cause(dout: np.ndarray, p: np.ndarray, got: np.ndarray) -> str | None:
    row = np.sum(dout * p, axis=-1, keepdims=True)
    return _first(got, [
        (lambda: dout * p * (1 - p),
         "only the diagonal of the softmax Jacobian, ∂p_i/∂x_i = p_i(1 − p_i), was used; every "
         "x_j also moves the other outputs (∂p_i/∂x_j = −p_i p_j), which adds a row sum "
         "Σ_j dout_j p_j"),
        (lambda: dout - row, "the outer factor p is missing: every term of dx_i is multiplied by p_i"),
        (lambda: p * (dout - dout.sum(axis=-1, keepdims=True)),
         "the row sum must weight dout by p: Σ_j dout_j p_j, not Σ_j dout_j"),
        (lambda: p * (row - dout), "the sign is flipped"),
        (lambda: p * (dout - np.sum(dout * p)), "the sum Σ_j dout_j p_j runs over one row (the last "
         "axis, keepdims=True), not over the whole array"),
        (lambda: p * (dout - np.sum(dout * p, axis=0, keepdims=True)),
         "the sum Σ_j dout_j p_j runs over axis 0; it must run over the last axis, one sum per row"),
        (lambda: dout * (p - row), "the arguments are swapped: the signature is fn(dout, p)"),
    ]) or (None if np.allclose(got.sum(axis=-1), 0, atol=1e-6) else
           "each row of dx must sum to 0: the softmax outputs always sum to 1, so adding the same "
           "amount to every logit of a row changes nothing")


def _check_softmax_backward(fn) -> str:
    rng = _rng(1)
    masked = rng.standard_normal((2, 3, 6))
    masked[0, 1, [0, 3, 5]] = -np.inf
    masked[1, 2] = -np.inf
    cases = [
        ("a batch of rows", rng.standard_normal((2, 3, 5))),
        ("a single row of odd length", rng.standard_normal((7,))),
        ("4-D", rng.standard_normal((3, 2, 4, 6))),
        ("large logits: p almost one-hot", 50 * rng.standard_normal((2, 4, 9))),
        ("masked entries (p = 0) and a fully masked row", masked),
    ]
    for label, x in cases:
        p = _softmax_ref(x, -1)
        dout = rng.standard_normal(x.shape)
        about = f"dout and p of shape {x.shape} [{label}]"
        got = _array(_call(fn, (dout, p), about), "dx", x.shape, about)
        diff = _differs(got, _softmax_grad_ref(x, dout))
        if diff:
            _fail(f"on {about}: {diff}", _softmax_backward_cause(dout, p, got))
    return f"{len(cases)} cases (batch, 1-D, 4-D, one-hot p, masked entries)"


def check_softmax_backward(fn, raise_on_failure: bool = True) -> bool:
    """Check ``fn(dout, p) -> dx``: the gradient through a softmax along the last axis.

    p = softmax(x) and dout = ∂L/∂p, both (..., n); dx = ∂L/∂x has the same shape.
    """
    return _run("check_softmax_backward", _check_softmax_backward, fn, raise_on_failure)


# ----------------------------------------------------------------------------------------------
# scaled dot-product attention and the causal mask
# ----------------------------------------------------------------------------------------------

def _sdpa_ref(q, k, v, mask=None, scale=None):
    out, w = F.scaled_dot_product_attention(tensor(q), tensor(k), tensor(v), attn_mask=mask,
                                            scale=scale, return_weights=True)
    return out.data, w.data


def _weights_cause(q, k, v, mask, got: np.ndarray) -> str | None:
    d, dv, S = q.shape[-1], v.shape[-1], k.shape[-2]
    full = None if mask is None else np.broadcast_to(mask, got.shape)
    dead = None if full is None else ~full.any(axis=-1)  # (..., L) fully masked query rows
    bad = ~np.isfinite(got)
    if bad.any():
        if dead is not None and bad[dead].any():
            return _ALL_MASKED_NAN
        return _OVERFLOW
    if dead is not None and dead.any() and np.allclose(got[dead], 1.0 / S):
        return (f"a fully masked row got uniform weights 1/S = 1/{S}: a finite fill such as -1e9 "
                f"makes every score of that row equal. tinyattn's convention is zero weights and "
                f"a zero output: fill with -inf and give an all -inf row zeros")
    if full is not None:
        if _same(got, _sdpa_ref(q, k, v, ~mask)[1]):
            return ("mask polarity: True means may attend; your weights are non-zero exactly "
                    "where the mask is False")
        if (got[~full] != 0).any():
            return "a masked key (mask False) got a non-zero weight: its score must be -inf"
    live = np.ones(got.shape[:-1], bool) if dead is None else ~dead
    if not np.allclose(got.sum(axis=-1)[live], 1.0, atol=1e-6):
        if full is not None and _same(got, _sdpa_ref(q, k, v)[1] * full):
            return ("rows do not sum to 1: the mask was applied to the weights after the softmax; "
                    "apply it to the scores before the softmax")
        if np.allclose(got.sum(axis=-2), 1.0, atol=1e-6):
            return ("softmax over the wrong axis: your columns sum to 1; each query's row "
                    "(over the keys, the last axis) must sum to 1")
        return "rows of the weights do not sum to 1"
    scales = [(1.0, f"off by a factor √d_k: the scores must be divided by √d_k = √{d}"),
              (1.0 / d, f"divided by d_k = {d} instead of √d_k"),
              (math.sqrt(d), f"multiplied by √d_k = √{d} instead of dividing by it")]
    if dv != d:
        scales.append((1.0 / math.sqrt(dv), f"scaled by √d_v = √{dv}; the scale uses d_k = {d}, the "
                                              f"last axis of q and k"))
    if S != d:
        scales.append((1.0 / math.sqrt(S), f"scaled by √S = √{S} (the number of keys); the scale "
                                             f"uses d_k = {d}, the last axis of q and k"))
    return _first(got, [(lambda s=s: _sdpa_ref(q, k, v, mask, scale=s)[1], c) for s, c in scales])


def _attention_cases(rng) -> list:
    def qkv(lead, L, S, d, dv, mag=1.0):
        return (mag * rng.standard_normal(lead + (L, d)), mag * rng.standard_normal(lead + (S, d)),
                rng.standard_normal(lead + (S, dv)))

    pad = np.arange(7) < np.array([7, 4])[:, None, None, None]  # (2, 1, 1, 7) keys kept per batch
    rows = rng.random((2, 5, 6)) < 0.6
    rows[:, :, 0] = True
    rows[0, 1] = False
    rows[1, 3] = False
    return [
        ("no mask, L != S, d_v != d_k", qkv((2,), 4, 6, 8, 5), None),
        ("batch and heads, odd sizes, a key mask of shape (S,)", qkv((2, 3), 5, 7, 3, 4),
         np.array([True, True, False, True, False, True, True])),
        ("causal mask (L, L) shared by batch and heads", qkv((2, 2), 5, 5, 4, 4),
         np.tril(np.ones((5, 5), bool))),
        ("padding mask (N, 1, 1, S)", qkv((2, 3), 4, 7, 6, 6), pad),
        ("fully masked query rows (expected: zero weights, zero output)", qkv((2,), 5, 6, 4, 3), rows),
        ("large scores (|q·k| / √d_k in the thousands)", qkv((2,), 4, 6, 16, 5, mag=30.0), None),
    ]


def _check_sdpa(fn) -> str:
    cases = _attention_cases(_rng(2))
    for label, (q, k, v), mask in cases:
        about = (f"q {q.shape}, k {k.shape}, v {v.shape}, "
                 + ("no mask" if mask is None else f"mask {mask.shape}") + f" [{label}]")
        res = _call(fn, (q, k, v), about) if mask is None else _call(fn, (q, k, v, mask), about)
        out, weights = _tuple(res, 2, "(out, weights)", about)
        want_out, want_w = _sdpa_ref(q, k, v, mask)

        def swapped(shape, other):
            return "(out, weights) in the wrong order: return (out, weights)" if shape == other else None

        w = _array(weights, "weights", want_w.shape, about,
                   lambda s: swapped(s, want_out.shape) or (
                       "weights must be (..., L, S): one row per query, one column per key"
                       if s == want_w.shape[:-2] + want_w.shape[:-3:-1] else None))
        diff = _differs(w, want_w)
        if diff:
            _fail(f"on {about}: weights: {diff}", _weights_cause(q, k, v, mask, w))
        o = _array(out, "out", want_out.shape, about, lambda s: swapped(s, want_w.shape))
        diff = _differs(o, want_out)
        if diff:
            _fail(f"on {about}: the weights are right but the output is not: {diff}",
                  "the output is weights @ v: for each query, the weighted average of the value rows")
    return (f"{len(cases)} cases (batch, heads, odd sizes, L != S, causal, padding, fully masked rows, "
            f"large scores)")


def check_scaled_dot_product_attention(fn, raise_on_failure: bool = True) -> bool:
    """Check ``fn(q, k, v, mask=None) -> (out, weights)``.

    q (..., L, d_k), k (..., S, d_k), v (..., S, d_v); mask bool broadcastable to (..., L, S),
    True = may attend. weights = softmax(q kᵀ / √d_k, masked entries -inf) (..., L, S);
    out = weights v (..., L, d_v). A fully masked query row gets zero weights and a zero output.
    """
    return _run("check_scaled_dot_product_attention", _check_sdpa, fn, raise_on_failure)


def _check_causal_mask(fn) -> str:
    sizes = (5, 1, 8, 2)
    for L in sizes:
        about = f"L = {L}"
        got = _array(_call(fn, (L,), about), "the mask", (L, L), about)
        want = ~causal_mask(L)  # tinyattn's MultiheadAttention mask: True = may NOT attend
        if got.dtype != np.bool_:
            exact = set(np.unique(got).tolist()) <= {0, 1} and np.array_equal(got.astype(bool), want)
            _fail(f"on {about}: the mask has dtype {got.dtype}; expected bool (True = may attend)",
                  "the entries are right but not bool: a 0/1 float array would be added to the "
                  "scores instead of masking them" if exact else None)
        if np.array_equal(got, want):
            continue
        i, j = _index(np.argwhere(got != want)[0])
        cause = _first(got.astype(np.int8), [
            (lambda: causal_mask(L).astype(np.int8),
             "mask polarity: True means may attend; yours is True where attention is forbidden "
             "(that is MultiheadAttention's attn_mask polarity)"),
            (lambda: np.tril(np.ones((L, L), np.int8), -1),
             "off by one: the diagonal must be True, a token may attend to itself"),
            (lambda: np.tril(np.ones((L, L), np.int8), 1),
             "off by one: query i may also see key i + 1, one step into the future"),
            (lambda: np.triu(np.ones((L, L), np.int8)),
             "transposed: row i is query i and column j is key j; query i may attend keys j ≤ i"),
            (lambda: np.ones((L, L), np.int8), "every entry is True: nothing is masked"),
        ])
        _fail(f"on {about}: entry [{i}, {j}] (query {i}, key {j}) is {bool(got[i, j])}, "
              f"expected {bool(want[i, j])}", cause)
    return f"L = {', '.join(map(str, sizes))}"


def check_causal_mask(fn, raise_on_failure: bool = True) -> bool:
    """Check ``fn(L) -> bool (L, L)``: True where query i may attend key j, i.e. j ≤ i."""
    return _run("check_causal_mask", _check_causal_mask, fn, raise_on_failure)


# ----------------------------------------------------------------------------------------------
# heads: split, merge, a whole multi-head forward
# ----------------------------------------------------------------------------------------------

def _source(value, shape: tuple) -> str:
    """Which element of an ``np.arange(size).reshape(shape)`` input holds ``value``."""
    if not (float(value).is_integer() and 0 <= value < math.prod(shape)):
        return f"{value:.6g}, which is not an element of x"
    return f"x{list(_index(np.unravel_index(int(value), shape)))}"


def _layout_failure(got, want, x_shape, labels: str, about: str, candidates) -> None:
    """Fail with the first misplaced element, named by where it came from in x."""
    if np.array_equal(got, want):
        return
    idx = _index(np.argwhere(got != want)[0])
    _fail(f"on {about}: out{list(idx)} ({labels}) holds {_source(got[idx], x_shape)} but "
          f"should hold {_source(want[idx], x_shape)}", _first(got, candidates))


def _check_split_heads(fn) -> str:
    cases = [(2, 5, 12, 3), (3, 7, 8, 4), (1, 4, 6, 1), (2, 3, 10, 5), (2, 4, 6, 6)]
    for N, L, E, H in cases:
        D = E // H
        x = np.arange(N * L * E, dtype=np.float64).reshape(N, L, E)
        about = f"x of shape {(N, L, E)}, num_heads = {H}"
        got = _array(_call(fn, (x, H), about), "the output", (N, H, L, D), about,
                     lambda s: "the head axis was not moved in front of the tokens: expected "
                               "(N, H, L, D)" if s == (N, L, H, D) else None)
        want = tensor(x).reshape(N, L, H, D).transpose(1, 2).data  # (N, H, L, D)
        _layout_failure(got, want, x.shape, "batch, head, token, feature", about, [
            (lambda: x.reshape(N, H, L, D),
             "reshape without transpose: a reshape re-reads the memory in its order, so reshaping "
             "(N, L, E) straight to (N, H, L, D) gives the right shape but mixes tokens into heads; "
             "a head must hold every token, each with only its own features"),
            (lambda: x.reshape(N, L, D, H).transpose(0, 3, 1, 2),
             "the features were split as (D, H) instead of (H, D): head h must own the contiguous "
             "features h·D … (h+1)·D − 1"),
        ])
    return f"{len(cases)} shapes (batch > 1, odd L, 1 head, head_dim 1)"


def check_split_heads(fn, raise_on_failure: bool = True) -> bool:
    """Check ``fn(x, num_heads)``: (N, L, E) -> (N, H, L, E/H), head h = features h·D … (h+1)·D − 1."""
    return _run("check_split_heads", _check_split_heads, fn, raise_on_failure)


def _check_merge_heads(fn) -> str:
    cases = [(2, 3, 5, 4), (3, 4, 7, 2), (1, 1, 4, 6), (2, 6, 3, 1)]
    for N, H, L, D in cases:
        x = np.arange(N * H * L * D, dtype=np.float64).reshape(N, H, L, D)
        about = f"x of shape {(N, H, L, D)}"
        got = _array(_call(fn, (x,), about), "the output", (N, L, H * D), about,
                     lambda s: "merge the heads into the last axis: expected (N, L, H·D)")
        want = tensor(x).transpose(1, 2).reshape(N, L, H * D).data  # (N, L, H·D)
        _layout_failure(got, want, x.shape, "batch, token, feature", about, [
            (lambda: x.reshape(N, L, H * D),
             "reshape without transpose: a reshape re-reads the memory in its order, so reshaping "
             "(N, H, L, D) straight to (N, L, H·D) gives the right shape but mixes tokens into "
             "features"),
            (lambda: x.transpose(0, 2, 3, 1).reshape(N, L, H * D),
             "the features came out in (D, H) order: head h must fill the contiguous features "
             "h·D … (h+1)·D − 1"),
        ])
    return f"{len(cases)} shapes (batch > 1, one head, head_dim 1)"


def check_merge_heads(fn, raise_on_failure: bool = True) -> bool:
    """Check ``fn(x)``: (N, H, L, D) -> (N, L, H·D), the inverse of split_heads."""
    return _run("check_merge_heads", _check_merge_heads, fn, raise_on_failure)


def _mha_ref(x, W_q, W_k, W_v, W_o, H) -> np.ndarray:
    E = x.shape[-1]
    mha = MultiheadAttention(E, H, bias=False, batch_first=True, dtype=np.float64)
    mha.load_state_dict({"in_proj_weight": np.concatenate([W_q, W_k, W_v]), "out_proj.weight": W_o})
    xt = tensor(x)
    return mha(xt, xt, xt, need_weights=False)[0].data


def _mha_variant(x, W_q, W_k, W_v, W_o, H, *, scale, heads_by_reshape: bool, project: bool):
    """A known-wrong multi-head forward composed from tinyattn ops (for diagnosis only)."""
    N, L, E = x.shape
    D = E // H

    def split(t):
        if heads_by_reshape:
            return t.reshape(N, H, L, D)
        return t.reshape(N, L, H, D).transpose(1, 2)  # (N, H, L, D)

    q, k, v = (split(F.linear(tensor(x), tensor(W))) for W in (W_q, W_k, W_v))
    o = F.scaled_dot_product_attention(q, k, v, scale=scale)  # (N, H, L, D)
    o = o.reshape(N, L, E) if heads_by_reshape else o.transpose(1, 2).reshape(N, L, E)
    return (F.linear(o, tensor(W_o)) if project else o).data


def _check_multi_head_forward(fn) -> str:
    rng = _rng(3)
    cases = [(2, 5, 12, 3, 1.0), (3, 4, 8, 2, 1.0), (1, 6, 6, 1, 1.0), (2, 3, 10, 5, 1.0),
             (2, 4, 16, 2, 40.0)]
    for N, L, E, H, mag in cases:
        x = mag * rng.standard_normal((N, L, E))
        W_q, W_k, W_v, W_o = (rng.standard_normal((E, E)) / math.sqrt(E) for _ in range(4))
        about = f"x of shape {(N, L, E)}, num_heads = {H}" + (
            f" [large inputs: x ~ {mag:g}·N(0, 1), scores in the thousands]" if mag != 1 else "")
        got = _array(_call(fn, (x, W_q, W_k, W_v, W_o, H), about), "the output", (N, L, E), about)
        diff = _differs(got, _mha_ref(x, W_q, W_k, W_v, W_o, H))
        if not diff:
            continue
        if not np.isfinite(got).all():
            _fail(f"on {about}: {diff}", _OVERFLOW)
        D = E // H
        Ws = (W_q, W_k, W_v, W_o)

        def variant(**kw):
            base = dict(scale=1 / math.sqrt(D), heads_by_reshape=False, project=True)
            return lambda: _mha_variant(x, *Ws, H, **{**base, **kw})

        cause = _first(got, [
            (lambda: _mha_ref(x, W_q.T, W_k.T, W_v.T, W_o.T, H),
             "the weights are (out_features, in_features), as in torch.nn.Linear: a projection is "
             "x Wᵀ, not x W"),
            (lambda: _mha_ref(x, W_q, W_k, W_v, W_o.T, H),
             "only the output projection is untransposed: W_o has the (out_features, in_features) "
             "layout of the other three weights, so it is applied as concat(heads) W_oᵀ"),
            (lambda: _mha_ref(x, W_q.T, W_k.T, W_v.T, W_o, H),
             "the input projections are untransposed: W_q, W_k and W_v are (out_features, "
             "in_features), as in torch.nn.Linear, so a projection is x Wᵀ, not x W"),
            (lambda: _mha_ref(x, W_q, W_k, W_v, W_v, H),
             "W_v was used where W_o belongs: the output projection is a separate matrix W_o "
             "(the seed article's Attention(Q, K, V) W_vᵀ is the mistake notebook 04 corrects)"),
            (lambda: _mha_ref(x, W_q, W_k, W_v, W_v.T, H),
             "W_v was used where W_o belongs (and untransposed): the output projection is a "
             "separate matrix W_o"),
            (variant(scale=1 / math.sqrt(E)),
             f"scaled by √E = √{E}; each head's scores are divided by √head_dim = √{D}"),
            (variant(project=False), "the concatenated heads were not projected by W_o"),
            (variant(heads_by_reshape=True),
             "reshape without transpose when splitting or merging the heads (see check_split_heads "
             "and check_merge_heads)"),
        ])
        _fail(f"on {about}: {diff}", cause)
    return f"{len(cases)} cases (batch > 1, 1 to 5 heads, odd head_dim, large inputs)"


def check_multi_head_forward(fn, raise_on_failure: bool = True) -> bool:
    """Check ``fn(x, W_q, W_k, W_v, W_o, num_heads) -> (N, L, E)``: multi-head self-attention.

    x (N, L, E); each W (E, E) in the (out, in) layout of torch.nn.Linear; no biases, no mask.
    Q = x W_qᵀ, K = x W_kᵀ, V = x W_vᵀ, split into H heads of D = E/H features;
    head_h = softmax(Q_h K_hᵀ / √D) V_h; out = concat(head_1 … head_H) W_oᵀ.
    """
    return _run("check_multi_head_forward", _check_multi_head_forward, fn, raise_on_failure)


# ----------------------------------------------------------------------------------------------
# positional encoding
# ----------------------------------------------------------------------------------------------

def _angles(max_len: int, n_cols: int, exponents: np.ndarray, d: int, first: int = 0) -> np.ndarray:
    """pos / 10000^(exponents / d) for pos = first … first + max_len − 1; (max_len, n_cols)."""
    pos = np.arange(first, first + max_len, dtype=np.float64)[:, None]  # (max_len, 1)
    return pos / 10000.0 ** (exponents[:n_cols] / d)  # (max_len, n_cols)


def _interleave(sin_part: np.ndarray, cos_part: np.ndarray, d: int) -> np.ndarray:
    out = np.zeros((sin_part.shape[0], d))
    out[:, 0::2], out[:, 1::2] = sin_part, cos_part
    return out


def _pe_cause(L: int, d: int, got: np.ndarray) -> str | None:
    n_sin, n_cos = (d + 1) // 2, d // 2
    two_i = np.arange(0, d, 2, dtype=np.float64)  # (ceil(d/2),) the exponent 2i of pair i

    def table(exp_sin, exp_cos, first=0, swap=False):
        def build():
            a_s = _angles(L, n_sin, exp_sin, d, first)  # (L, n_sin)
            a_c = _angles(L, n_cos, exp_cos, d, first)  # (L, n_cos)
            even, odd = (np.cos(a_s), np.sin(a_c)) if swap else (np.sin(a_s), np.cos(a_c))
            return _interleave(even, odd, d)

        return build

    def halves():
        a = _angles(L, n_sin, two_i, d)
        return np.concatenate([np.sin(a), np.cos(a[:, :n_cos])], axis=1)

    return _first(got, [
        (table(two_i, two_i, swap=True), "sin and cos swapped: even columns 2i are sin, odd "
                                          "columns 2i + 1 are cos"),
        (table(two_i / 2, two_i / 2), "the exponent uses i instead of 2i: the angle is "
                                      "pos / 10000^(2i / d_model) for column pair i"),
        (table(two_i, two_i + 1), "the cos column 2i + 1 must use the same frequency as the sin "
                                  "column 2i, 10000^(2i / d_model)"),
        (table(-two_i, -two_i), "the angle is pos divided by 10000^(2i / d_model), not multiplied"),
        (table(two_i, two_i, first=1), "positions start at 0: the first row is sin 0 = 0 and cos 0 = 1"),
        (halves, "the columns must interleave (sin, cos, sin, cos, …), not hold all sines, then all "
                 "cosines"),
    ])


_ODD_D_MODEL = ("an odd d_model: the even columns 0, 2, …, d_model − 1 are one more than the odd "
                "columns 1, 3, …, d_model − 2, so the cosines need one angle fewer than the sines "
                "(the last column is a sine)")


def _check_positional_encoding(fn) -> str:
    cases = [(12, 8), (7, 6), (30, 32), (5, 5), (4, 1)]
    for L, d in cases:
        odd = f" (odd d_model: {(d + 1) // 2} sin columns, {d // 2} cos columns)" if d % 2 else ""
        about = f"max_len = {L}, d_model = {d}{odd}"
        try:
            out = _call(fn, (L, d), about)
        except AssertionError as e:
            if d % 2 and isinstance(e.__cause__, ValueError):
                _fail(e.args[0].split("\n  hint:")[0], _ODD_D_MODEL)
            raise
        got = _array(out, "the table", (L, d), about,
                     lambda s: "the table is (max_len, d_model): one row per position"
                     if s == (d, L) else _ODD_D_MODEL if d % 2 and s == (L, d + 1) else None)
        diff = _differs(got, sinusoidal_table(L, d, dtype=np.float64))
        if diff:
            _fail(f"on {about}: {diff}", _pe_cause(L, d, got))
    return f"{len(cases)} tables (even and odd d_model)"


def check_positional_encoding(fn, raise_on_failure: bool = True) -> bool:
    """Check ``fn(max_len, d_model) -> (max_len, d_model)``, the sinusoidal table.

    PE[pos, 2i] = sin(pos / 10000^(2i/d_model)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d_model)),
    pos = 0 … max_len − 1; an odd d_model has one more sin column than cos columns.
    """
    return _run("check_positional_encoding", _check_positional_encoding, fn, raise_on_failure)


# ----------------------------------------------------------------------------------------------
# layer norm backward
# ----------------------------------------------------------------------------------------------

def _layer_norm_grads(x, gamma, dout, eps) -> tuple:
    xt, gt = tensor(x, requires_grad=True), tensor(gamma, requires_grad=True)
    bt = tensor(np.zeros_like(gamma), requires_grad=True)
    F.layer_norm(xt, gamma.shape, gt, bt, eps).backward(dout)
    return xt.grad, gt.grad, bt.grad


def _dx_cause(dout, x, gamma, eps, passed_eps: bool, got) -> str | None:
    n = x.shape[-1]
    xc = x - x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)
    xhat, gh = xc * rstd, dout * gamma
    if not np.isfinite(got).all():
        return ("NaN or inf: a row with zero variance divides by zero unless eps is added to the "
                "variance inside the square root")
    candidates = [
        (lambda: rstd * (gh - gh.mean(axis=-1, keepdims=True)),
         "the variance term is missing: the variance σ² depends on x too, a third path from x to "
         "the output besides the direct one and the one through the mean"),
        (lambda: rstd * (gh - xhat * (gh * xhat).mean(axis=-1, keepdims=True)),
         "the mean term is missing: the mean μ depends on x too, a path from every x_j to every "
         "x̂_i of its row"),
        (lambda: rstd * (gh - gh.mean(axis=-1, keepdims=True)
                         + xhat * (gh * xhat).mean(axis=-1, keepdims=True)),
         "the variance term has the wrong sign: a larger σ² shrinks every x̂_i, so the path "
         "through the variance pulls dx in the direction opposite to x̂"),
        (lambda: rstd * (gh - gh.sum(axis=-1, keepdims=True)
                         - xhat * (gh * xhat).sum(axis=-1, keepdims=True)),
         f"sums instead of means: μ and σ² average over the row, so the terms through them carry "
         f"a factor 1/n (here n = {n}): ∂μ/∂x_j = 1/n"),
        (lambda: rstd * (gh - gh.sum(axis=-1, keepdims=True)
                         - xhat * (gh * xhat).mean(axis=-1, keepdims=True)),
         f"the mean term uses a sum instead of a mean: ∂μ/∂x_j = 1/n (here n = {n})"),
        (lambda: rstd * (gh - gh.mean(axis=-1, keepdims=True)
                         - xhat * (gh * xhat).sum(axis=-1, keepdims=True)),
         f"the variance term uses a sum instead of a mean: σ² is a mean over the row, so "
         f"∂σ²/∂x_j carries a factor 1/n (here n = {n})"),
        (lambda: _layer_norm_grads(x, np.ones_like(gamma), dout, eps)[0],
         "γ is missing from dx: the gradient reaching x̂ is dout ∘ γ"),
        (lambda: math.sqrt((n - 1) / n) * _layer_norm_grads(x, gamma, dout, eps * (n - 1) / n)[0],
         "the unbiased variance (divide by n − 1) was used; layer norm uses the biased variance "
         "(divide by n)"),
    ]
    if passed_eps:
        candidates.append((lambda: _layer_norm_grads(x, gamma, dout, 1e-5)[0],
                           f"the eps argument (here {eps}) was ignored: a fixed eps was used"))
    candidates.append((lambda: _layer_norm_grads(x, gamma, dout, 0.0)[0],
                       "eps is missing: the normalization divides by sqrt(var + eps)"))
    return _first(got, candidates)


def _check_layer_norm_backward(fn) -> str:
    rng = _rng(4)
    const = rng.standard_normal((3, 5))
    const[1] = 2.5
    cases = [
        ("a batch of rows", rng.standard_normal((2, 3, 8)), None),
        ("odd sizes", rng.standard_normal((5, 7)), None),
        ("4-D: dγ and dβ sum over three axes", rng.standard_normal((2, 2, 3, 16)), None),
        ("a constant row (variance 0)", const, None),
        ("eps = 0.1 with small-variance rows", 0.2 * rng.standard_normal((3, 6)), 0.1),
        ("large-magnitude inputs (x ≈ 1e6 + noise)", 1e6 + rng.standard_normal((2, 3, 9)), None),
    ]
    for label, x, eps in cases:
        E = x.shape[-1]
        gamma, dout = 1.0 + 0.5 * rng.standard_normal(E), rng.standard_normal(x.shape)
        about = f"x of shape {x.shape}" + ("" if eps is None else f", eps = {eps}") + f" [{label}]"
        args = (dout, x, gamma)
        res = _call(fn, args, about) if eps is None else _call(fn, args, about, eps=eps)
        dx, dgamma, dbeta = _tuple(res, 3, "(dx, dgamma, dbeta)", about)
        eps_used = 1e-5 if eps is None else eps
        want_dx, want_dg, want_db = _layer_norm_grads(x, gamma, dout, eps_used)
        sums = "dgamma and dbeta are summed over every axis except the last"
        dx = _array(dx, "dx", x.shape, about)
        dg = _array(dgamma, "dgamma", (E,), about, lambda s: sums)
        db = _array(dbeta, "dbeta", (E,), about, lambda s: sums)
        diff = _differs(dx, want_dx)
        if diff:
            cause = _dx_cause(dout, x, gamma, eps_used, eps is not None, dx)
            if cause is None and x.mean() > 1e3:
                res = _tuple(_call(fn, (dout, x - 1e6, gamma), about), 3, "(dx, dgamma, dbeta)", about)
                shifted = _array(res[0], "dx", x.shape, about)
                if not _differs(shifted, want_dx):
                    cause = ("precision: the same rows shifted by −1e6 give the right dx. Compute "
                             "the variance from centered values, mean((x − μ)²), not as "
                             "mean(x²) − μ², which cancels catastrophically for large x")
            _fail(f"on {about}: dx: {diff}", cause)
        axes = tuple(range(x.ndim - 1))
        diff = _differs(dg, want_dg)
        if diff:
            _fail(f"on {about}: dgamma: {diff}", _first(dg, [
                (lambda: (dout * x).sum(axis=axes), "dgamma uses x; it must use the normalized x̂"),
                (lambda: want_db, "dgamma equals dbeta: dgamma is the sum of dout ∘ x̂, dbeta of dout"),
            ]))
        diff = _differs(db, want_db)
        if diff:
            _fail(f"on {about}: dbeta: {diff}", _first(db, [
                (lambda: want_dg, "dgamma and dbeta are swapped: return (dx, dgamma, dbeta)"),
            ]) or "dbeta is the sum of dout over every axis except the last")
    return f"{len(cases)} cases (batch, odd sizes, 4-D, a constant row, eps = 0.1, x ≈ 1e6)"


def check_layer_norm_backward(fn, raise_on_failure: bool = True) -> bool:
    """Check ``fn(dout, x, gamma, eps=1e-5) -> (dx, dgamma, dbeta)``, layer norm over the last axis.

    y = γ ∘ (x − μ)/√(σ² + eps) + β with μ, σ² the mean and biased variance of each row;
    dout (..., E) = ∂L/∂y, x (..., E), gamma (E,) -> dx (..., E), dgamma (E,), dbeta (E,).
    """
    return _run("check_layer_norm_backward", _check_layer_norm_backward, fn, raise_on_failure)


# ----------------------------------------------------------------------------------------------
# online softmax (attention over key blocks)
# ----------------------------------------------------------------------------------------------

class _KeyProbe(np.ndarray):
    """k or v as the student's function sees them: logs how many keys each product touches.

    Products are matmul, dot, einsum, tensordot, inner and vdot; every other operation passes
    through unobserved. A view of k (a block, a transpose, one batch element) is traced back to
    the key rows it covers through its memory offsets; a copy is counted by its size.
    """

    def __array_finalize__(self, obj):
        self.origin = getattr(obj, "origin", None)
        self.log = getattr(obj, "log", None)

    def keys(self) -> int:
        """How many distinct key rows of the original array this array holds."""
        o = self.origin
        S = o.shape[-2]
        start = self.__array_interface__["data"][0] - o.__array_interface__["data"][0]
        if self.size and 0 <= start < o.nbytes:
            offsets = np.asarray(start, dtype=np.int64)
            for n, stride in zip(self.shape, self.strides):
                offsets = np.add.outer(offsets, np.arange(n, dtype=np.int64) * stride)
            if offsets.min() >= 0 and offsets.max() < o.nbytes:
                return int(np.unique(offsets // o.strides[-2] % S).size)
        return -(-self.size * S // o.size)

    @staticmethod
    def _observe(args) -> None:
        for a in args:
            if isinstance(a, _KeyProbe) and a.log is not None:
                a.log.append(a.keys())

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc is np.matmul:
            self._observe(inputs)
        inputs = tuple(a.view(np.ndarray) if isinstance(a, _KeyProbe) else a for a in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(a.view(np.ndarray) if isinstance(a, _KeyProbe) else a
                                  for a in kwargs["out"])
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        if func in (np.dot, np.einsum, np.tensordot, np.inner, np.vdot):
            self._observe(args)
        return super().__array_function__(func, types, args, kwargs)


def probe_keys(a: np.ndarray, log: list) -> _KeyProbe:
    """``a`` (k or v) as a probe: each product of it appends to ``log`` how many keys it used."""
    origin = np.ascontiguousarray(a)
    p = origin.view(_KeyProbe)
    p.origin, p.log = origin, log
    return p


def _online_cases(rng) -> list:
    def qkv(lead, L, S, d, dv, mag=1.0):
        return (mag * rng.standard_normal(lead + (L, d)), mag * rng.standard_normal(lead + (S, d)),
                rng.standard_normal(lead + (S, dv)))

    u = np.abs(rng.standard_normal(6)) + 0.5  # one direction; the scores grow with the key index
    q_rise = (u * rng.uniform(0.5, 1.0, (2, 3, 1)))  # (2, 3, 6)
    k_rise = u * np.linspace(0.5, 4.0, 10)[:, None]  # (10, 6)
    rising = (q_rise, np.broadcast_to(k_rise, (2, 10, 6)).copy(), rng.standard_normal((2, 10, 4)))
    return [
        ("S = 7 keys in blocks of 3 (the last block is partial)", qkv((2,), 4, 7, 8, 5), 3),
        ("block_size 1", qkv((1,), 3, 5, 4, 4), 1),
        ("one block holds every key (block_size > S)", qkv((2,), 3, 4, 6, 6), 8),
        ("batch and heads: (2, 2, L, d)", qkv((2, 2), 5, 9, 4, 3), 4),
        ("the largest score arrives in the last block", rising, 3),
        ("large scores (|q·k| / √d_k in the thousands)", qkv((2,), 4, 10, 16, 5, mag=30.0), 4),
    ]


def _online_call(fn, q, k, v, b, about):
    """Call fn with k and v wrapped in probes; fail if one product used more than b keys."""
    log: list = []
    out = _call(fn, (q, probe_keys(k, log), probe_keys(v, log), b), about)
    if log and max(log) > b:
        _fail(f"{_name(fn)} multiplied {max(log)} keys at once with block_size = {b} on {about}",
              "the keys must be processed block by block: compute the scores of block_size keys, "
              "fold them into the running max, sum and output, then move to the next block")
    return out


def _only_right_when_max_comes_first(fn, q, k, v, b, about) -> bool:
    """Probe for a missing rescale: query 0 with its keys sorted by falling, then rising score."""
    q0 = q[..., :1, :]  # (..., 1, d)
    order = np.argsort(-(q0 @ np.swapaxes(k, -1, -2))[..., 0, :], axis=-1)  # (..., S)
    k_desc = np.take_along_axis(k, order[..., None], axis=-2)  # (..., S, d)
    v_desc = np.take_along_axis(v, order[..., None], axis=-2)  # (..., S, d_v)
    want = _sdpa_ref(q0, k_desc, v_desc)[0]  # (..., 1, d_v)
    desc = _array(_online_call(fn, q0, k_desc, v_desc, b, about), "the output", want.shape, about)
    asc = _array(_online_call(fn, q0, k_desc[..., ::-1, :], v_desc[..., ::-1, :], b, about),
                 "the output", want.shape, about)
    return not _differs(desc, want) and _differs(asc, want) is not None


def _online_cause(fn, q, k, v, b, got, about) -> str | None:
    S, d = k.shape[-2], q.shape[-1]
    if not np.isfinite(got).all():
        return ("overflow: keep a running max m of the scores seen so far and exponentiate "
                "s − m, never s itself")
    if S > b and _only_right_when_max_comes_first(fn, q, k, v, b, about):
        return ("no rescaling: right when the largest score comes in the first block, wrong when "
                "it comes later. When a block raises the running max from m to m', the running "
                "sum ℓ and the accumulated output must both be multiplied by exp(m − m')")
    ones = _array(_online_call(fn, q, k, np.ones_like(v), b, about), "the output", got.shape, about)
    if not np.allclose(ones, 1.0, rtol=RTOL, atol=ATOL):
        return (f"with v all ones the output must be all ones (attention averages the value rows), "
                f"yours gives {ones.flat[0]:.6g}: divide the accumulated output by the accumulated "
                f"sum of exponentials ℓ once, after the last block")
    return _first(got, [
        (lambda: _sdpa_ref(q, k, v, scale=1.0)[0],
         f"off by a factor √d_k: the scores must be divided by √d_k = √{d}"),
        (lambda: _sdpa_ref(q, k[..., :S - S % b, :], v[..., :S - S % b, :])[0] if S % b else None,
         f"the last, partial block was skipped: S = {S} is not a multiple of block_size = {b}"),
    ])


def _check_online_softmax(fn) -> str:
    cases = _online_cases(_rng(5))
    for label, (q, k, v), b in cases:
        about = f"q {q.shape}, k {k.shape}, v {v.shape}, block_size = {b} [{label}]"
        want = _sdpa_ref(q, k, v)[0]
        got = _array(_online_call(fn, q, k, v, b, about), "the output", want.shape, about)
        diff = _differs(got, want)
        if diff:
            _fail(f"on {about}: {diff}", _online_cause(fn, q, k, v, b, got, about))
    return (f"{len(cases)} cases (partial last block, block_size 1 and > S, heads, "
            f"late maximum, large scores), never more than block_size keys at once")


def check_online_softmax(fn, raise_on_failure: bool = True) -> bool:
    """Check ``fn(q, k, v, block_size) -> out``: attention computed one block of keys at a time.

    q (..., L, d), k (..., S, d), v (..., S, d_v) -> (..., L, d_v), equal to
    softmax(q kᵀ / √d) v, computed with a running max and a running sum over blocks of at most
    block_size keys. The check watches the products (matmul, dot, einsum, tensordot) that touch
    k and v: none may use more than block_size keys.
    """
    return _run("check_online_softmax", _check_online_softmax, fn, raise_on_failure)


_BODIES = {
    "softmax": _check_softmax, "softmax_backward": _check_softmax_backward,
    "scaled_dot_product_attention": _check_sdpa, "causal_mask": _check_causal_mask,
    "split_heads": _check_split_heads, "merge_heads": _check_merge_heads,
    "multi_head_forward": _check_multi_head_forward, "positional_encoding": _check_positional_encoding,
    "layer_norm_backward": _check_layer_norm_backward, "online_softmax": _check_online_softmax,
}


def run_check(exercise: str, fn) -> str:
    """Run the checks of ``exercise`` (a name in ``__all__`` without "check_") on ``fn`` without
    printing: the summary when it passes; else the AssertionError whose message is the hint."""
    if exercise not in _BODIES:
        raise ValueError(f"no exercise named {exercise!r}; expected one of {', '.join(_BODIES)}")
    try:
        return _BODIES[exercise](fn)
    except AssertionError as e:
        e.args = (f"check_{exercise}: {e.args[0] if e.args else e}",)
        raise
