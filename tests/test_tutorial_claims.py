"""The numeric claims of notebooks 03-05, checked against closed-form NumPy written here (and
PyTorch where a notebook makes a claim about it), so a regression in the library fails a test
rather than silently changing what a notebook teaches."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinyattn as ta
import tinyattn.nn.functional as F
from helpers import assert_close, import_torch, seed_snippet
from tinyattn import examples


def np_softmax(s: np.ndarray) -> np.ndarray:
    """Row softmax in plain NumPy; a row of all −inf gives zeros (tinyattn's convention)."""
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isinf(m), 0.0, m))
    total = e.sum(axis=-1, keepdims=True)
    return e / np.where(total == 0, 1.0, total)


def np_attention(q, k, v, allowed=None, scale=None):
    """softmax(q kᵀ · scale, −inf where not allowed) v, and the weights."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = scale * q @ np.swapaxes(k, -1, -2)
    if allowed is not None:
        s = np.where(allowed, s, -np.inf)
    p = np_softmax(s)
    return p @ v, p


# -- notebook 03: scaled dot-product attention ---------------------------------------------------

@pytest.mark.parametrize("d_k", [4, 64, 1024])
def test_score_variance_is_d_k_and_one_after_scaling(d_k):
    rng = np.random.default_rng(d_k)
    q = rng.standard_normal((512, 1, d_k))
    k = rng.standard_normal((512, 16, d_k))
    v = rng.standard_normal((512, 16, 3))
    raw = (ta.tensor(q) @ ta.tensor(k).transpose(-2, -1)).data  # (B, 1, 16)
    assert abs(raw.var() / d_k - 1) < 0.07, f"Var(q·k) = {raw.var():.1f}, expected about {d_k}"
    assert abs((raw / math.sqrt(d_k)).var() - 1) < 0.07
    out, p = F.scaled_dot_product_attention(ta.tensor(q), ta.tensor(k), ta.tensor(v), return_weights=True)
    out_np, p_np = np_attention(q, k, v)  # default scale 1/√d_k
    assert_close(p, p_np, rtol=1e-9, atol=1e-12, what="weights with the default scale")
    assert_close(out, out_np, rtol=1e-9, atol=1e-12, what="output with the default scale")


def test_unscaled_softmax_saturates_and_its_jacobian_vanishes():
    rng = np.random.default_rng(1)
    d_k = 1024
    q, k = rng.standard_normal((256, 1, d_k)), rng.standard_normal((256, 16, d_k))
    v = rng.standard_normal((256, 16, 2))
    _, p_raw = F.scaled_dot_product_attention(ta.tensor(q), ta.tensor(k), ta.tensor(v), scale=1.0,
                                              return_weights=True)
    _, p_scaled = F.scaled_dot_product_attention(ta.tensor(q), ta.tensor(k), ta.tensor(v),
                                                 return_weights=True)
    assert_close(p_raw, np_attention(q, k, v, scale=1.0)[1], rtol=1e-9, atol=1e-12, what="unscaled")
    assert p_raw.data.max(-1).mean() > 0.9 and p_scaled.data.max(-1).mean() < 0.35

    def jacobian_norm(p):
        p = p[:, 0]  # (B, S)
        return np.linalg.norm(np.eye(16) * p[:, :, None] - p[:, :, None] * p[:, None, :], axis=(1, 2)).mean()

    assert jacobian_norm(p_raw.data) < jacobian_norm(p_scaled.data) / 4


def test_scaling_experiment_numbers_match_theory():
    s = examples.scaling_stats()
    assert np.all(np.abs(s["var_unscaled"] / s["d_k"] - 1) < 0.1)
    assert np.all(np.abs(s["var_scaled"] - 1) < 0.1)
    assert s["max_weight_unscaled"][-1] > 0.9 and s["max_weight_scaled"].max() < 0.35
    assert np.all(np.diff(s["max_weight_unscaled"]) > 0)
    assert s["jacobian_unscaled"][-1] < s["jacobian_scaled"][-1] / 4
    assert np.all(np.abs(s["jacobian_scaled"] / s["jacobian_scaled"][-1] - 1) < 0.1)


def test_softmax_jacobian_is_diag_p_minus_p_pT():
    s = np.random.default_rng(2).standard_normal(9)
    p = np_softmax(s)
    closed = np.diag(p) - np.outer(p, p)
    rows = []
    for i in range(9):
        x = ta.tensor(s, requires_grad=True)
        F.softmax(x, dim=-1).backward(np.eye(9)[i])
        rows.append(x.grad)
    assert_close(np.array(rows), closed, rtol=1e-10, atol=1e-14, what="autograd Jacobian")
    eps = 1e-6
    fd = np.stack([(np_softmax(s + eps * e) - np_softmax(s - eps * e)) / (2 * eps)
                   for e in np.eye(9)], axis=1)
    assert_close(fd, closed, rtol=1e-6, atol=1e-9, what="finite differences")
    assert_close(closed.sum(axis=1), np.zeros(9), atol=1e-15, what="J 1 = 0")


def test_padding_is_invisible_to_the_real_tokens():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 8))
    is_real = np.ones((2, 6), dtype=bool)
    is_real[1, 3:] = False
    out, p = F.scaled_dot_product_attention(ta.tensor(x), ta.tensor(x), ta.tensor(x),
                                            attn_mask=is_real[:, None, :], return_weights=True)
    assert np.all(p.data[1][:, 3:] == 0)
    alone, _ = np_attention(x[1, :3], x[1, :3], x[1, :3])
    assert_close(out.data[1, :3], alone, rtol=1e-10, atol=1e-12, what="padded vs alone")
    causal = F.scaled_dot_product_attention(ta.tensor(x), ta.tensor(x), ta.tensor(x), is_causal=True)
    assert_close(causal, np_attention(x, x, x, np.tril(np.ones((6, 6), dtype=bool)))[0], rtol=1e-10,
                 atol=1e-12, what="is_causal = lower-triangular mask")


def left_padded_causal_mask():
    real = np.array([False, False, False, True, True, True])
    return np.tril(np.ones((6, 6), dtype=bool)) & real[None, :]  # rows 0-2 have no key


def test_fully_masked_row_is_nan_in_plain_math_and_zero_in_tinyattn():
    allowed = left_padded_causal_mask()
    x = np.random.default_rng(4).standard_normal((6, 4))
    with np.errstate(invalid="ignore"):
        s = np.where(allowed, x @ x.T, -np.inf)
        naive = np.exp(s - s.max(-1, keepdims=True))
        naive /= naive.sum(-1, keepdims=True)
    assert np.isnan(naive[:3]).all() and not np.isnan(naive[3:]).any()

    q = ta.tensor(x, requires_grad=True)
    out, p = F.scaled_dot_product_attention(q, ta.tensor(x), ta.tensor(x), attn_mask=allowed,
                                            return_weights=True)
    out.backward(np.ones((6, 4)))
    assert np.all(p.data[:3] == 0) and np.all(out.data[:3] == 0) and np.all(q.grad[:3] == 0)
    assert_close(out.data[3:], np_attention(x, x, x, allowed)[0][3:], rtol=1e-10, atol=1e-12,
                 what="real rows")

    mha = ta.nn.MultiheadAttention(4, 2, bias=False).double()
    for need_weights in (True, False):
        o, _ = mha(ta.tensor(x), ta.tensor(x), ta.tensor(x), attn_mask=~allowed, need_weights=need_weights)
        assert np.all(o.data[:3] == 0) and not np.isnan(o.data).any()


def test_pytorch_fully_masked_row_sdpa_zeros_mha_nan():
    torch = import_torch()
    allowed = left_padded_causal_mask()
    x = torch.tensor(np.random.default_rng(4).standard_normal((1, 6, 4)))
    sdpa = torch.nn.functional.scaled_dot_product_attention(x, x, x, attn_mask=torch.tensor(allowed))
    assert torch.all(sdpa[0, :3] == 0)
    mha = torch.nn.MultiheadAttention(4, 1, batch_first=True).double()
    with_weights, w = mha(x, x, x, attn_mask=torch.tensor(~allowed))
    without, _ = mha(x, x, x, attn_mask=torch.tensor(~allowed), need_weights=False)
    assert torch.isnan(with_weights[0, :3]).all() and torch.isnan(w[0, :3]).all()
    assert not torch.isnan(with_weights[0, 3:]).any() and not torch.isnan(without).any()


def test_attention_backward_equals_the_hand_derived_formulas():
    rng = np.random.default_rng(5)
    N, H, L, S, E, Ev = 2, 3, 4, 6, 5, 3
    Q, K = rng.standard_normal((N, H, L, E)), rng.standard_normal((N, H, S, E))
    V = rng.standard_normal((N, H, S, Ev))
    dO = rng.standard_normal((N, H, L, Ev))
    allowed = rng.random((L, S)) < 0.7
    allowed[0] = False
    allowed[1:, 0] = True
    c = 1 / math.sqrt(E)
    O, P = np_attention(Q, K, V, allowed)
    dV = np.swapaxes(P, -1, -2) @ dO
    dP = dO @ np.swapaxes(V, -1, -2)
    dS = P * (dP - (dP * P).sum(-1, keepdims=True))
    dQ, dK = c * dS @ K, c * np.swapaxes(dS, -1, -2) @ Q
    assert_close((dP * P).sum(-1), (dO * O).sum(-1), rtol=1e-10, atol=1e-12, what="rowsum identity")
    for name, attention in (
        ("fused", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)),
        ("primitives", lambda q, k, v: F.attention_by_primitives(q, k, v, attn_mask=allowed)[0]),
    ):
        q, k, v = (ta.tensor(a, requires_grad=True) for a in (Q, K, V))
        out = attention(q, k, v)
        out.backward(dO)
        assert_close(out, O, rtol=1e-10, atol=1e-12, what=f"{name} output")
        for got, want, what in ((q.grad, dQ, "dQ"), (k.grad, dK, "dK"), (v.grad, dV, "dV")):
            assert_close(got, want, rtol=1e-9, atol=1e-12, what=f"{name} {what}")
        assert np.all(q.grad[:, :, 0] == 0)


# -- notebook 04: multi-head attention -----------------------------------------------------------

def mha_params(mha):
    """(in_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias) as arrays."""
    return mha.in_proj_weight.data, mha.in_proj_bias.data, mha.out_proj.weight.data, mha.out_proj.bias.data


def np_mha(x, in_w, in_b, out_w, out_b, H, allowed=None, output_matrix=None):
    """Multi-head self-attention in NumPy, x (L, E): split, attend, concat, project."""
    L, E = x.shape
    D = E // H
    q, k, v = (x @ in_w[i * E:(i + 1) * E].T + in_b[i * E:(i + 1) * E] for i in range(3))
    heads, weights = [], []
    for h in range(H):
        cols = slice(h * D, (h + 1) * D)
        o, p = np_attention(q[:, cols], k[:, cols], v[:, cols], allowed)
        heads.append(o)
        weights.append(p)
    concat = np.concatenate(heads, axis=1)  # (L, E)
    if output_matrix is None:
        return concat @ out_w.T + out_b, np.stack(weights)
    return concat @ output_matrix.T, np.stack(weights)


@pytest.mark.parametrize("E, H", [(8, 1), (8, 4), (32, 8), (512, 8)])
def test_mha_has_4E2_plus_4E_parameters_for_every_head_count(E, H):
    assert ta.nn.MultiheadAttention(E, H).num_parameters() == 4 * E * E + 4 * E


def test_mha_output_is_concat_heads_times_W_o_and_not_the_seeds_W_v():
    rng = np.random.default_rng(6)
    E, H, L = 12, 3, 5
    mha = ta.nn.MultiheadAttention(E, H, batch_first=True).double()
    mha.in_proj_bias.data[:] = rng.standard_normal(3 * E)
    x = rng.standard_normal((L, E))
    out, w = mha(ta.tensor(x[None]), ta.tensor(x[None]), ta.tensor(x[None]), average_attn_weights=False)
    params = mha_params(mha)
    want, want_w = np_mha(x, *params, H)
    assert_close(out.data[0], want, rtol=1e-10, atol=1e-12, what="module vs concat W_oᵀ + b_o")
    assert_close(w.data[0], want_w, rtol=1e-10, atol=1e-12, what="per-head weights")
    seed, _ = np_mha(x, *params, H, output_matrix=mha.in_proj_weight.data[2 * E:])
    assert np.abs(seed - out.data[0]).max() > 0.1


def test_mha_bool_mask_true_means_blocked_and_sdpa_true_means_allowed():
    rng = np.random.default_rng(7)
    E, H, L = 8, 2, 6
    mha = ta.nn.MultiheadAttention(E, H, batch_first=True).double()
    x = rng.standard_normal((L, E))
    xt = ta.tensor(x[None])
    params = mha_params(mha)
    blocked = ta.nn.causal_mask(L)
    assert np.array_equal(blocked, ~np.tril(np.ones((L, L), dtype=bool)))
    want, _ = np_mha(x, *params, H, allowed=~blocked)
    for mask in (blocked, np.where(blocked, -np.inf, 0.0)):
        assert_close(mha(xt, xt, xt, attn_mask=mask)[0].data[0], want, rtol=1e-10, atol=1e-12,
                     what="MHA mask")
    pad = np.zeros((1, L), dtype=bool)
    pad[0, 4:] = True
    want_pad, _ = np_mha(x, *params, H, allowed=~pad)
    assert_close(mha(xt, xt, xt, key_padding_mask=pad)[0].data[0], want_pad, rtol=1e-10, atol=1e-12,
                 what="key_padding_mask")
    wrong, _ = mha(xt, xt, xt, attn_mask=~blocked)
    assert np.abs(wrong.data[0] - want).max() > 0.1


def test_sinusoidal_shift_is_a_rotation_and_dot_products_depend_on_distance():
    d, P = 24, 40
    pe = ta.nn.sinusoidal_table(P, d, dtype=np.float64)
    omega = 10000.0 ** (-np.arange(0, d, 2) / d)
    pos = np.arange(P)[:, None]
    assert_close(pe[:, 0::2], np.sin(pos * omega), rtol=1e-12, atol=1e-12, what="sin columns")
    assert_close(pe[:, 1::2], np.cos(pos * omega), rtol=1e-12, atol=1e-12, what="cos columns")
    for k in (-1, 1, 3):
        for i in range(d // 2):
            ck, sk = math.cos(k * omega[i]), math.sin(k * omega[i])
            rotated = pe[5:30, 2 * i:2 * i + 2] @ np.array([[ck, -sk], [sk, ck]])
            assert_close(rotated, pe[5 + k:30 + k, 2 * i:2 * i + 2], rtol=1e-9, atol=1e-12, what="rotation")
        dots = np.einsum("pd,pd->p", pe[10:30], pe[10 + k:30 + k])
        assert_close(dots, np.full(20, np.cos(k * omega).sum()), rtol=1e-9, atol=1e-12, what="PE_p·PE_p+k")


def test_mha_loads_into_pytorch_with_the_default_sequence_first_layout():
    torch = import_torch()
    rng = np.random.default_rng(8)
    E, H, L, N = 16, 4, 5, 2
    mha = ta.nn.MultiheadAttention(E, H).double()
    x = rng.standard_normal((L, N, E))
    t_mha = torch.nn.MultiheadAttention(E, H).double()
    t_mha.load_state_dict({k: torch.tensor(v) for k, v in mha.state_dict().items()})
    t_out, t_w = t_mha(*(torch.tensor(x),) * 3, average_attn_weights=False)
    out, w = mha(*(ta.tensor(x),) * 3, average_attn_weights=False)
    assert_close(out, t_out.detach().numpy(), rtol=1e-10, atol=1e-12, what="output")
    assert_close(w, t_w.detach().numpy(), rtol=1e-10, atol=1e-12, what="per-head weights")


# -- notebook 05: the encoder layer --------------------------------------------------------------

def test_residual_keeps_the_gradient_a_plain_tanh_stack_loses_it():
    rng = np.random.default_rng(9)
    depth, width = 30, 16
    bound = 1 / math.sqrt(width)  # PyTorch's default Linear init: U(−1/√fan_in, 1/√fan_in)
    Ws = rng.uniform(-bound, bound, (depth, width, width))
    bs = rng.uniform(-bound, bound, (depth, width))
    x0 = rng.standard_normal((8, width))
    for residual in (False, True):
        hs, h = [], x0
        for W, b in zip(Ws, bs):
            hs.append(h)
            f = np.tanh(h @ W.T + b)
            h = h + f if residual else f
        g = 2 * h  # d sum(h²) / dh, then backpropagate by hand
        grads = []
        for W, b, h_in in zip(Ws[::-1], bs[::-1], hs[::-1]):
            gf = g * (1 - np.tanh(h_in @ W.T + b) ** 2) @ W
            g = g + gf if residual else gf
            grads.append(np.linalg.norm(g))
        ratio = grads[-1] / grads[0]  # ‖∂L/∂x_0‖ / ‖∂L/∂x_top‖
        layers = [ta.nn.Linear(width, width).double() for _ in range(depth)]
        for lin, W, b in zip(layers, Ws, bs):
            lin.load_state_dict({"weight": W, "bias": b})
        xt = ta.tensor(x0, requires_grad=True)
        h = xt
        for lin in layers:
            h = h + lin(h).tanh() if residual else lin(h).tanh()
        (h ** 2).sum().backward()
        assert_close(np.linalg.norm(xt.grad), grads[-1], rtol=1e-9, atol=0, what="autograd vs by hand")
        assert (ratio > 1) if residual else (ratio < 1e-5), f"residual={residual}: ratio {ratio:.2e}"


def test_layer_norm_backward_is_the_derived_formula():
    rng = np.random.default_rng(10)
    n, eps = 8, 1e-5
    x, g = rng.standard_normal((3, 5, n)) * 2 + 1, rng.standard_normal((3, 5, n))
    gamma, beta = rng.standard_normal(n), rng.standard_normal(n)
    mu = x.mean(-1, keepdims=True)
    sig = np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    xhat = (x - mu) / sig
    gh = g * gamma
    dx = (gh - gh.mean(-1, keepdims=True) - xhat * (gh * xhat).mean(-1, keepdims=True)) / sig
    xt, wt, bt = (ta.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    y = F.layer_norm(xt, (n,), wt, bt, eps)
    y.backward(g)
    assert_close(y, xhat * gamma + beta, rtol=1e-10, atol=1e-12, what="forward")
    assert_close(xt.grad, dx, rtol=1e-9, atol=1e-12, what="dx")
    assert_close(wt.grad, (g * xhat).sum((0, 1)), rtol=1e-10, atol=1e-12, what="dγ")
    assert_close(bt.grad, g.sum((0, 1)), rtol=1e-10, atol=1e-12, what="dβ")
    J = (np.eye(n) - 1 / n - np.outer(xhat[0, 0], xhat[0, 0]) / n) / sig[0, 0, 0]
    assert_close(J @ xhat[0, 0], xhat[0, 0] * eps / sig[0, 0, 0] ** 3, rtol=1e-6, atol=1e-15, what="J x̂")
    assert ta.gradcheck(lambda a, w, b: F.layer_norm(a, (n,), w, b), (
        ta.tensor(x[:1, :2], requires_grad=True), ta.tensor(gamma, requires_grad=True),
        ta.tensor(beta, requires_grad=True)))


def test_feed_forward_is_position_wise_and_attention_mixes_tokens():
    rng = np.random.default_rng(11)
    E, F_ = 8, 32
    layer = ta.nn.TransformerEncoderLayer(E, 2, F_, dropout=0.0, batch_first=True).double()
    x = rng.standard_normal((1, 5, E))
    W1, b1 = layer.linear1.weight.data, layer.linear1.bias.data
    W2, b2 = layer.linear2.weight.data, layer.linear2.bias.data
    assert_close(layer._ff_block(ta.tensor(x)), np.maximum(x @ W1.T + b1, 0) @ W2.T + b2, rtol=1e-10,
                 atol=1e-12, what="FF = relu(x W1ᵀ + b1) W2ᵀ + b2")
    ff_params = sum(p.numel() for m in (layer.linear1, layer.linear2) for p in m.parameters())
    assert ff_params == 2 * E * F_ + F_ + E
    for block, mixes in ((layer._ff_block, False), (lambda t: layer.self_attn(t, t, t)[0], True)):
        xt = ta.tensor(x, requires_grad=True)
        grad_out = np.zeros(x.shape)
        grad_out[0, 2] = 1.0  # only token 2's output
        block(xt).backward(grad_out)
        others = np.abs(np.delete(xt.grad[0], 2, axis=0)).max()
        assert (others > 0) if mixes else (others == 0)


def test_post_and_pre_norm_match_their_formulas():
    rng = np.random.default_rng(12)
    x = ta.tensor(rng.standard_normal((2, 5, 8)))
    for norm_first in (False, True):
        lay = ta.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                            norm_first=norm_first).double()

        def sa(t):
            return lay.self_attn(t, t, t, need_weights=False)[0]

        if norm_first:
            h = x + sa(lay.norm1(x))
            h = h + lay._ff_block(lay.norm2(h))
        else:
            h = lay.norm1(x + sa(x))
            h = lay.norm2(h + lay._ff_block(h))
        assert_close(lay(x), h.data, rtol=1e-12, atol=1e-12, what=f"norm_first={norm_first}")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prenorm_vs_postnorm_gradient_claims(seed):
    post, pre = examples.depth_stats(False, 24, seed=seed), examples.depth_stats(True, 24, seed=seed)
    assert np.abs(post["residual_rms"][1:] - 1).max() < 1e-4
    assert pre["residual_rms"][-1] > 1.5 * pre["residual_rms"][0]
    assert pre["param_grad"][0] > 1.5 * pre["param_grad"][-1]
    last = {nf: [examples.depth_stats(nf, n, seed=seed)["param_grad"][-1] for n in (2, 32)]
            for nf in (False, True)}
    assert last[False][1] > last[False][0], f"post-norm last-layer gradient shrank: {last[False]}"
    assert last[True][1] < 0.7 * last[True][0], f"pre-norm last-layer gradient: {last[True]}"


def test_stacked_layer_gradients_match_pytorch():
    torch = import_torch()
    rng = np.random.default_rng(13)
    for norm_first in (False, True):
        layers = [ta.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                                norm_first=norm_first).double() for _ in range(3)]
        t_layers = [torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                                     norm_first=norm_first).double() for _ in range(3)]
        for lay, t_lay in zip(layers, t_layers):
            t_lay.load_state_dict({k: torch.tensor(v) for k, v in lay.state_dict().items()})
        x, y = rng.standard_normal((2, 5, 8)), rng.standard_normal((2, 5, 8))
        h, th = ta.tensor(x), torch.tensor(x)
        for lay, t_lay in zip(layers, t_layers):
            h, th = lay(h), t_lay(th)
        ((h - ta.tensor(y)) ** 2).mean().backward()
        ((th - torch.tensor(y)) ** 2).mean().backward()
        for lay, t_lay in zip(layers, t_layers):
            t_grads = dict(t_lay.named_parameters())
            for name, p in lay.named_parameters():
                assert_close(p.grad, t_grads[name].grad.numpy(), rtol=1e-8, atol=1e-12, what=name)


def test_self_attention_is_permutation_equivariant_until_positions_are_added():
    rng = np.random.default_rng(14)
    layer = ta.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True).double()
    x = ta.tensor(rng.standard_normal((1, 6, 16)))
    perm = np.array([5, 2, 0, 3, 1, 4])
    assert_close(layer(x[:, perm]), layer(x).data[:, perm], rtol=1e-10, atol=1e-12, what="equivariance")
    pe = ta.nn.PositionalEncoding(16, max_len=10)
    assert_close(pe(x), x.data + ta.nn.sinusoidal_table(6, 16, dtype=np.float64), rtol=1e-12, atol=1e-12,
                 what="PositionalEncoding adds the table")
    assert np.abs(layer(pe(x[:, perm])).data - layer(pe(x)).data[:, perm]).max() > 1e-3


def test_transformer_encoder_copies_start_identical_but_separate():
    proto = ta.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)
    encoder = ta.nn.TransformerEncoder(proto, num_layers=3)
    first = encoder.layers[0].state_dict()
    for layer in encoder.layers:
        assert layer is not proto
        for name, value in layer.state_dict().items():
            assert np.array_equal(value, first[name]), name
    encoder.layers[0].linear1.weight.data += 1.0
    assert not np.array_equal(encoder.layers[0].linear1.weight.data, encoder.layers[1].linear1.weight.data)


def test_pytorch_transformer_encoder_copies_start_identical():
    torch = import_torch()
    encoder = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(8, 2, 16), num_layers=3,
                                          enable_nested_tensor=False)
    sds = [layer.state_dict() for layer in encoder.layers]
    assert all(torch.equal(sd[k], sds[0][k]) for sd in sds for k in sd)


def test_seed_snippet_runs_on_tinyattn_and_padding_is_invisible():
    model = seed_snippet("tinyattn")(d_model=16, nhead=4, num_layers=2, dim_feedforward=32)
    src = ta.tensor(np.random.default_rng(15).standard_normal((7, 2, 16)))
    model.double()
    assert not np.allclose(model(src).data, model(src).data)  # dropout in training mode
    model.eval()
    out = model(src)
    assert out.shape == (7, 2, 16)
    pad = np.zeros((2, 7), dtype=bool)
    pad[1, 5:] = True
    padded = model(src, src_key_padding_mask=pad)
    assert_close(padded.data[:5, 1], model(src[:5, 1:2]).data[:, 0], rtol=1e-10, atol=1e-12, what="padding")


# -- issue 15: claims the notebooks make after their corrections ---------------------------------

def np_toy_weights(R: np.ndarray, W_k: np.ndarray = None) -> np.ndarray:
    """Notebook 00's P for the labelled sentence: X one-hot kinds, q = √E Rᵀ-projected, k = W_k x."""
    X = examples.word_kinds()  # (L, E)
    E = X.shape[1]
    Q = X @ (math.sqrt(E) * R.T).T
    K = X @ (np.eye(E) if W_k is None else W_k).T
    return np_softmax(Q @ K.T / math.sqrt(E))


