"""The homework checkers accept a correct answer with one "passed" line, and reject the typical
wrong answers with a hint that names the cause."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from exercise_solutions.causal_mask import causal_mask
from exercise_solutions.layer_norm_backward import layer_norm_backward
from exercise_solutions.merge_heads import merge_heads
from exercise_solutions.multi_head_forward import multi_head_forward
from exercise_solutions.online_softmax import online_softmax
from exercise_solutions.positional_encoding import positional_encoding
from exercise_solutions.scaled_dot_product_attention import scaled_dot_product_attention
from exercise_solutions.softmax import softmax
from exercise_solutions.softmax_backward import softmax_backward
from exercise_solutions.split_heads import split_heads

import tinyattn.exercises as ex
from tinyattn.exercises.checkers import probe_keys

CHECKS = {
    "softmax": (ex.check_softmax, softmax),
    "softmax_backward": (ex.check_softmax_backward, softmax_backward),
    "scaled_dot_product_attention": (ex.check_scaled_dot_product_attention,
                                     scaled_dot_product_attention),
    "causal_mask": (ex.check_causal_mask, causal_mask),
    "split_heads": (ex.check_split_heads, split_heads),
    "merge_heads": (ex.check_merge_heads, merge_heads),
    "multi_head_forward": (ex.check_multi_head_forward, multi_head_forward),
    "positional_encoding": (ex.check_positional_encoding, positional_encoding),
    "layer_norm_backward": (ex.check_layer_norm_backward, layer_norm_backward),
    "online_softmax": (ex.check_online_softmax, online_softmax),
}


def _stable_exp(x, axis):
    return np.exp(x - x.max(axis=axis, keepdims=True))


# ---- wrong softmax -----------------------------------------------------------------------------

def softmax_no_max(x, axis=-1):
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def softmax_ignores_axis(x, axis=-1):
    return softmax(x, axis=-1)


def softmax_no_keepdims(x, axis=-1):
    e = _stable_exp(x, axis)
    return e / e.sum(axis=axis)


def softmax_max_without_keepdims(x, axis=-1):
    m = x.max(axis=axis)
    e = np.exp(x - (m if x.ndim == 2 else np.expand_dims(m, axis)))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_nan_for_masked_rows(x, axis=-1):
    e = _stable_exp(x, axis)
    return e / e.sum(axis=axis, keepdims=True)


def softmax_not_normalized(x, axis=-1):
    return _stable_exp(x, axis)


# ---- wrong softmax backward --------------------------------------------------------------------

def softmax_backward_diagonal(dout, p):
    return dout * p * (1 - p)


def softmax_backward_no_outer_p(dout, p):
    return dout - np.sum(dout * p, axis=-1, keepdims=True)


def softmax_backward_sum_everything(dout, p):
    return p * (dout - np.sum(dout * p))


def softmax_backward_swapped_args(p, dout):
    return softmax_backward(dout, p)


# ---- wrong attention ---------------------------------------------------------------------------

def _softmax_last(scores):
    return softmax(scores, axis=-1)


def sdpa_no_scale(q, k, v, mask=None):
    scores = q @ np.swapaxes(k, -1, -2)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    w = _softmax_last(scores)
    return w @ v, w


def sdpa_inverted_mask(q, k, v, mask=None):
    return scaled_dot_product_attention(q, k, v, None if mask is None else ~mask)


def sdpa_finite_fill(q, k, v, mask=None):
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -1e9)
    w = _softmax_last(scores)
    return w @ v, w


def sdpa_mask_after_softmax(q, k, v, mask=None):
    w = scaled_dot_product_attention(q, k, v)[1]
    if mask is not None:
        w = w * mask
    return w @ v, w


def sdpa_no_max(q, k, v, mask=None):
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    e = np.exp(scores)
    s = e.sum(axis=-1, keepdims=True)
    w = e / np.where(s == 0, 1, s)
    return w @ v, w


def sdpa_full_transpose(q, k, v, mask=None):
    scores = q @ k.T / np.sqrt(q.shape[-1])
    w = _softmax_last(scores)
    return w @ v, w


def sdpa_boolean_index(q, k, v, mask=None):
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        scores[~mask] = -np.inf
    w = _softmax_last(scores)
    return w @ v, w


def sdpa_softmax_over_queries(q, k, v, mask=None):
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    w = softmax(scores, axis=-2)
    return w @ v, w


def sdpa_returns_weights_first(q, k, v, mask=None):
    out, w = scaled_dot_product_attention(q, k, v, mask)
    return w, out


# ---- wrong causal masks ------------------------------------------------------------------------

def causal_mask_inverted(T):
    return np.triu(np.ones((T, T), dtype=bool), k=1)


def causal_mask_no_diagonal(T):
    return np.tril(np.ones((T, T), dtype=bool), k=-1)


def causal_mask_one_future_key(T):
    return np.tril(np.ones((T, T), dtype=bool), k=1)


def causal_mask_transposed(T):
    return np.triu(np.ones((T, T), dtype=bool))


def causal_mask_float(T):
    return np.tril(np.ones((T, T)))


# ---- wrong heads -------------------------------------------------------------------------------

def split_heads_reshape_only(x, num_heads):
    B, T, E = x.shape
    return x.reshape(B, num_heads, T, E // num_heads)


def split_heads_d_then_h(x, num_heads):
    B, T, E = x.shape
    return x.reshape(B, T, E // num_heads, num_heads).transpose(0, 3, 1, 2)


def split_heads_no_transpose(x, num_heads):
    B, T, E = x.shape
    return x.reshape(B, T, num_heads, E // num_heads)


def merge_heads_reshape_only(x):
    B, H, T, D = x.shape
    return x.reshape(B, T, H * D)


def merge_heads_d_then_h(x):
    B, H, T, D = x.shape
    return x.transpose(0, 2, 3, 1).reshape(B, T, H * D)


def _mha(x, W_q, W_k, W_v, W_o, H, *, transpose_w=True, scale_dim=None, project=True, heads=None):
    B, T, E = x.shape
    D = E // H

    def proj(W):
        return x @ (W.T if transpose_w else W)

    split = heads or (lambda t: split_heads(t, H))
    q, k, v = split(proj(W_q)), split(proj(W_k)), split(proj(W_v))
    w = _softmax_last(q @ np.swapaxes(k, -1, -2) / np.sqrt(scale_dim or D))
    o = merge_heads(w @ v) if heads is None else (w @ v).reshape(B, T, E)
    return o @ W_o.T if project else o


def mha_x_times_w(x, W_q, W_k, W_v, W_o, H):
    return _mha(x, W_q, W_k, W_v, W_o.T, H, transpose_w=False)


def mha_scale_by_embed_dim(x, W_q, W_k, W_v, W_o, H):
    return _mha(x, W_q, W_k, W_v, W_o, H, scale_dim=x.shape[-1])


def mha_no_output_projection(x, W_q, W_k, W_v, W_o, H):
    return _mha(x, W_q, W_k, W_v, W_o, H, project=False)


def mha_reshape_only(x, W_q, W_k, W_v, W_o, H):
    return _mha(x, W_q, W_k, W_v, W_o, H, heads=lambda t: split_heads_reshape_only(t, H))


def mha_w_v_for_w_o(x, W_q, W_k, W_v, W_o, H):
    return _mha(x, W_q, W_k, W_v, W_v, H)


def mha_only_w_o_untransposed(x, W_q, W_k, W_v, W_o, H):
    return _mha(x, W_q, W_k, W_v, W_o.T, H)


def mha_only_projections_untransposed(x, W_q, W_k, W_v, W_o, H):
    return _mha(x, W_q.T, W_k.T, W_v.T, W_o, H)


def mha_softmax_without_max(x, W_q, W_k, W_v, W_o, H):
    B, T, E = x.shape
    q, k, v = (split_heads(x @ W.T, H) for W in (W_q, W_k, W_v))
    e = np.exp(q @ np.swapaxes(k, -1, -2) / np.sqrt(E // H))
    return merge_heads(e / e.sum(axis=-1, keepdims=True) @ v) @ W_o.T


# ---- wrong positional encodings ----------------------------------------------------------------

def _pe(max_len, d_model, *, first=0, pair_exponent=2, sin_even=True, interleave=True):
    pos = np.arange(first, first + max_len)[:, None]
    i = np.arange((d_model + 1) // 2)
    angles = pos / 10000.0 ** (pair_exponent * i / d_model)
    a, b = (np.sin, np.cos) if sin_even else (np.cos, np.sin)
    if not interleave:
        return np.concatenate([a(angles), b(angles[:, : d_model // 2])], axis=1)
    pe = np.zeros((max_len, d_model))
    pe[:, 0::2], pe[:, 1::2] = a(angles), b(angles[:, : d_model // 2])
    return pe


def pe_swapped(max_len, d_model):
    return _pe(max_len, d_model, sin_even=False)


def pe_halves(max_len, d_model):
    return _pe(max_len, d_model, interleave=False)


def pe_exponent_i(max_len, d_model):
    return _pe(max_len, d_model, pair_exponent=1)


def pe_positions_from_one(max_len, d_model):
    return _pe(max_len, d_model, first=1)


def pe_cos_for_every_angle(max_len, d_model):
    pos = np.arange(max_len)[:, None]
    angles = pos / 10000.0 ** (np.arange(0, d_model, 2) / d_model)
    pe = np.zeros((max_len, d_model))
    pe[:, 0::2] = np.sin(angles)
    pe[:, 1::2] = np.cos(angles)  # one column too many when d_model is odd
    return pe


def pe_one_column_too_many(max_len, d_model):
    angles = np.arange(max_len)[:, None] / 10000.0 ** (np.arange(0, d_model, 2) / d_model)
    return np.stack([np.sin(angles), np.cos(angles)], axis=-1).reshape(max_len, -1)


def pe_even_only(max_len, d_model):
    angles = np.arange(max_len)[:, None] / 10000.0 ** (np.arange(0, d_model, 2) / d_model)
    pe = np.zeros((max_len, d_model))
    pe[:, 0::2], pe[:, 1::2] = np.sin(angles), np.cos(angles)
    return pe


# ---- wrong layer norm backward -----------------------------------------------------------------

def _ln_parts(x, eps, ddof=0):
    xc = x - x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(x.var(axis=-1, ddof=ddof, keepdims=True) + eps)
    return xc * rstd, rstd


def _ln_sums(dout, xhat):
    axes = tuple(range(dout.ndim - 1))
    return np.sum(dout * xhat, axis=axes), np.sum(dout, axis=axes)


def ln_no_variance_term(dout, x, gamma, eps=1e-5):
    xhat, rstd = _ln_parts(x, eps)
    g = dout * gamma
    return (rstd * (g - g.mean(axis=-1, keepdims=True)),) + _ln_sums(dout, xhat)


def ln_no_mean_term(dout, x, gamma, eps=1e-5):
    xhat, rstd = _ln_parts(x, eps)
    g = dout * gamma
    return (rstd * (g - xhat * np.mean(g * xhat, axis=-1, keepdims=True)),) + _ln_sums(dout, xhat)


def ln_variance_term_sign_flipped(dout, x, gamma, eps=1e-5):
    xhat, rstd = _ln_parts(x, eps)
    g = dout * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) + xhat * np.mean(g * xhat, axis=-1, keepdims=True))
    return (dx,) + _ln_sums(dout, xhat)


def _ln_dx_with(dout, x, gamma, eps, mean_term, variance_term):
    xhat, rstd = _ln_parts(x, eps)
    g = dout * gamma
    dx = rstd * (g - mean_term(g, axis=-1, keepdims=True)
                 - xhat * variance_term(g * xhat, axis=-1, keepdims=True))
    return (dx,) + _ln_sums(dout, xhat)


def ln_sums_instead_of_means(dout, x, gamma, eps=1e-5):
    return _ln_dx_with(dout, x, gamma, eps, np.sum, np.sum)


def ln_sum_in_the_mean_term(dout, x, gamma, eps=1e-5):
    return _ln_dx_with(dout, x, gamma, eps, np.sum, np.mean)


def ln_sum_in_the_variance_term(dout, x, gamma, eps=1e-5):
    return _ln_dx_with(dout, x, gamma, eps, np.mean, np.sum)


def ln_forgets_gamma(dout, x, gamma, eps=1e-5):
    dx = layer_norm_backward(dout, x, np.ones_like(gamma), eps)[0]
    return (dx,) + layer_norm_backward(dout, x, gamma, eps)[1:]


def ln_unbiased_variance(dout, x, gamma, eps=1e-5):
    n = x.shape[-1]
    xhat, rstd = _ln_parts(x, eps, ddof=1)
    g = dout * gamma
    # the exact gradient of the layer norm that divides by n − 1
    dx = rstd * (g - g.mean(axis=-1, keepdims=True)
                 - xhat * np.sum(g * xhat, axis=-1, keepdims=True) / (n - 1))
    return (dx,) + _ln_sums(dout, xhat)


def ln_ignores_eps(dout, x, gamma, eps=1e-5):
    return layer_norm_backward(dout, x, gamma)


def ln_one_pass_variance(dout, x, gamma, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = np.mean(x * x, axis=-1, keepdims=True) - mu * mu
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mu) * rstd
    g = dout * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * np.mean(g * xhat, axis=-1, keepdims=True))
    return (dx,) + _ln_sums(dout, xhat)


def ln_dgamma_uses_x(dout, x, gamma, eps=1e-5):
    dx, _, dbeta = layer_norm_backward(dout, x, gamma, eps)
    return dx, np.sum(dout * x, axis=tuple(range(x.ndim - 1))), dbeta


def ln_sums_axis_0_only(dout, x, gamma, eps=1e-5):
    dx = layer_norm_backward(dout, x, gamma, eps)[0]
    xhat = _ln_parts(x, eps)[0]
    return dx, np.sum(dout * xhat, axis=0), np.sum(dout, axis=0)


# ---- wrong online softmax ----------------------------------------------------------------------

def _blocks(q, k, v, block_size, *, rescale=True, scale=True, divide=True, keep_last=True,
            running_max=True):
    s_all = k.shape[-2]
    stop = s_all if keep_last else s_all - s_all % block_size
    c = 1.0 / np.sqrt(q.shape[-1]) if scale else 1.0
    m = np.full(q.shape[:-1] + (1,), -np.inf)
    l = np.zeros(q.shape[:-1] + (1,))
    acc = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for start in range(0, stop, block_size):
        kb, vb = k[..., start:start + block_size, :], v[..., start:start + block_size, :]
        s = (q @ np.swapaxes(kb, -1, -2)) * c
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True)) if running_max else np.zeros_like(m)
        alpha = np.exp(m - m_new) if rescale and running_max else 1.0
        p = np.exp(s - m_new)
        l = l * alpha + p.sum(axis=-1, keepdims=True)
        acc = acc * alpha + p @ vb
        m = m_new
    return acc / l if divide else acc


def online_no_rescaling(q, k, v, block_size):
    return _blocks(q, k, v, block_size, rescale=False)


def online_no_final_division(q, k, v, block_size):
    return _blocks(q, k, v, block_size, divide=False)


def online_no_scale(q, k, v, block_size):
    return _blocks(q, k, v, block_size, scale=False)


def online_drops_partial_block(q, k, v, block_size):
    return _blocks(q, k, v, block_size, keep_last=False)


def online_no_running_max(q, k, v, block_size):
    return _blocks(q, k, v, block_size, running_max=False)


def online_all_keys_at_once(q, k, v, block_size):
    return scaled_dot_product_attention(q, k, v)[0]


def online_all_keys_per_batch_element(q, k, v, block_size):
    out = np.empty(q.shape[:-1] + (v.shape[-1],))
    for idx in np.ndindex(q.shape[:-2]):
        out[idx] = scaled_dot_product_attention(q[idx], k[idx], v[idx])[0]
    return out


def online_rescales_sum_only(q, k, v, block_size):
    m = np.full(q.shape[:-1] + (1,), -np.inf)
    l = np.zeros(q.shape[:-1] + (1,))
    acc = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for start in range(0, k.shape[-2], block_size):
        s = q @ np.swapaxes(k[..., start:start + block_size, :], -1, -2) / np.sqrt(q.shape[-1])
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
        p = np.exp(s - m_new)
        l = l * np.exp(m - m_new) + p.sum(axis=-1, keepdims=True)
        acc = acc + p @ v[..., start:start + block_size, :]
        m = m_new
    return acc / l


WRONG = [
    ("softmax", softmax_no_max, "subtract the row max"),
    ("softmax", softmax_ignores_axis, "the axis argument seems to be ignored"),
    ("softmax", softmax_no_keepdims, "the sums were taken without keepdims=True"),
    ("softmax", softmax_max_without_keepdims, "the max was taken without keepdims=True"),
    ("softmax", softmax_nan_for_masked_rows, "a fully masked row"),
    ("softmax", softmax_not_normalized, "rows do not sum to 1"),
    ("softmax_backward", softmax_backward_diagonal, "only the diagonal"),
    ("softmax_backward", softmax_backward_no_outer_p, "outer factor p"),
    ("softmax_backward", softmax_backward_sum_everything, "runs over one row"),
    ("softmax_backward", softmax_backward_swapped_args, "arguments are swapped"),
    ("scaled_dot_product_attention", sdpa_no_scale, "off by a factor √d_k"),
    ("scaled_dot_product_attention", sdpa_inverted_mask, "mask polarity: True means may attend"),
    ("scaled_dot_product_attention", sdpa_finite_fill, "uniform weights 1/S"),
    ("scaled_dot_product_attention", sdpa_mask_after_softmax, "after the softmax"),
    ("scaled_dot_product_attention", sdpa_no_max, "overflow for large inputs"),
    ("scaled_dot_product_attention", sdpa_full_transpose, ".T reverses every axis"),
    ("scaled_dot_product_attention", sdpa_boolean_index, "needs np.where"),
    ("scaled_dot_product_attention", sdpa_softmax_over_queries, "softmax over the wrong axis"),
    ("scaled_dot_product_attention", sdpa_returns_weights_first, "wrong order"),
    ("causal_mask", causal_mask_inverted, "mask polarity: True means may attend"),
    ("causal_mask", causal_mask_no_diagonal, "the diagonal must be True"),
    ("causal_mask", causal_mask_one_future_key, "one step into the future"),
    ("causal_mask", causal_mask_transposed, "transposed"),
    ("causal_mask", causal_mask_float, "expected bool"),
    ("split_heads", split_heads_reshape_only, "reshape without transpose"),
    ("split_heads", split_heads_d_then_h, "split as (D, H)"),
    ("split_heads", split_heads_no_transpose, "head axis was not moved"),
    ("merge_heads", merge_heads_reshape_only, "reshape without transpose"),
    ("merge_heads", merge_heads_d_then_h, "(D, H) order"),
    ("multi_head_forward", mha_x_times_w, "x Wᵀ, not x W"),
    ("multi_head_forward", mha_scale_by_embed_dim, "√head_dim"),
    ("multi_head_forward", mha_no_output_projection, "not projected by W_o"),
    ("multi_head_forward", mha_reshape_only, "reshape without transpose"),
    ("multi_head_forward", mha_w_v_for_w_o, "W_v was used where W_o belongs"),
    ("multi_head_forward", mha_only_w_o_untransposed, "only the output projection is untransposed"),
    ("multi_head_forward", mha_only_projections_untransposed, "the input projections are untransposed"),
    ("multi_head_forward", mha_softmax_without_max, "subtract the row max"),
    ("positional_encoding", pe_swapped, "sin and cos swapped"),
    ("positional_encoding", pe_halves, "must interleave"),
    ("positional_encoding", pe_exponent_i, "uses i instead of 2i"),
    ("positional_encoding", pe_positions_from_one, "positions start at 0"),
    ("positional_encoding", pe_even_only, "odd d_model: 3 sin columns, 2 cos columns"),
    ("positional_encoding", pe_cos_for_every_angle, "the cosines need one angle fewer than the sines"),
    ("positional_encoding", pe_one_column_too_many, "the cosines need one angle fewer than the sines"),
    ("layer_norm_backward", ln_no_variance_term, "the variance term is missing"),
    ("layer_norm_backward", ln_no_mean_term, "the mean term is missing"),
    ("layer_norm_backward", ln_variance_term_sign_flipped, "the variance term has the wrong sign"),
    ("layer_norm_backward", ln_sums_instead_of_means, "sums instead of means"),
    ("layer_norm_backward", ln_sum_in_the_mean_term, "the mean term uses a sum instead of a mean"),
    ("layer_norm_backward", ln_sum_in_the_variance_term, "the variance term uses a sum instead of a mean"),
    ("layer_norm_backward", ln_forgets_gamma, "γ is missing from dx"),
    ("layer_norm_backward", ln_unbiased_variance, "unbiased variance"),
    ("layer_norm_backward", ln_ignores_eps, "the eps argument (here 0.1) was ignored"),
    ("layer_norm_backward", ln_one_pass_variance, "cancels catastrophically"),
    ("layer_norm_backward", ln_dgamma_uses_x, "dgamma uses x"),
    ("layer_norm_backward", ln_sums_axis_0_only, "summed over every axis except the last"),
    ("online_softmax", online_no_rescaling, "no rescaling"),
    ("online_softmax", online_rescales_sum_only, "no rescaling"),
    ("online_softmax", online_no_final_division, "divide the accumulated output"),
    ("online_softmax", online_no_scale, "off by a factor √d_k"),
    ("online_softmax", online_drops_partial_block, "the last, partial block was skipped"),
    ("online_softmax", online_no_running_max, "keep a running max"),
    ("online_softmax", online_all_keys_at_once, "multiplied 7 keys at once"),
    ("online_softmax", online_all_keys_per_batch_element, "multiplied 7 keys at once"),
]


@pytest.mark.parametrize("name", CHECKS)
def test_checker_accepts_the_reference_solution_with_one_passed_line(name, capsys):
    check, solution = CHECKS[name]
    assert check(solution) is True
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"check_{name} passed: "), lines


@pytest.mark.parametrize("name, wrong, cause", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_checker_rejects_a_typical_mistake_and_names_it(name, wrong, cause, capsys):
    check = CHECKS[name][0]
    with pytest.raises(AssertionError) as info:
        check(wrong)
    message = str(info.value)
    assert message.startswith(f"check_{name}: "), message
    assert cause in message, message
    assert "passed" not in capsys.readouterr().out


def test_every_checker_is_tested_against_at_least_two_mistakes():
    counts = {name: sum(w[0] == name for w in WRONG) for name in CHECKS}
    assert min(counts.values()) >= 2, counts
    assert {n for n in ex.__all__ if n.startswith("check_")} == {f"check_{name}" for name in CHECKS}


def test_without_raising_a_failure_prints_one_not_yet_message(capsys):
    assert ex.check_softmax(softmax_no_max, raise_on_failure=False) is False
    out = capsys.readouterr().out
    assert out.startswith("not yet: check_softmax: ") and "subtract the row max" in out
    assert "passed" not in out


@pytest.mark.parametrize("name", CHECKS)
def test_an_unwritten_stub_is_reported_as_not_written_yet(name, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError

    assert CHECKS[name][0](stub, raise_on_failure=False) is False
    out = capsys.readouterr().out
    assert out.startswith(f"not yet: check_{name}: stub is not written yet"), out


def test_an_exception_is_reported_with_the_shape_and_line_that_caused_it():
    def softmax_3d_fails(x, axis=-1):
        if x.ndim == 3:
            raise ValueError("only matrices, please")
        return softmax(x, axis)

    with pytest.raises(AssertionError) as info:
        ex.check_softmax(softmax_3d_fails)
    message = str(info.value)
    assert "raised ValueError: only matrices, please" in message
    assert "x of shape (2, 3, 5)" in message
    assert 'raise ValueError("only matrices, please")' in message
    assert isinstance(info.value.__cause__, ValueError)


def test_changing_an_input_in_place_is_reported():
    def softmax_in_place(x, axis=-1):
        x -= x.max(axis=axis, keepdims=True)
        np.exp(x, out=x)
        x /= x.sum(axis=axis, keepdims=True)
        return x

    with pytest.raises(AssertionError, match="changed argument 1 in place"):
        ex.check_softmax(softmax_in_place)


def test_forgetting_return_and_passing_a_non_function_are_reported():
    def no_return(x, axis=-1):
        softmax(x, axis)

    with pytest.raises(AssertionError, match="no `return` statement"):
        ex.check_softmax(no_return)
    with pytest.raises(AssertionError, match="pass the function itself"):
        ex.check_softmax(softmax(np.zeros(3)))


def online_einsum_per_batch_element(q, k, v, block_size):
    """A correct online softmax in another style: einsum, one batch element at a time."""
    out = np.empty(q.shape[:-1] + (v.shape[-1],))
    for idx in np.ndindex(q.shape[:-2]):
        qi, ki, vi = q[idx], k[idx], v[idx]
        m, l, acc = np.full(len(qi), -np.inf), np.zeros(len(qi)), np.zeros((len(qi), vi.shape[-1]))
        for s in range(0, len(ki), block_size):
            scores = np.einsum("ld,sd->ls", qi, ki[s:s + block_size]) / np.sqrt(qi.shape[-1])
            m_new = np.maximum(m, scores.max(axis=1))
            p = np.exp(scores - m_new[:, None])
            alpha = np.exp(m - m_new)
            l = l * alpha + p.sum(axis=1)
            acc = acc * alpha[:, None] + np.einsum("ls,sd->ld", p, vi[s:s + block_size])
            m = m_new
        out[idx] = acc / l[:, None]
    return out


def test_online_softmax_accepts_a_correct_answer_in_another_style(capsys):
    assert ex.check_online_softmax(online_einsum_per_batch_element) is True
    assert capsys.readouterr().out.startswith("check_online_softmax passed")


def test_the_online_softmax_probe_counts_the_keys_each_product_touches():
    log: list = []
    k = probe_keys(np.zeros((2, 3, 10, 4)), log)
    q = np.ones((2, 3, 5, 4))
    q @ np.swapaxes(k[..., 2:6, :], -1, -2)  # a block of 4 keys
    np.einsum("ld,sd->ls", q[0, 1], k[0, 1, :7])  # one batch element, 7 keys
    q[0, 0] @ k[0, 0].T  # one batch element, all 10 keys
    q @ np.swapaxes(k[..., ::-1, :][..., :3, :], -1, -2)  # a reversed view, 3 keys
    q @ np.swapaxes(k[..., 4:9, :].copy(), -1, -2)  # a copy of 5 keys
    assert log == [4, 7, 10, 3, 5]
    np.exp(k)
    k[..., :3, :].sum()
    assert log == [4, 7, 10, 3, 5], "only products are observed"


def _solution_lines(name: str) -> list:
    """The code lines of a reference solution worth giving away (no imports, defs or returns of a name)."""
    text = (pathlib.Path(__file__).parent / "exercise_solutions" / f"{name}.py").read_text(encoding="utf-8")
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    return [line for line in lines
            if len(line) > 12 and not line.startswith(("import", "def ", "B, ", "return acc"))]


@pytest.mark.parametrize("name, wrong, cause", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_a_hint_never_hands_over_a_line_of_the_solution(name, wrong, cause):
    with pytest.raises(AssertionError) as info:
        CHECKS[name][0](wrong)
    message = str(info.value).replace(" ", "")
    leaked = [line for line in _solution_lines(name) if line.replace(" ", "") in message]
    assert not leaked, f"the hint for {wrong.__name__} contains the solution line(s) {leaked}"


def test_depth_stats_init_hook_reaches_every_layer():
    from tinyattn import examples

    seen = []

    def double_ff(layer):
        seen.append(layer)
        layer.linear2.weight.data *= 2.0

    doubled = examples.depth_stats(True, 3, init=double_ff)
    plain = examples.depth_stats(True, 3)
    assert len({id(layer) for layer in seen}) == 3
    assert doubled["residual_rms"][0] == plain["residual_rms"][0]  # the input, before any layer
    assert np.all(doubled["residual_rms"][1:] > plain["residual_rms"][1:])
