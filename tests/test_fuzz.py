"""Differential fuzzing of the public attention boundary (hypothesis).

With PyTorch: random ranks, shapes (empty ones included), dtypes, masks (bool and float, shapes
that broadcast and shapes that do not), is_causal and enable_gqa for SDPA, MultiheadAttention and
the encoder layer. When PyTorch accepts the input, tinyattn gives the same numbers; when PyTorch
rejects it, tinyattn raises ValueError/TypeError/IndexError with a message that names a shape or a
value — never a NumPy-internal error and never a silent result.

Without PyTorch: flash and sliding-window attention against the plain SDPA, the same way.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyattn as ta
import tinyattn.efficient as eff
import tinyattn.nn as nn
import tinyattn.nn.functional as F
from helpers import import_torch

FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
OUR_ERRORS = (ValueError, TypeError, IndexError)
NAMES_SOMETHING = re.compile(r"\(|\d|dtype|must|expected")


def assert_refused_clearly(call):
    """tinyattn refuses with one of our error types, and says what was wrong."""
    with pytest.raises(OUR_ERRORS) as err:
        call()
    assert NAMES_SOMETHING.search(str(err.value)), f"unhelpful message: {err.value}"


def mask_shape(draw, scores_shape):
    """A mask shape: the scores' tail with some dims dropped or set to 1, or (rarely) a wrong one.

    At least 2-D: PyTorch 2.13 fails on some 1-D masks (it reads the mask's dim −2), while
    tinyattn takes a 1-D (S,) mask as (1, S) — tested in test_attention.py. No extra leading dims
    either: PyTorch accepts those for some empty scores, by accident of broadcasting nothing.
    """
    if draw(st.integers(0, 5)) == 0:  # a shape that usually does not fit
        return tuple(draw(st.lists(st.integers(1, 4), min_size=2, max_size=len(scores_shape))))
    keep = draw(st.integers(2, len(scores_shape)))
    return tuple(n if draw(st.booleans()) else 1 for n in scores_shape[-keep:])


@st.composite
def sdpa_case(draw):
    batch = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
    L, S, E, Ev = draw(st.integers(0, 4)), draw(st.integers(0, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    gqa = len(batch) >= 1 and draw(st.booleans())
    kv_batch = batch
    if gqa and batch[-1] > 0:
        kv_batch = batch[:-1] + (draw(st.sampled_from([d for d in range(1, batch[-1] + 1)] + [batch[-1] + 1])),)
    kind = draw(st.sampled_from(["none", "bool", "float", "causal"]))
    shape = mask_shape(draw, batch + (L, S)) if kind in ("bool", "float") else None
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    seed = draw(st.integers(0, 2 ** 16))
    return batch, kv_batch, L, S, E, Ev, gqa, kind, shape, dtype, seed


@FUZZ
@given(sdpa_case())
def test_sdpa_matches_or_refuses_like_pytorch(case):
    torch = import_torch()
    batch, kv_batch, L, S, E, Ev, gqa, kind, shape, dtype, seed = case
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(batch + (L, E)).astype(dtype)
    k = rng.standard_normal(kv_batch + (S, E)).astype(dtype)
    v = rng.standard_normal(kv_batch + (S, Ev)).astype(dtype)
    mask = None
    if kind == "bool":
        mask = rng.random(shape) < 0.7
    elif kind == "float":
        mask = rng.standard_normal(shape).astype(dtype)
    kwargs = dict(is_causal=kind == "causal", enable_gqa=gqa)
    try:
        want = torch.nn.functional.scaled_dot_product_attention(
            torch.tensor(q), torch.tensor(k), torch.tensor(v),
            attn_mask=None if mask is None else torch.tensor(mask), **kwargs).numpy()
    except (RuntimeError, ValueError, IndexError, TypeError):
        assert_refused_clearly(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kwargs))
        return
    try:
        got = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kwargs)
    except OUR_ERRORS as err:
        # PyTorch skips its checks (mask shape, head counts) when the scores are empty; tinyattn
        # checks anyway, so it may refuse there, clearly
        assert 0 in batch + kv_batch + (L, S) and NAMES_SOMETHING.search(str(err)), err
        return
    assert got.shape == want.shape
    tol = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(got.data, want, rtol=tol, atol=tol)


@st.composite
def mha_case(draw):
    E = draw(st.integers(1, 8))
    H = draw(st.sampled_from([h for h in range(1, 5) if E % h == 0] + [3]))
    N, L, S = draw(st.integers(0, 3)), draw(st.integers(0, 4)), draw(st.integers(0, 4))
    batch_first = draw(st.booleans())
    attn = draw(st.sampled_from([None, "bool2", "float2", "bool3", "wrong"]))
    padding = draw(st.sampled_from([None, "bool", "float", "wrong"]))
    need_weights = draw(st.booleans())
    return E, H, N, L, S, batch_first, attn, padding, need_weights, draw(st.integers(0, 2 ** 16))


@FUZZ
@given(mha_case())
def test_multihead_attention_matches_or_refuses_like_pytorch(case):
    torch = import_torch()
    E, H, N, L, S, batch_first, attn, padding, need_weights, seed = case
    rng = np.random.default_rng(seed)
    seq = lambda T: (N, T, E) if batch_first else (T, N, E)  # noqa: E731
    x_q, x_kv = rng.standard_normal(seq(L)), rng.standard_normal(seq(S))
    attn_mask = {None: None, "bool2": rng.random((L, S)) < 0.3, "float2": rng.standard_normal((L, S)),
                 "bool3": rng.random((N * H, L, S)) < 0.3, "wrong": rng.random((L + 1, S)) < 0.3}[attn]
    pad = {None: None, "bool": rng.random((N, S)) < 0.3, "float": rng.standard_normal((N, S)),
           "wrong": rng.random((N, S + 1)) < 0.3}[padding]
    try:
        theirs = torch.nn.MultiheadAttention(E, H, batch_first=batch_first).double()
    except (AssertionError, ValueError, RuntimeError):
        assert_refused_clearly(lambda: nn.MultiheadAttention(E, H, batch_first=batch_first))
        return
    ours = nn.MultiheadAttention(E, H, batch_first=batch_first).double()
    ours.load_state_dict({name: t.detach().numpy() for name, t in theirs.state_dict().items()})
    as_torch = lambda a: None if a is None else torch.tensor(a)  # noqa: E731
    try:
        with torch.no_grad():
            out_t, w_t = theirs(as_torch(x_q), as_torch(x_kv), as_torch(x_kv), key_padding_mask=as_torch(pad),
                                attn_mask=as_torch(attn_mask), need_weights=need_weights)
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError):
        call = lambda: ours(x_q, x_kv, x_kv, key_padding_mask=pad, attn_mask=attn_mask,  # noqa: E731
                            need_weights=need_weights)
        if 0 in (N, L, S) and attn != "wrong" and padding != "wrong":
            # PyTorch 2.13 crashes on some empty batches/sequences ("cannot reshape tensor of 0
            # elements"); tinyattn returns the empty or zero result of the right shape instead
            assert call()[0].shape == x_q.shape
            return
        assert_refused_clearly(call)
        return
    out, w = ours(x_q, x_kv, x_kv, key_padding_mask=pad, attn_mask=attn_mask, need_weights=need_weights)
    out_t = out_t.numpy()
    finite = np.isfinite(out_t)  # PyTorch gives NaN for a fully masked row with need_weights=True
    np.testing.assert_allclose(out.data[finite], out_t[finite], rtol=1e-9, atol=1e-10)
    if need_weights:
        w_t = w_t.numpy()
        ok = np.isfinite(w_t)
        np.testing.assert_allclose(w.data[ok], w_t[ok], rtol=1e-9, atol=1e-10)
        # where PyTorch gives NaN, a fully masked row: tinyattn gives that head zeros, so the
        # head-averaged weights there are the mean over the other heads (finite, in [0, 1])
        assert np.all(np.isfinite(w.data)) and np.all((w.data[~ok] >= 0) & (w.data[~ok] <= 1))


@FUZZ  # N, T >= 1: PyTorch 2.13 crashes on empty batches here; tinyattn's are in test_bad_inputs.py
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.booleans(), st.booleans(),
       st.sampled_from([None, "causal", "float", "padding"]), st.integers(0, 2 ** 16))
def test_encoder_layer_matches_pytorch(H, N, T, norm_first, batch_first, mask_kind, seed):
    torch = import_torch()
    E = 2 * H
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, T, E) if batch_first else (T, N, E))
    theirs = torch.nn.TransformerEncoderLayer(E, H, 8, dropout=0.0, batch_first=batch_first,
                                              norm_first=norm_first).double()
    ours = nn.TransformerEncoderLayer(E, H, 8, dropout=0.0, batch_first=batch_first, norm_first=norm_first).double()
    ours.load_state_dict({name: t.detach().numpy() for name, t in theirs.state_dict().items()})
    kwargs = {}
    if mask_kind == "causal":
        kwargs = dict(src_mask=nn.causal_mask(T), is_causal=True)
    elif mask_kind == "float":
        kwargs = dict(src_mask=rng.standard_normal((T, T)))
    elif mask_kind == "padding":
        pad = rng.random((N, T)) < 0.3
        pad[:, 0] = False  # keep one key per sequence: PyTorch's fast path would give NaN otherwise
        kwargs = dict(src_key_padding_mask=pad)
    theirs.train()  # dropout is 0; eval mode would take PyTorch's fast path, which gives NaN for float masks
    with torch.no_grad():
        want = theirs(torch.tensor(x), **{k: (torch.tensor(v) if isinstance(v, np.ndarray) else v)
                                         for k, v in kwargs.items()}).numpy()
    got = ours(x, **kwargs)
    np.testing.assert_allclose(got.data, want, rtol=1e-9, atol=1e-10)


@FUZZ
@given(st.lists(st.integers(0, 2), max_size=2), st.integers(0, 40), st.integers(0, 40), st.integers(1, 6),
       st.booleans(), st.integers(1, 16), st.integers(0, 12), st.integers(0, 2 ** 16))
def test_flash_and_sliding_window_equal_plain_sdpa(batch, N, S, d, causal, block, window, seed):
    rng = np.random.default_rng(seed)
    batch = tuple(batch)
    q, k, v = (ta.tensor(rng.standard_normal(batch + shape), requires_grad=True)
               for shape in ((N, d), (S, d), (S, d + 1)))
    plain = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    flash = eff.flash_attention(q, k, v, is_causal=causal, block_size=block)
    np.testing.assert_allclose(flash.data, plain.data, rtol=1e-12, atol=1e-13)
    band = eff.sliding_window_mask(N, S, window, causal)
    plain_band = F.scaled_dot_product_attention(q, k, v, attn_mask=band)
    window_out = eff.sliding_window_attention(q, k, v, window, is_causal=causal)
    np.testing.assert_allclose(window_out.data, plain_band.data, rtol=1e-12, atol=1e-13)
    g = rng.standard_normal(plain.shape)
    grads = []
    for out in (plain, flash):
        for t in (q, k, v):
            t.grad = None
        out.backward(g)
        grads.append([t.grad.copy() for t in (q, k, v)])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


@FUZZ
@given(st.integers(0, 3), st.integers(1, 4), st.sampled_from([0, -1, 1.5, None, "3", float("inf"), float("nan")]))
def test_efficient_functions_refuse_bad_sizes_clearly(N, d, bad):
    q = ta.tensor(np.ones((N, d)))
    assert_refused_clearly(lambda: eff.flash_attention(q, q, q, block_size=bad))
    if bad != 0:  # a window of 0 is allowed: each query sees only its own position
        assert_refused_clearly(lambda: eff.sliding_window_attention(q, q, q, window=bad))