def test_notebook00_exercise1_query_edit_changes_one_row_key_edit_changes_many():
    tokens, kinds = examples.SENTENCE, examples.KINDS
    R = examples.relation_matrix()
    P = np_toy_weights(R)
    R_query = R.copy()
    R_query[kinds.index("pronoun"), kinds.index("adjective")] = 6.0  # the *it* row of R
    P_query = np_toy_weights(R_query)
    changed = np.flatnonzero(np.abs(P_query - P).max(axis=1) > 1e-12)
    assert changed.tolist() == [tokens.index("it")]
    assert P_query[tokens.index("it")].argmax() == tokens.index("tired")
    W_k = np.eye(len(kinds))
    W_k[kinds.index("animal"), kinds.index("adjective")] = 1.0  # the key of *tired* scores like an animal's
    P_key = np_toy_weights(R, W_k)
    changed = np.flatnonzero(np.abs(P_key - P).max(axis=1) > 1e-12)
    expected = [i for i, t in enumerate(tokens) if R[kinds.index(examples.KIND_OF[t]), kinds.index("animal")] != 0]
    assert changed.tolist() == expected and len(changed) == 7


def test_notebook00_03_verbs_look_for_an_animal_and_five_rows_tie():
    tokens = list(examples.SENTENCE)
    kinds = [examples.KINDS.index(examples.KIND_OF[t]) for t in tokens]
    A = examples.relation_matrix()[np.ix_(kinds, kinds)]  # the scores, closed form: R[kind_i, kind_j]
    P = np_softmax(A)
    assert_close(examples.toy_attention()[1], P, rtol=1e-12, atol=1e-15, what="toy attention")
    was, it, cat = tokens.index("was"), tokens.index("it"), tokens.index("cat")
    assert round(P[was, cat], 2) == 0.64 and round(P[was, it], 2) == 0.14  # not its subject "it"
    ties = [tokens[i] for i in range(len(tokens)) if np.sum(A[i] == A[i].max()) > 1]
    assert ties == ["the", "cat", "the", "because", "tired"]


