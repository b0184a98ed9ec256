"""Efficient attention against PyTorch (float64): flash and sliding window against
torch.nn.functional.scaled_dot_product_attention, linear attention against autograd through
its quadratic form in torch, grouped-query attention against SDPA with enable_gqa=True."""

from __future__ import annotations

import numpy as np
import pytest

import tinyattn as ta
from tinyattn import efficient as eff

from helpers import import_torch

torch = import_torch()
TF = torch.nn.functional
RTOL = 1e-9


def rel_err(a, e) -> float:
    a, e = np.asarray(a), np.asarray(e)
    assert a.shape == e.shape, f"shape {a.shape} != expected {e.shape}"
    return float(np.max(np.abs(a - e)) / max(np.max(np.abs(e)), 1e-300))


def run_both(ours, theirs, shapes, seed):
    """Outputs and input gradients of ours (tinyattn) and theirs (torch) on the same data."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) for s in shapes]
    w = rng.standard_normal(shapes[0][:-1] + (shapes[2][-1],))
    mine = [ta.tensor(a, requires_grad=True) for a in arrays]
    out = ours(*mine)
    (out * ta.tensor(w)).sum().backward()
    ref = [torch.tensor(a, requires_grad=True) for a in arrays]
    tout = theirs(*ref)
    (tout * torch.tensor(w)).sum().backward()
    got = [out.data] + [t.grad for t in mine]
    want = [tout.detach().numpy()] + [t.grad.numpy() for t in ref]
    return got, want


def assert_match(got, want, what):
    for name, a, e in zip(("output", "dq", "dk", "dv"), got, want):
        err = rel_err(a, e)
        assert err <= RTOL, f"{what}: {name} relative error {err:.2e} vs torch"


@pytest.mark.parametrize("N,S,block,causal", [(45, 45, 16, True), (45, 45, 16, False),
                                              (30, 50, 8, True), (50, 30, 8, True)])
def test_flash_matches_torch_sdpa(N, S, block, causal):
    shapes = [(2, 3, N, 8), (2, 3, S, 8), (2, 3, S, 7)]
    got, want = run_both(lambda q, k, v: eff.flash_attention(q, k, v, is_causal=causal, block_size=block),
                         lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=causal),
                         shapes, N + S + block)
    assert_match(got, want, f"flash N={N} S={S} causal={causal}")


@pytest.mark.parametrize("N,S,window,causal", [(45, 45, 5, False), (45, 45, 5, True),
                                               (30, 50, 0, False), (50, 30, 7, True)])
def test_sliding_window_matches_torch_sdpa_with_band_mask(N, S, window, causal):
    mask = torch.tensor(eff.sliding_window_mask(N, S, window, causal))
    shapes = [(2, 3, N, 8), (2, 3, S, 8), (2, 3, S, 7)]
    got, want = run_both(lambda q, k, v: eff.sliding_window_attention(q, k, v, window, is_causal=causal),
                         lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                         shapes, N + S + window)
    assert_match(got, want, f"window N={N} S={S} w={window} causal={causal}")


def torch_linear_attention(q, k, v, causal, eps=1e-6):
    fq, fk = TF.elu(q) + 1, TF.elu(k) + 1
    a = fq @ fk.transpose(-2, -1)  # (..., N, S)
    if causal:
        a = a * torch.ones(a.shape[-2:], dtype=a.dtype).tril()
    return (a @ v) / (a.sum(-1, keepdim=True) + eps)


@pytest.mark.parametrize("N,S,causal", [(100, 100, True), (100, 70, False), (150, 90, True)])
def test_linear_attention_matches_torch_quadratic_form(N, S, causal):
    shapes = [(2, 2, N, 8), (2, 2, S, 8), (2, 2, S, 6)]
    got, want = run_both(lambda q, k, v: eff.linear_attention(q, k, v, is_causal=causal),
                         lambda q, k, v: torch_linear_attention(q, k, v, causal), shapes, N + S)
    assert_match(got, want, f"linear N={N} S={S} causal={causal}")


@pytest.mark.parametrize("num_kv_heads", [4, 2, 1])
def test_gqa_module_matches_torch_sdpa_enable_gqa(num_kv_heads):
    ta.manual_seed(30)
    m = eff.GroupedQueryAttention(16, 4, num_kv_heads).double()
    x = np.random.default_rng(31).standard_normal((2, 7, 16))
    xt = ta.tensor(x, requires_grad=True)
    out = m(xt, is_causal=True)
    w = np.random.default_rng(32).standard_normal(out.shape)
    (out * ta.tensor(w)).sum().backward()

    p = {name: torch.tensor(a, requires_grad=True) for name, a in m.state_dict().items()}
    x_ref = torch.tensor(x, requires_grad=True)

    def heads(name, n):
        y = TF.linear(x_ref, p[f"{name}.weight"], p[f"{name}.bias"])  # (B, T, n·D)
        return y.reshape(2, 7, n, 4).transpose(1, 2)  # (B, n, T, D)

    o = TF.scaled_dot_product_attention(heads("q_proj", 4), heads("k_proj", num_kv_heads),
                                        heads("v_proj", num_kv_heads), is_causal=True, enable_gqa=True)
    ref = TF.linear(o.transpose(1, 2).reshape(2, 7, 16), p["out_proj.weight"], p["out_proj.bias"])
    (ref * torch.tensor(w)).sum().backward()
    assert rel_err(out.data, ref.detach().numpy()) <= RTOL
    assert rel_err(xt.grad, x_ref.grad.numpy()) <= RTOL
    for name, param in m.named_parameters():  # k_proj.bias gets a zero gradient (softmax shift)
        np.testing.assert_allclose(param.grad, p[name].grad.numpy(), rtol=RTOL, atol=1e-12, err_msg=name)
