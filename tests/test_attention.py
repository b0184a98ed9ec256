"""Scaled dot-product attention, multi-head attention and the encoder against closed-form
NumPy, finite differences and the same math composed from primitives (no PyTorch needed)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyattn as ta
import tinyattn.nn as nn
import tinyattn.nn.functional as F
from helpers import assert_close, sdpa_masks, seed_snippet, t64

RNG = np.random.default_rng(5)


def sdpa_numpy(q, k, v, mask=None, scale=None):
    """softmax(q kᵀ·scale + mask) v in NumPy; bool mask True = may attend; empty rows -> 0."""
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if mask is not None and mask.dtype == bool:
        s = np.where(mask, s, -np.inf)
    elif mask is not None:
        s = s + mask
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    e = np.exp(s - m)
    z = e.sum(-1, keepdims=True)
    p = e / np.where(z == 0, 1, z)
    return p @ v, p


def qkv(N=2, H=3, L=5, S=7, E=4, Ev=6):
    return t64(RNG, N, H, L, E), t64(RNG, N, H, S, E), t64(RNG, N, H, S, Ev)


def grads(fn, *inputs, seed=0):
    xs = [ta.tensor(x.data, requires_grad=True) for x in inputs]
    out = fn(*xs)
    out = out[0] if isinstance(out, tuple) else out
    (out * np.random.default_rng(seed).standard_normal(out.shape)).sum().backward()
    return out.data, [x.grad for x in xs]


MASKS = sdpa_masks(RNG)


# -- scaled dot-product attention -----------------------------------------------------------------

@pytest.mark.parametrize("mask_name", list(MASKS))
def test_sdpa_equals_closed_form(mask_name):
    q, k, v = qkv()
    mask = MASKS[mask_name]
    out, w = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, return_weights=True)
    ref_out, ref_w = sdpa_numpy(q.data, k.data, v.data, mask)
    assert_close(out, ref_out, rtol=1e-12, atol=1e-14)
    assert_close(w, ref_w, rtol=1e-12, atol=1e-14)


def test_sdpa_causal_is_top_left_aligned_and_scale_is_used():
    q, k, v = qkv(L=5, S=7)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
    ref, _ = sdpa_numpy(q.data, k.data, v.data, np.tril(np.ones((5, 7), bool)), scale=0.3)
    assert_close(out, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mask_name", list(MASKS))
def test_sdpa_fused_backward_equals_autograd_through_primitives(mask_name):
    q, k, v = qkv()
    mask = MASKS[mask_name]
    v1, g1 = grads(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=mask), q, k, v)
    v2, g2 = grads(lambda a, b, c: F.attention_by_primitives(a, b, c, attn_mask=mask), q, k, v)
    assert_close(v1, v2, rtol=1e-12, atol=1e-14)
    for name, a, b in zip("qkv", g1, g2):
        assert_close(a, b, rtol=1e-10, atol=1e-13, what=f"d{name}")


def test_sdpa_gradcheck_with_masks_causal_and_differentiable_float_mask():
    q, k, v = qkv(N=2, H=2, L=3, S=4, E=3, Ev=2)
    assert ta.gradcheck(F.scaled_dot_product_attention, (q, k, v))
    assert ta.gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), (q, k, v))
    bmask = RNG.random((3, 4)) < 0.6
    bmask[0] = False  # a fully masked row
    assert ta.gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, bmask), (q, k, v))
    fmask = t64(RNG, 2, 1, 3, 4)
    assert ta.gradcheck(lambda a, b, c, m: F.scaled_dot_product_attention(a, b, c, m), (q, k, v, fmask))


def test_fully_masked_rows_give_zero_weights_output_and_gradient():
    q, k, v = qkv(L=4, S=5)
    mask = np.ones((4, 5), bool)
    mask[2] = False
    out, w = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, return_weights=True)
    assert np.all(w.data[..., 2, :] == 0) and np.all(out.data[..., 2, :] == 0)
    assert np.all(np.isfinite(out.data))
    _, (dq, dk, dv) = grads(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=mask), q, k, v)
    assert np.all(dq[..., 2, :] == 0) and np.all(np.isfinite(dk)) and np.all(np.isfinite(dv))


def test_sdpa_gqa_repeats_key_value_heads():
    q, k, v = t64(RNG, 2, 6, 5, 4), t64(RNG, 2, 2, 7, 4), t64(RNG, 2, 2, 7, 3)
    got = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, enable_gqa=True)  # noqa: E731
    ref = lambda a, b, c: F.scaled_dot_product_attention(  # noqa: E731
        a, b.repeat_interleave(3, dim=1), c.repeat_interleave(3, dim=1))
    v1, g1 = grads(got, q, k, v)
    v2, g2 = grads(ref, q, k, v)
    assert_close(v1, v2, rtol=1e-12)
    for a, b in zip(g1, g2):
        assert_close(a, b, rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match="multiple"):
        F.scaled_dot_product_attention(q, t64(RNG, 2, 4, 7, 4), t64(RNG, 2, 4, 7, 3), enable_gqa=True)
    with pytest.raises(ValueError, match="enable_gqa"):
        F.scaled_dot_product_attention(q, k, v)


def test_sdpa_dropout_scales_kept_weights_and_backward_uses_the_same_mask():
    q, k, v = qkv(N=1, H=1, L=40, S=50)
    ta.manual_seed(1)
    _, w = F.scaled_dot_product_attention(q, k, v, dropout_p=0.25, return_weights=True)
    _, p = sdpa_numpy(q.data, k.data, v.data)
    kept = w.data != 0
    assert_close(w.data[kept], p[kept] / 0.75, rtol=1e-12)
    assert abs(kept.mean() - 0.75) < 0.05

    def fn(a, b, c):
        ta.manual_seed(2)
        return F.scaled_dot_product_attention(a, b, c, dropout_p=0.3)

    small = qkv(N=1, H=2, L=3, S=4, E=2, Ev=2)
    assert ta.gradcheck(fn, small)


def test_sdpa_input_errors_name_shapes():
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"key has shape \(2, 3, 7, 5\).*expected key \(..., S, 4\)"):
        F.scaled_dot_product_attention(q, t64(RNG, 2, 3, 7, 5), v)
    with pytest.raises(ValueError, match="sequence lengths"):
        F.scaled_dot_product_attention(q, k, t64(RNG, 2, 3, 6, 6))
    with pytest.raises(ValueError, match=r"attn_mask has shape \(4, 4\).*\(2, 3, 5, 7\)"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((4, 4), bool))
    with pytest.raises(TypeError, match="bool.*or float"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((5, 7), np.int64))
    with pytest.raises(ValueError, match="not both"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((5, 7), bool), is_causal=True)
    with pytest.raises(ValueError, match="dropout_p"):
        F.scaled_dot_product_attention(q, k, v, dropout_p=2.0)


# -- properties ------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5), st.integers(0, 2 ** 31 - 1), st.floats(0.05, 20))
def test_output_lies_in_the_convex_hull_of_values_and_masked_keys_get_zero_weight(L, S, E, seed, magnitude):
    rng = np.random.default_rng(seed)
    q, k, v = (ta.tensor(rng.standard_normal(s) * magnitude) for s in ((2, L, E), (2, S, E), (2, S, 3)))
    mask = rng.random((2, L, S)) < 0.6
    out, w = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, return_weights=True)
    assert np.all(w.data[~np.broadcast_to(mask, w.shape)] == 0), "a masked key got weight"
    row_sums = w.data.sum(-1)
    has_key = mask.any(-1)
    np.testing.assert_allclose(row_sums[has_key], 1.0, rtol=1e-12)
    assert np.all(row_sums[~has_key] == 0)
    lo, hi = v.data.min(1, keepdims=True), v.data.max(1, keepdims=True)
    slack = 1e-12 * magnitude
    assert np.all(out.data[has_key] >= np.broadcast_to(lo, out.shape)[has_key] - slack)
    assert np.all(out.data[has_key] <= np.broadcast_to(hi, out.shape)[has_key] + slack)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.booleans())
def test_self_attention_without_positions_is_permutation_equivariant(seed, norm_first):
    ta.manual_seed(seed % 1000)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first).double()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 6, 8))
    perm = rng.permutation(6)
    out = layer(ta.tensor(x)).data
    out_perm = layer(ta.tensor(x[:, perm])).data
    np.testing.assert_allclose(out_perm, out[:, perm], rtol=1e-10, atol=1e-12)
    mha = layer.self_attn
    a, w = mha(ta.tensor(x), ta.tensor(x), ta.tensor(x))
    a2, w2 = mha(ta.tensor(x[:, perm]), ta.tensor(x[:, perm]), ta.tensor(x[:, perm]))
    np.testing.assert_allclose(a2.data, a.data[:, perm], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w2.data, w.data[:, perm][:, :, perm], rtol=1e-10, atol=1e-12)


# -- multi-head attention --------------------------------------------------------------------------

def mha_numpy(mha, query, key, value, attn_bool_block=None):
    """Closed-form MHA for batch-first (N, L, E) inputs; attn_bool_block True = may NOT attend."""
    W_q, W_k, W_v = (w.data for w in mha.projection_weights())
    b = [np.zeros(mha.embed_dim)] * 3 if mha.in_proj_bias is None else [x.data for x in mha.projection_biases()]
    q, k, v = query @ W_q.T + b[0], key @ W_k.T + b[1], value @ W_v.T + b[2]
    N, L, E = q.shape
    H, D = mha.num_heads, mha.head_dim
    split = lambda x: x.reshape(N, -1, H, D).transpose(0, 2, 1, 3)  # noqa: E731
    mask = None if attn_bool_block is None else ~attn_bool_block
    heads, p = sdpa_numpy(split(q), split(k), split(v), mask)
    concat = heads.transpose(0, 2, 1, 3).reshape(N, L, E)
    out = concat @ mha.out_proj.weight.data.T
    if mha.out_proj.bias is not None:
        out = out + mha.out_proj.bias.data
    return out, p


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kdim,vdim", [(None, None), (5, 3)])
def test_mha_equals_closed_form(bias, kdim, vdim):
    mha = nn.MultiheadAttention(8, 2, bias=bias, kdim=kdim, vdim=vdim, batch_first=True).double()
    q, k, v = RNG.standard_normal((3, 4, 8)), RNG.standard_normal((3, 6, kdim or 8)), RNG.standard_normal((3, 6, vdim or 8))
    block = RNG.random((4, 6)) < 0.3
    out, w = mha(q, k, v, attn_mask=block, average_attn_weights=False)
    ref_out, ref_w = mha_numpy(mha, q, k, v, block)
    assert_close(out, ref_out, rtol=1e-12, atol=1e-14)
    assert_close(w, ref_w, rtol=1e-12, atol=1e-14)
    expected_keys = (["in_proj_weight"] if kdim is None else ["q_proj_weight", "k_proj_weight", "v_proj_weight"])
    expected_keys += (["in_proj_bias", "out_proj.weight", "out_proj.bias"] if bias else ["out_proj.weight"])
    assert list(mha.state_dict()) == expected_keys


def test_mha_sequence_first_and_unbatched_agree_with_batch_first():
    ta.manual_seed(0)
    bf = nn.MultiheadAttention(8, 4, batch_first=True).double()
    sf = nn.MultiheadAttention(8, 4).double()
    sf.load_state_dict(bf.state_dict())
    x, y = RNG.standard_normal((2, 5, 8)), RNG.standard_normal((2, 3, 8))
    out_bf, w_bf = bf(x, y, y)
    out_sf, w_sf = sf(x.transpose(1, 0, 2), y.transpose(1, 0, 2), y.transpose(1, 0, 2))
    assert out_sf.shape == (5, 2, 8) and w_sf.shape == (2, 5, 3)
    assert_close(out_sf.data.transpose(1, 0, 2), out_bf.data, rtol=1e-12)
    assert_close(w_sf, w_bf.data, rtol=1e-12)
    out_u, w_u = sf(x[0], y[0], y[0], average_attn_weights=False)
    assert out_u.shape == (5, 8) and w_u.shape == (4, 5, 3)
    assert_close(out_u, out_bf.data[0], rtol=1e-12)
    assert_close(w_u.data.mean(0), w_bf.data[0], rtol=1e-12)


def test_mha_mask_kinds_polarities_and_3d_masks():
    ta.manual_seed(1)
    mha = nn.MultiheadAttention(6, 3, batch_first=True).double()
    N, L, S, H = 2, 4, 5, 3
    x, kv = RNG.standard_normal((N, L, 6)), RNG.standard_normal((N, S, 6))
    block = RNG.random((N * H, L, S)) < 0.3
    kpm = np.zeros((N, S), bool)
    kpm[1, 3:] = True
    out_bool, w_bool = mha(x, kv, kv, attn_mask=block, key_padding_mask=kpm, average_attn_weights=False)
    float_block = np.where(block, -np.inf, 0.0)
    float_kpm = np.where(kpm, -np.inf, 0.0)
    out_float, w_float = mha(x, kv, kv, attn_mask=float_block, key_padding_mask=float_kpm, average_attn_weights=False)
    assert_close(out_float, out_bool.data, rtol=1e-12)
    w = w_bool.data
    allowed = ~block.reshape(N, H, L, S) & ~kpm[:, None, None, :]  # batch-major: index n·H + h
    assert np.all(w[~allowed] == 0) and np.all(w[allowed] > 0)
    no_weights, none = mha(x, kv, kv, attn_mask=block, key_padding_mask=kpm, need_weights=False)
    assert none is None
    assert_close(no_weights, out_bool.data, rtol=1e-12)


def test_mha_fully_masked_rows_are_zero_in_both_paths_never_nan():
    mha = nn.MultiheadAttention(4, 2, batch_first=True).double()
    q = ta.tensor(RNG.standard_normal((2, 3, 4)), requires_grad=True)
    kv = ta.tensor(RNG.standard_normal((2, 5, 4)), requires_grad=True)
    block = np.zeros((3, 5), bool)
    block[1] = True  # query 1 may attend nothing
    for need_weights in (True, False):
        q.grad = kv.grad = None
        out, w = mha(q, kv, kv, attn_mask=block, need_weights=need_weights)
        bias = mha.out_proj.bias.data
        assert_close(out.data[:, 1], np.broadcast_to(bias, (2, 4)), rtol=0, atol=0)
        if need_weights:
            assert np.all(w.data[:, 1] == 0)
        out.sum().backward()
        assert np.all(q.grad[:, 1] == 0) and np.all(np.isfinite(kv.grad))


def test_mha_dropout_only_in_training():
    ta.manual_seed(2)
    mha = nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True).double()
    x = RNG.standard_normal((2, 6, 8))
    mha.eval()
    ref = nn.MultiheadAttention(8, 2, dropout=0.0, batch_first=True).double()
    ref.load_state_dict(mha.state_dict())
    assert_close(mha(x, x, x)[0], ref(x, x, x)[0].data, rtol=1e-12)
    mha.train()
    _, w = mha(x, x, x, average_attn_weights=False)
    assert np.any(w.data == 0) and np.any(w.data.sum(-1) > 1.0 + 1e-9)


def test_mha_gradcheck_both_paths():
    mha = nn.MultiheadAttention(4, 2, batch_first=True).double()
    q, kv = t64(RNG, 2, 3, 4), t64(RNG, 2, 5, 4)
    block = RNG.random((3, 5)) < 0.3
    assert ta.gradcheck(lambda a, b: mha(a, b, b, attn_mask=block)[0], (q, kv))
    assert ta.gradcheck(lambda a, b: mha(a, b, b, attn_mask=block, need_weights=False)[0], (q, kv))
    assert ta.gradcheck(lambda a, b: mha(a, b, b, average_attn_weights=False)[1], (q, kv))


def test_mha_parameter_gradients_gradcheck():
    mha = nn.MultiheadAttention(4, 2, batch_first=True).double()
    x = t64(RNG, 2, 3, 4, requires_grad=False)
    for name, p in mha.named_parameters():
        # finite differences on the parameter vs the gradient autograd accumulates into p.grad
        mha.zero_grad()
        out = mha(x, x, x)[0]
        w = np.random.default_rng(0).standard_normal(out.shape)
        (out * w).sum().backward()
        numeric = np.zeros_like(p.data)
        flat, eps = p.data.reshape(-1), 1e-6
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + eps
            plus = (mha(x, x, x)[0].data * w).sum()
            flat[j] = orig - eps
            minus = (mha(x, x, x)[0].data * w).sum()
            flat[j] = orig
            numeric.reshape(-1)[j] = (plus - minus) / (2 * eps)
        assert_close(p.grad, numeric, rtol=1e-5, atol=1e-7, what=name)


def test_mha_input_errors():
    with pytest.raises(ValueError, match="embed_dim 10 is not divisible by num_heads 3"):
        nn.MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="add_bias_kv"):
        nn.MultiheadAttention(8, 2, add_bias_kv=True)
    with pytest.raises(ValueError, match="add_zero_attn"):
        nn.MultiheadAttention(8, 2, add_zero_attn=True)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = ta.randn(2, 4, 8)
    with pytest.raises(ValueError, match=r"key has shape \(2, 4, 6\).*expected \(..., 8\)"):
        mha(x, ta.randn(2, 4, 6), x)
    with pytest.raises(ValueError, match="sequence lengths and batch sizes must match"):
        mha(x, ta.randn(2, 5, 8), ta.randn(2, 6, 8))
    with pytest.raises(ValueError, match=r"attn_mask has shape \(3, 3\); expected \(L, S\) = \(4, 4\)"):
        mha(x, x, x, attn_mask=np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match=r"key_padding_mask has shape \(2, 3\); expected \(N, S\) = \(2, 4\)"):
        mha(x, x, x, key_padding_mask=np.zeros((2, 3), bool))
    with pytest.raises(TypeError, match="key_padding_mask must be bool"):
        mha(x, x, x, key_padding_mask=np.zeros((2, 4), np.int32))
    with pytest.raises(ValueError, match="is_causal"):
        mha(x, x, x, is_causal=True)


# -- encoder ---------------------------------------------------------------------------------------

def encoder_layer_numpy(layer, x, kpm=None):
    """Post-norm or pre-norm encoder layer in NumPy on (N, S, E)."""
    def ln(z, m):
        mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
        return (z - mu) / np.sqrt(var + m.eps) * m.weight.data + m.bias.data

    def sa(z):
        block = None if kpm is None else np.broadcast_to(kpm[:, None, None, :], (z.shape[0], 1, z.shape[1], z.shape[1]))
        out, _ = mha_numpy_kpm(layer.self_attn, z, block)
        return out

    def ff(z):
        h = np.maximum(z @ layer.linear1.weight.data.T + layer.linear1.bias.data, 0)
        return h @ layer.linear2.weight.data.T + layer.linear2.bias.data

    if layer.norm_first:
        x = x + sa(ln(x, layer.norm1))
        return x + ff(ln(x, layer.norm2))
    x = ln(x + sa(x), layer.norm1)
    return ln(x + ff(x), layer.norm2)


def mha_numpy_kpm(mha, z, block):
    W_q, W_k, W_v = (w.data for w in mha.projection_weights())
    b_q, b_k, b_v = (x.data for x in mha.projection_biases())
    N, S, E = z.shape
    H, D = mha.num_heads, mha.head_dim
    split = lambda t: t.reshape(N, S, H, D).transpose(0, 2, 1, 3)  # noqa: E731
    heads, p = sdpa_numpy(split(z @ W_q.T + b_q), split(z @ W_k.T + b_k), split(z @ W_v.T + b_v),
                          None if block is None else ~block)
    out = heads.transpose(0, 2, 1, 3).reshape(N, S, E) @ mha.out_proj.weight.data.T + mha.out_proj.bias.data
    return out, p


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_equals_closed_form_and_gradchecks(norm_first):
    layer = nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, batch_first=True, norm_first=norm_first).double()
    x = RNG.standard_normal((2, 5, 8))
    kpm = np.zeros((2, 5), bool)
    kpm[0, 3:] = True
    out = layer(x, src_key_padding_mask=kpm)
    assert_close(out, encoder_layer_numpy(layer, x, kpm), rtol=1e-11, atol=1e-12)
    small = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.0, batch_first=True, norm_first=norm_first,
                                       activation="gelu").double()
    assert ta.gradcheck(lambda t: small(t, src_key_padding_mask=kpm[:, :3]), t64(RNG, 2, 3, 4))


def test_encoder_layer_fully_padded_sequence_stays_finite():
    layer = nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, batch_first=True).double()
    x = ta.tensor(RNG.standard_normal((2, 4, 8)), requires_grad=True)
    kpm = np.zeros((2, 4), bool)
    kpm[1] = True  # every key of sequence 1 is padding
    out = layer(x, src_key_padding_mask=kpm)
    out.sum().backward()
    assert np.all(np.isfinite(out.data)) and np.all(np.isfinite(x.grad))


def test_encoder_stacks_deep_copies_and_applies_final_norm():
    ta.manual_seed(3)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True).double()
    enc = nn.TransformerEncoder(layer, num_layers=3, norm=nn.LayerNorm(8).double())
    sd = enc.state_dict()
    assert len(sd) == 3 * 12 + 2 and "layers.2.norm2.bias" in sd and "norm.weight" in sd
    for key in ("self_attn.in_proj_weight", "linear1.weight"):
        assert np.array_equal(sd[f"layers.0.{key}"], sd[f"layers.2.{key}"]), "copies start identical"
    assert enc.layers[0].linear1.weight is not enc.layers[1].linear1.weight
    x = RNG.standard_normal((2, 5, 8))
    y = ta.tensor(x)
    for lyr in enc.layers:
        y = lyr(y)
    assert_close(enc(x), enc.norm(y).data, rtol=1e-12)


def test_encoder_detects_a_causal_mask_and_rejects_unknown_activation():
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0).double()
    enc = nn.TransformerEncoder(layer, 2)
    x = RNG.standard_normal((5, 2, 8))
    causal = nn.causal_mask(5)
    float_causal = np.where(causal, -np.inf, 0.0)
    assert_close(enc(x, mask=causal), enc(x, mask=float_causal).data, rtol=1e-12)
    first = enc(x, mask=causal).data[0]
    x2 = x.copy()
    x2[1:] = RNG.standard_normal((4, 2, 8))  # later tokens cannot change position 0
    assert_close(enc(x2, mask=causal).data[0], first, rtol=1e-12)
    with pytest.raises(ValueError, match="activation should be 'relu' or 'gelu'.*'swish'"):
        nn.TransformerEncoderLayer(8, 2, activation="swish")


def test_record_attention_returns_every_layer_and_head():
    ta.manual_seed(4)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 3).double()
    x = RNG.standard_normal((2, 5, 8))
    plain = enc(x).data
    with nn.record_attention(enc) as rec:
        recorded_out = enc(x).data
    assert_close(recorded_out, plain, rtol=0, atol=0)
    assert rec.names == ["layers.0.self_attn", "layers.1.self_attn", "layers.2.self_attn"]
    assert rec.stack().shape == (3, 2, 2, 5, 5)
    _, w0 = enc.layers[0].self_attn(x, x, x, average_attn_weights=False)
    assert_close(rec.weights[0], w0.data, rtol=1e-12)
    assert_close(rec.stack().sum(-1), np.ones((3, 2, 2, 5)), rtol=1e-12)
    outside = nn.MultiheadAttention(8, 2, batch_first=True).double()
    with nn.record_attention(enc) as rec2:
        outside(x, x, x)
    assert rec2.weights == []
    enc(x)
    assert len(rec.weights) == 3, "recording stops when the block ends"


# -- positional encodings and the seed's snippet ----------------------------------------------------

def test_sinusoidal_encoding_formula_and_relative_position_property():
    pe = nn.sinusoidal_table(50, 16, dtype=np.float64)
    pos, i = 7, 3
    assert pe[pos, 2 * i] == pytest.approx(np.sin(pos / 10000 ** (2 * i / 16)), rel=1e-12)
    assert pe[pos, 2 * i + 1] == pytest.approx(np.cos(pos / 10000 ** (2 * i / 16)), rel=1e-12)
    gram = pe @ pe.T
    for offset in (0, 1, 5):
        diag = np.diagonal(gram, offset)
        np.testing.assert_allclose(diag, diag[0], rtol=1e-9)  # depends only on the offset
    odd = nn.sinusoidal_table(4, 5)
    assert odd.shape == (4, 5) and odd.dtype == np.float32


def test_positional_encoding_modules_add_to_inputs():
    pe = nn.PositionalEncoding(8, max_len=20)
    x = RNG.standard_normal((2, 6, 8))
    assert_close(pe(x), x + nn.sinusoidal_table(20, 8, np.float64)[:6], rtol=1e-12)
    seq_first = nn.PositionalEncoding(8, max_len=20, batch_first=False)
    assert_close(seq_first(x.transpose(1, 0, 2)).data.transpose(1, 0, 2), pe(x).data, rtol=1e-12)
    assert pe.state_dict() == {}
    assert pe(x.astype(np.float32)).dtype == np.float32
    assert_close(pe.double()(x), x + nn.sinusoidal_table(20, 8, np.float64)[:6], rtol=1e-15)
    with pytest.raises(ValueError, match="max_len 20"):
        pe(RNG.standard_normal((1, 21, 8)))
    learned = nn.LearnedPositionalEncoding(8, max_len=10).double()
    assert_close(learned(x), x + learned.embedding.weight.data[:6], rtol=1e-12)
    assert list(learned.state_dict()) == ["embedding.weight"]


def test_the_seed_snippet_runs_unchanged_on_tinyattn():
    TransformerEncoder = seed_snippet("tinyattn")
    ta.manual_seed(0)
    model = TransformerEncoder(d_model=16, nhead=4, num_layers=2, dim_feedforward=32, dropout=0.0)
    src = ta.randn(7, 3, 16)  # (S, N, E): sequence-first, as in PyTorch by default
    kpm = np.zeros((3, 7), bool)
    kpm[2, 5:] = True
    out = model(src, src_mask=nn.causal_mask(7), src_key_padding_mask=kpm)
    assert out.shape == (7, 3, 16) and out.dtype == np.float32 and np.all(np.isfinite(out.data))
    assert list(model.state_dict())[0] == "transformer_encoder.layers.0.self_attn.in_proj_weight"