def test_notebook00_additive_scores_are_bounded_and_dot_products_are_not():
    h = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.8]])
    s = np.eye(2)
    additive = lambda h: np.tanh(h[None] + s[:, None]).sum(-1)  # wᵀ tanh(W_h h + W_s s), W_h = W_s = I, w = 1
    dot = lambda h: s @ h.T / math.sqrt(2)
    assert list(additive(h).argmax(1)) == [2, 2] and list(dot(h).argmax(1)) == [0, 1]
    long = h * np.array([[1.0], [1.0], [10.0]])
    assert np.abs(additive(long)).max() <= 2
    assert np_softmax(dot(long))[:, 2].min() > 0.98 and np_softmax(additive(long))[:, 2].max() < 0.6


def test_notebook03_softmax_jacobian_norm_is_not_monotone_in_the_sharpness():
    def jac_norm(p):
        return np.linalg.norm(np.diag(p) - np.outer(p, p))
    uniform = np.full(16, 1 / 16)
    two = np.zeros(16)
    two[:2] = 0.5
    assert np.isclose(jac_norm(uniform), math.sqrt(15) / 16) and np.isclose(jac_norm(two), 0.5)
    assert jac_norm(np.eye(16)[0]) == 0.0
    stats = examples.scaling_stats()
    small, large = stats["d_k"] <= 8, stats["d_k"] >= 16
    assert np.all(stats["jacobian_unscaled"][small] > stats["jacobian_scaled"][small])
    assert np.all(stats["jacobian_unscaled"][large] < stats["jacobian_scaled"][large])


def test_notebook03_attention_dropout_drops_weights_after_softmax_and_rescales():
    rng = np.random.default_rng(5)
    q, k, v = rng.standard_normal((6, 4)), rng.standard_normal((7, 4)), rng.standard_normal((7, 3))
    _, P = np_attention(q, k, v)
    p = 0.3
    ta.manual_seed(3)
    out, P_drop = F.scaled_dot_product_attention(ta.tensor(q), ta.tensor(k), ta.tensor(v), dropout_p=p,
                                                 return_weights=True)
    kept = P_drop.data != 0
    assert 0 < kept.mean() < 1
    assert_close(P_drop.data[kept], P[kept] / (1 - p), rtol=1e-12, what="kept weights are P / (1 − p)")
    assert_close(out, P_drop.data @ v, rtol=1e-12, atol=1e-12, what="output is P̃ V")
    mean = np.mean([F.scaled_dot_product_attention(ta.tensor(q), ta.tensor(k), ta.tensor(v), dropout_p=p,
                                                   return_weights=True)[1].data for _ in range(3000)], axis=0)
    assert np.abs(mean - P).max() < 0.03, "E[P̃] = P"
    mha = ta.nn.MultiheadAttention(4, 2, dropout=0.5, batch_first=True).double()
    x = ta.tensor(rng.standard_normal((1, 5, 4)))
    assert not np.allclose(mha(x, x, x)[0].data, mha(x, x, x)[0].data)
    mha.eval()
    ref = ta.nn.MultiheadAttention(4, 2, batch_first=True).double()
    ref.load_state_dict(mha.state_dict())
    assert np.array_equal(mha(x, x, x)[0].data, ref(x, x, x)[0].data)


def test_notebook04_readable_multi_head_attention_equals_numpy_and_the_module():
    rng = np.random.default_rng(6)
    E, H = 12, 3
    mha = ta.nn.MultiheadAttention(E, H, batch_first=True).double()
    mha.in_proj_bias.data[:] = rng.standard_normal(3 * E)
    x = rng.standard_normal((2, 5, E))
    got = examples.multi_head_attention(ta.tensor(x), ta.tensor(x), mha).data
    for n in range(2):
        want, _ = np_mha(x[n], *mha_params(mha), H)
        assert_close(got[n], want, rtol=1e-10, atol=1e-12, what=f"batch {n}")
    x_kv = rng.standard_normal((2, 7, E))
    allowed = rng.random((5, 7)) < 0.6
    allowed[:, 0] = True
    module = mha(ta.tensor(x), ta.tensor(x_kv), ta.tensor(x_kv), attn_mask=~allowed, need_weights=False)[0]
    readable = examples.multi_head_attention(ta.tensor(x), ta.tensor(x_kv), mha, attn_mask=allowed)
    assert_close(readable, module.data, rtol=1e-12, atol=1e-12, what="cross-attention with a mask")


def test_notebook04_split_is_a_view_and_merging_the_attention_output_copies():
    x = ta.tensor(np.random.default_rng(7).standard_normal((2, 5, 12)))
    heads_in = x.reshape(2, 5, 3, 4).transpose(1, 2)  # (N, H, L, D)
    assert np.shares_memory(heads_in.data, x.data)
    out = F.scaled_dot_product_attention(heads_in, heads_in, heads_in)  # (N, H, L, D), contiguous
    merged = out.transpose(1, 2).reshape(2, 5, 12)
    assert not np.shares_memory(merged.data, out.data)
    assert_close(merged.data[:, :, 4:8], out.data[:, 1], rtol=0, atol=0, what="head 1 in columns 4..7")


def test_notebook04_one_head_cannot_hold_two_relations_two_heads_can():
    mha, X = examples.hand_set_heads()
    D, E = mha.head_dim, mha.embed_dim
    W = mha.in_proj_weight.data
    forms = [W[h * D:(h + 1) * D].T @ W[E + h * D:E + (h + 1) * D] for h in range(4)]  # W_q,hᵀ W_k,h
    assert_close(examples.head_bilinear_forms(mha), np.stack(forms), rtol=0, atol=0, what="bilinear forms")
    assert [np.linalg.matrix_rank(m) for m in forms] == [9, 8, 0, 0]
    assert np.linalg.matrix_rank(forms[0] + forms[1]) == 17 > D
    P0, P1 = (np_softmax(X @ forms[h] @ X.T / math.sqrt(D)) for h in (0, 1))  # biases of heads 0, 1 are 0
    P_one = np_softmax(X @ (forms[0] + forms[1]) @ X.T / math.sqrt(D))  # one head scoring both
    relation = X @ forms[1] @ X.T
    conflicts = 0
    for i in range(1, len(X)):
        targets = np.flatnonzero(np.isclose(relation[i], relation[i].max()))
        if i - 1 in targets:
            continue
        conflicts += 1
        assert P0[i, i - 1] > 0.9 and P1[i, targets].sum() > 0.6
        assert P_one[i, i - 1] + P_one[i, targets].sum() <= 1 + 1e-12 and P_one[i, targets].sum() < 0.3
    assert conflicts == 8


def test_notebook05_residual_gradient_is_a_sum_over_paths_not_unchanged():
    ta.manual_seed(1)
    layers = [ta.nn.Linear(16, 16).double() for _ in range(30)]
    x0 = ta.tensor(np.random.default_rng(1).standard_normal((8, 16)), requires_grad=True)
    h = x0
    for lin in layers:
        h = h + lin(h).tanh()
    h.retain_grad()
    (h ** 2).sum().backward()
    ratio = np.linalg.norm(x0.grad) / np.linalg.norm(h.grad)
    assert 2 < ratio < 10, ratio


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_notebook05_post_norm_gradients_are_of_one_order_and_their_trend_depends_on_the_seed(seed):
    grads = examples.depth_stats(False, 24, seed=seed)["param_grad"]
    assert grads.max() < 3 * grads.min()
    first, last = grads[:8].mean(), grads[16:].mean()
    if seed == 0:  # the printed table: largest at layer 3, falling towards the output
        assert grads.argmax() == 3 and abs(grads.max() - 0.674) < 0.001 and grads.max() < 2 * grads.min()
        assert abs(grads[0] - 0.568) < 0.001 and abs(grads[-1] - 0.368) < 0.001 and first > 1.4 * last
    elif seed == 1:  # almost flat
        assert abs(first / last - 1) < 0.15
    else:  # rising towards the output
        assert last > 1.4 * first


def test_notebook05_pre_norm_last_layer_gradient_falls_slower_than_one_over_sqrt_depth():
    sweep = {nf: examples.depth_sweep(nf) for nf in (False, True)}  # depths 2 .. 32, mean of 3 seeds
    ratio = {nf: sweep[nf][-1] / sweep[nf][0] for nf in (False, True)}
    assert examples.DEPTHS[0] == 2 and examples.DEPTHS[-1] == 32
    assert round(ratio[False], 2) == 1.31 and round(ratio[True], 2) == 0.55
    assert ratio[True] > 2 * math.sqrt(2 / 32)  # the 1/sqrt(depth) prediction, x0.25, is not reproduced


def test_notebook05_default_feed_forward_is_97_percent_of_the_seed_snippets_parameters():
    E, F_ = 32, 2048
    per_layer = (4 * E * E + 4 * E) + (2 * E * F_ + F_ + E) + 4 * E  # MHA, FFN, two LayerNorms
    ffn = 2 * E * F_ + F_ + E
    layer = ta.nn.TransformerEncoderLayer(E, 4)
    assert layer.num_parameters() == per_layer
    assert 0.96 < ffn / per_layer < 0.98


def test_notebook06_loss_reference_levels():
    test = examples.test_set("reverse")
    given = test.tokens[:, :8]
    counts = np.array([np.bincount(row, minlength=10) for row in given])
    c_y = np.take_along_axis(counts, test.answers, axis=1)
    assert np.all(c_y >= 1)  # every answer digit is in its input
    assert abs(-np.mean(np.log(c_y / 8)) - 1.67) < 0.005
    assert abs(np.mean(counts.max(axis=1) / 8) - 0.295) < 0.0005
    from tinyattn import data
    rng_digits = data.make_splits("reverse", 2000, 10, seed=3)[0].tokens[:, :8]
    freq = np.bincount(rng_digits.ravel(), minlength=10) / rng_digits.size
    assert np.abs(freq - 0.1).max() < 0.01  # digits uniform: no frequency beats ln 10


def test_notebook06_schedule_peaks_at_the_end_of_warmup_below_one():
    from tinyattn import train as tr
    for steps, peak in ((300, 0.7545), (800, 0.9627)):
        f = np.array([tr.lr_factor(t, 100, steps) for t in range(steps)])
        assert f.argmax() == 99 and abs(f.max() - 0.5 * (1 + math.cos(math.pi * 99 / steps))) < 1e-12
        assert abs(f.max() - peak) < 5e-5


def np_io(L: int, D: int, M: int) -> tuple:
    """The counts in closed form: plain 4LD + 4L²; FlashAttention-1's order 2LD + ⌈L/B⌉ L (3D + 4);
    FlashAttention-2's order 2LD + L + ⌈L/B⌉ 2LD; B = ⌈M/4D⌉."""
    B = -(-M // (4 * D))
    return (4 * L * D + 4 * L * L, 2 * L * D + -(-L // B) * L * (3 * D + 4),
            2 * L * D + L + -(-L // B) * 2 * L * D)


@pytest.mark.parametrize("L, D, M", [(1, 8, 32), (100, 16, 1000), (1000, 64, 16384), (4097, 32, 65536),
                                     (3000, 128, 50000)])
def test_notebook07_io_model_counts(L, D, M):
    io = examples.attention_io(L, D, M)
    assert (io["standard"], io["flash1"], io["flash2"]) == np_io(L, D, M)


def test_notebook07_io_model_asymptotics_and_errors():
    L, D = 16384, 64
    for key in ("flash1", "flash2"):
        quad = {M: examples.attention_io(L, D, M)[key] - 2 * L * D for M in (16384, 32768, 65536)}
        assert abs(quad[16384] / quad[32768] - 2) < 0.05 and abs(quad[32768] / quad[65536] - 2) < 0.05
    io = examples.attention_io(L, D, 65536)
    assert abs(io["standard"] / io["flash1"] / (65536 / (D * (3 * D + 4))) - 1) < 0.05
    assert abs(io["standard"] / io["flash2"] / (65536 / (2 * D * D)) - 1) < 0.05  # M / 2D²
    assert abs(io["flash1"] / io["flash2"] / ((3 * D + 4) / (2 * D)) - 1) < 0.05  # FA-2's order moves less
    tiny = examples.attention_io(1024, 16, 256)  # fast memory of 4 rows: flash re-reads too often
    assert tiny["flash1"] > tiny["standard"] and tiny["flash2"] > tiny["standard"]
    with pytest.raises(ValueError, match=r"M = 100 .*4D = 256"):
        examples.attention_io(10, 64, 100)


def test_notebook06_cross_entropy_gradient_is_p_minus_onehot_over_the_count():
    rng = np.random.default_rng(4)
    z_np, y = rng.standard_normal((12, 7)) * 3, rng.integers(0, 7, 12)
    z = ta.tensor(z_np, requires_grad=True)
    F.cross_entropy(z, y).backward()
    p = np.exp(z_np - z_np.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(z.grad, (p - np.eye(7)[y]) / 12, rtol=0, atol=1e-15)
    assert ta.gradcheck(lambda t: F.cross_entropy(t, y), ta.tensor(z_np, requires_grad=True))


def test_notebook07_gqa_with_fewer_kv_heads_is_another_model_its_cache_is_exact():
    from tinyattn import efficient as eff
    x = ta.tensor(np.random.default_rng(0).standard_normal((2, 6, 16)))  # (B, T, E)
    ta.manual_seed(0)
    mha, gqa = eff.GroupedQueryAttention(16, 4, 4).double(), eff.GroupedQueryAttention(16, 4, 2).double()
    for name in ("q_proj", "out_proj"):
        getattr(gqa, name).weight.data[:] = getattr(mha, name).weight.data
        getattr(gqa, name).bias.data[:] = getattr(mha, name).bias.data
    for name in ("k_proj", "v_proj"):  # mean-pooled key/value heads, Ainslie et al.'s conversion
        W, b = getattr(mha, name).weight.data, getattr(mha, name).bias.data
        getattr(gqa, name).weight.data[:] = W.reshape(2, 2, 4, 16).mean(1).reshape(8, 16)
        getattr(gqa, name).bias.data[:] = b.reshape(2, 2, 4).mean(1).reshape(8)
    assert gqa.num_parameters() < mha.num_parameters()
    assert np.abs(gqa(x, is_causal=True).data - mha(x, is_causal=True).data).max() > 1e-3
    cache = eff.KVCache()
    steps = ta.cat([gqa(x[:, t:t + 1], is_causal=True, cache=cache) for t in range(6)], dim=1)
    assert np.abs(steps.data - gqa(x, is_causal=True).data).max() < 1e-12


def test_notebook08_the_date_range_has_36525_days():
    import datetime
    from tinyattn import data
    assert (data.FIRST_DATE, data.LAST_DATE) == (datetime.date(1950, 1, 1), datetime.date(2049, 12, 31))
    assert (data.LAST_DATE - data.FIRST_DATE).days + 1 == 36525 == 100 * 365 + 25


def test_notebook09_mean_ablation_keeps_the_mean_and_layer0_ablation_is_confidently_wrong():
    from tinyattn import data
    from tinyattn.gallery import gpt as gallery
    from tinyattn.train import lm_checkpoint_path, load_gpt
    model, config = load_gpt(lm_checkpoint_path("induction"))
    seqs, _ = data.make_induction_test(config.n_test, config.seed)
    row = seqs[:1, :-1]
    with ta.no_grad():
        intact = model(row).data
        with gallery.mean_ablated_head(model, 0, 1, row):  # the mean over one row is that row's output
            same = model(row).data
        with gallery.mean_ablated_head(model, 0, 1, seqs[200:, :-1]):
            other = model(row).data
    np.testing.assert_allclose(same, intact, rtol=0, atol=1e-5)
    assert np.abs(other - intact).max() > 0.1
    assert np.array_equal(model(row).data, intact)  # restored on exit
    chance = math.log(data.INDUCTION_TOKENS)
    for kind in ("zero", "mean"):
        table = gallery.ablation_losses(kind=kind)
        assert table["intact"][1] < 0.2 and 2.0 < table["L1H1"][1] < chance
        for name in ("L0H0", "L0H1"):
            _, copy_loss, accuracy, confidence = table[name]
            assert copy_loss > chance and confidence > 0.5 and accuracy < 1 / 3
    with pytest.raises(ValueError, match="kind"):
        gallery.ablation_losses(kind="random")


def test_notebook10_reads_huggingfaces_numbers_from_package_data():
    import importlib.resources
    import tinyattn.pretrained as pretrained
    package_data = importlib.resources.files("tinyattn") / "measurements"
    assert pretrained.HF_REFERENCE == package_data / "minilm_reference.npz"
    ref = pretrained.huggingface_reference()
    n, L = ref["input_ids"].shape
    assert ref["hidden"].shape == (n, L, 384) and ref["attentions"].shape == (6, n, 12, L, L)
    np.testing.assert_allclose(ref["attentions"].sum(-1)[..., ref["attention_mask"][0] > 0], 1, atol=1e-5)


def test_source_lines_shows_a_training_step_from_marker_to_marker():
    from tinyattn import train as tr
    step = examples.source_lines(tr.train, "for step in range", "hits.append")
    lines = step.splitlines()
    assert "for step in range" in lines[0] and "hits.append" in lines[-1]
    assert "loss.backward()" in step and "opt.step()" in step and "log(" not in step
    with pytest.raises(ValueError, match="no line of train contains 'nowhere'"):
        examples.source_lines(tr.train, "nowhere", "hits.append")


# -- notebook 11: the efficient-attention zoo ---------------------------------------------------

def test_notebook11_performer_kernel_is_unbiased_and_its_spread_falls_as_one_over_sqrt_features():
    """φ(x)·φ(y) against the closed form e^{x·y}: the mean of 100 draws within 4 standard errors,
    one draw's spread with a log-log slope near −1/2 (x, y of length about 0.7, D = 8)."""
    from tinyattn import arena
    from tinyattn import efficient as eff

    rng = np.random.default_rng(11)
    x, y = rng.standard_normal((2, 16, 8)) * 0.25
    exact = np.exp((x * y).sum(-1))  # (16,)
    sizes, spread = (16, 64, 256, 1024), []
    for n_phi in sizes:
        draws = (eff.orthogonal_random_features(n_phi, 8, 1000 + s) for s in range(100))
        est = np.array([(eff.favor_features(x, w).data * eff.favor_features(y, w).data).sum(-1)
                        for w in draws]) / exact  # (100, 16): estimate / exact
        assert (np.abs(est.mean(0) - 1) / (est.std(0) / 10)).max() < 4, n_phi
        spread.append(est.std(0).mean())
    assert -0.6 < arena.loglog_slope(sizes, spread) < -0.4


def test_notebook11_lsh_recall_of_the_best_keys_rises_with_hash_rounds():
    """The share of each query's 4 best other keys (brute force over q·q̂) inside ``lsh_mask``."""
    from tinyattn import efficient as eff

    q = np.random.default_rng(12).standard_normal((1, 2, 64, 16))
    keys = q / np.linalg.norm(q, axis=-1, keepdims=True)
    scores = q @ np.swapaxes(keys, -1, -2)  # (1, 2, 64, 64)
    scores[..., np.arange(64), np.arange(64)] = -np.inf  # a query always sees itself
    top = np.argsort(-scores, axis=-1)[..., :4]
    recall = [np.take_along_axis(eff.lsh_mask(q, 8, rounds, 16), top, axis=-1).mean()
              for rounds in (1, 2, 4, 8)]
    assert all(a < b for a, b in zip(recall, recall[1:])) and recall[0] < 0.4 and recall[-1] > 0.8, recall
