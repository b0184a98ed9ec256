"""Attention against PyTorch with the same weights: outputs, returned weights and every
parameter gradient, in float64, across the options of issue 3."""

from __future__ import annotations

import numpy as np
import pytest

import tinyattn as ta
from helpers import assert_close, import_torch, seed_snippet

torch = import_torch()
RNG = np.random.default_rng(6)
TOL = dict(rtol=1e-6, atol=1e-10)


def load_from_torch(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    assert list(ours.state_dict()) == list(theirs.state_dict())


def compare_params(ours, theirs):
    grads = {n: p.grad for n, p in ours.named_parameters()}
    for name, p in theirs.named_parameters():
        expected = np.zeros(p.shape) if p.grad is None else p.grad.numpy()
        assert_close(grads[name] if grads[name] is not None else np.zeros(p.shape), expected, what=name, **TOL)


def to_torch_mask(m):
    return None if m is None else torch.tensor(m)


# -- scaled dot-product attention -----------------------------------------------------------------

SDPA_CASES = {
    "plain": {},
    "bool": {"attn_mask": RNG.random((5, 7)) < 0.7},
    "bool-full-row": {"attn_mask": np.vstack([np.zeros((1, 7), bool), RNG.random((4, 7)) < 0.7])},
    "float": {"attn_mask": RNG.standard_normal((2, 1, 5, 7))},
    "causal": {"is_causal": True},
    "scale": {"scale": 0.2},
}


@pytest.mark.parametrize("case", list(SDPA_CASES))
def test_sdpa_matches_torch(case):
    kwargs = SDPA_CASES[case]
    arrays = [RNG.standard_normal(s) for s in ((2, 3, 5, 4), (2, 3, 7, 4), (2, 3, 7, 6))]
    ours = [ta.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    tkw = {k: to_torch_mask(v) if k == "attn_mask" else v for k, v in kwargs.items()}
    out = ta.nn.functional.scaled_dot_product_attention(*ours, **kwargs)
    ref = torch.nn.functional.scaled_dot_product_attention(*theirs, **tkw)
    assert_close(out, ref.detach().numpy(), **TOL)
    cot = RNG.standard_normal(ref.shape)
    out.backward(cot)
    ref.backward(torch.tensor(cot))
    for name, a, b in zip("qkv", ours, theirs):
        assert_close(a.grad, b.grad.numpy(), what=f"d{name}", **TOL)


def test_sdpa_gqa_matches_torch():
    arrays = [RNG.standard_normal(s) for s in ((2, 6, 5, 4), (2, 2, 7, 4), (2, 2, 7, 3))]
    ours = [ta.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = ta.nn.functional.scaled_dot_product_attention(*ours, is_causal=True, enable_gqa=True)
    ref = torch.nn.functional.scaled_dot_product_attention(*theirs, is_causal=True, enable_gqa=True)
    assert_close(out, ref.detach().numpy(), **TOL)
    out.sum().backward()
    ref.sum().backward()
    for a, b in zip(ours, theirs):
        assert_close(a.grad, b.grad.numpy(), **TOL)


# -- multi-head attention --------------------------------------------------------------------------

MHA_CASES = {
    "self-seqfirst": dict(ctor={}, L=5, S=5, self_attn=True),
    "self-batchfirst": dict(ctor={"batch_first": True}, L=5, S=5, self_attn=True),
    "cross-L!=S": dict(ctor={"batch_first": True}, L=4, S=6),
    "kdim-vdim": dict(ctor={"kdim": 5, "vdim": 3}, L=4, S=6),
    "no-bias": dict(ctor={"bias": False, "batch_first": True}, L=4, S=6),
    "bool-attn-mask": dict(ctor={}, L=4, S=6, attn_mask=RNG.random((4, 6)) < 0.3),
    "float-attn-mask-3d": dict(ctor={"batch_first": True}, L=4, S=6, attn_mask=RNG.standard_normal((2 * 4, 4, 6))),
    "bool-3d-and-padding": dict(ctor={}, L=4, S=6, attn_mask=RNG.random((2 * 4, 4, 6)) < 0.2,
                                key_padding_mask=np.array([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]], bool)),
    "float-padding": dict(ctor={"batch_first": True}, L=4, S=6,
                          key_padding_mask=np.where(np.array([[0, 0, 0, 1, 1, 1], [0] * 6], bool), -np.inf, 0.0)),
    "causal": dict(ctor={"batch_first": True}, L=5, S=5, self_attn=True,
                   attn_mask=np.triu(np.ones((5, 5), bool), 1), is_causal=True),
    "per-head-weights": dict(ctor={}, L=4, S=6, average_attn_weights=False),
    "no-weights": dict(ctor={}, L=4, S=6, need_weights=False, attn_mask=RNG.random((4, 6)) < 0.3),
}


@pytest.mark.parametrize("case", list(MHA_CASES))
def test_multihead_attention_matches_torch(case):
    cfg = dict(MHA_CASES[case])
    E, H, N = 8, 4, 2
    ctor = cfg.pop("ctor")
    L, S = cfg.pop("L"), cfg.pop("S")
    self_attn = cfg.pop("self_attn", False)
    theirs = torch.nn.MultiheadAttention(E, H, **ctor).double()
    ours = ta.nn.MultiheadAttention(E, H, **ctor).double()
    load_from_torch(ours, theirs)
    bf = ctor.get("batch_first", False)
    shape = lambda T, D: (N, T, D) if bf else (T, N, D)  # noqa: E731
    q = RNG.standard_normal(shape(L, E))
    k = q if self_attn else RNG.standard_normal(shape(S, ctor.get("kdim", E)))
    v = q if self_attn else RNG.standard_normal(shape(S, ctor.get("vdim", E)))
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    mq, mk, mv = (ta.tensor(a, requires_grad=True) for a in (q, k, v))
    if self_attn:
        tk = tv = tq
        mk = mv = mq
    tkw = {k_: to_torch_mask(v_) if "mask" in k_ else v_ for k_, v_ in cfg.items()}
    t_out, t_w = theirs(tq, tk, tv, **tkw)
    m_out, m_w = ours(mq, mk, mv, **cfg)
    assert_close(m_out, t_out.detach().numpy(), what="output", **TOL)
    if cfg.get("need_weights", True):
        assert_close(m_w, t_w.detach().numpy(), what="weights", **TOL)
    else:
        assert m_w is None and t_w is None
    cot = RNG.standard_normal(t_out.shape)
    loss_t = (t_out * torch.tensor(cot)).sum()
    loss_m = (m_out * cot).sum()
    if m_w is not None:  # the returned weights are part of the graph, as in PyTorch
        wcot = RNG.standard_normal(t_w.shape)
        loss_t = loss_t + (t_w * torch.tensor(wcot)).sum()
        loss_m = loss_m + (m_w * wcot).sum()
    loss_t.backward()
    loss_m.backward()
    for name, a, b in (("query", mq, tq), ("key", mk, tk), ("value", mv, tv)):
        assert_close(a.grad, b.grad.numpy(), what=f"d{name}", **TOL)
    compare_params(ours, theirs)


def test_fully_masked_row_tinyattn_zero_where_torch_mha_gives_nan():
    theirs = torch.nn.MultiheadAttention(4, 2, batch_first=True).double()
    ours = ta.nn.MultiheadAttention(4, 2, batch_first=True).double()
    load_from_torch(ours, theirs)
    x = RNG.standard_normal((1, 3, 4))
    block = np.zeros((3, 3), bool)
    block[1] = True
    t_out, t_w = theirs(*(torch.tensor(x),) * 3, attn_mask=torch.tensor(block))
    m_out, m_w = ours(x, x, x, attn_mask=block)
    assert torch.isnan(t_w[0, 1]).all(), "PyTorch's documented NaN for an all-masked row"
    assert np.all(m_w.data[0, 1] == 0) and np.all(np.isfinite(m_out.data))
    finite = ~torch.isnan(t_out).numpy()
    assert_close(m_out.data[finite], t_out.detach().numpy()[finite], **TOL)
    t_out2, _ = theirs(*(torch.tensor(x),) * 3, attn_mask=torch.tensor(block), need_weights=False)
    assert_close(m_out, t_out2.detach().numpy(), **TOL)  # PyTorch's fast path gives zeros too


# -- encoder layer and encoder ---------------------------------------------------------------------

@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_encoder_layer_matches_torch(norm_first, activation, batch_first):
    kw = dict(dim_feedforward=12, dropout=0.0, activation=activation, batch_first=batch_first, norm_first=norm_first)
    theirs = torch.nn.TransformerEncoderLayer(8, 2, **kw).double()
    ours = ta.nn.TransformerEncoderLayer(8, 2, **kw).double()
    load_from_torch(ours, theirs)
    x = RNG.standard_normal((2, 5, 8) if batch_first else (5, 2, 8))
    kpm = np.array([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], bool)
    mask = RNG.random((5, 5)) < 0.2
    np.fill_diagonal(mask, False)
    tx, mx = torch.tensor(x, requires_grad=True), ta.tensor(x, requires_grad=True)
    t_out = theirs(tx, src_mask=torch.tensor(mask), src_key_padding_mask=torch.tensor(kpm))
    m_out = ours(mx, src_mask=mask, src_key_padding_mask=kpm)
    assert_close(m_out, t_out.detach().numpy(), **TOL)
    cot = RNG.standard_normal(t_out.shape)
    t_out.backward(torch.tensor(cot))
    m_out.backward(cot)
    assert_close(mx.grad, tx.grad.numpy(), what="dsrc", **TOL)
    compare_params(ours, theirs)


def test_encoder_layer_bias_false_matches_torch():
    theirs = torch.nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, bias=False, batch_first=True).double()
    ours = ta.nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, bias=False, batch_first=True).double()
    load_from_torch(ours, theirs)
    assert not any("bias" in k for k in ours.state_dict())
    x = RNG.standard_normal((2, 5, 8))
    assert_close(ours(x), theirs(torch.tensor(x)).detach().numpy(), **TOL)


@pytest.mark.parametrize("final_norm", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_three_layer_encoder_matches_torch(final_norm, causal):
    t_layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)
    theirs = torch.nn.TransformerEncoder(t_layer, 3, norm=torch.nn.LayerNorm(8) if final_norm else None,
                                         enable_nested_tensor=False).double()
    for p in theirs.parameters():  # break the identical copies so a layer mix-up would show
        p.data += 0.05 * torch.randn(p.shape, dtype=torch.float64)
    m_layer = ta.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)
    ours = ta.nn.TransformerEncoder(m_layer, 3, norm=ta.nn.LayerNorm(8) if final_norm else None).double()
    load_from_torch(ours, theirs)
    x = RNG.standard_normal((6, 2, 8))
    mask = np.triu(np.ones((6, 6), bool), 1) if causal else None
    kpm = np.array([[0] * 6, [0, 0, 0, 0, 1, 1]], bool)
    tx, mx = torch.tensor(x, requires_grad=True), ta.tensor(x, requires_grad=True)
    t_out = theirs(tx, mask=to_torch_mask(mask), src_key_padding_mask=torch.tensor(kpm))
    m_out = ours(mx, mask=mask, src_key_padding_mask=kpm)
    assert_close(m_out, t_out.detach().numpy(), **TOL)
    cot = RNG.standard_normal(t_out.shape)
    t_out.backward(torch.tensor(cot))
    m_out.backward(cot)
    assert_close(mx.grad, tx.grad.numpy(), **TOL)
    compare_params(ours, theirs)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
def test_seed_snippet_gives_torch_outputs_with_torch_weights():
    theirs = seed_snippet("torch")(d_model=16, nhead=4, num_layers=2, dim_feedforward=32, dropout=0.0).double()
    ours = seed_snippet("tinyattn")(d_model=16, nhead=4, num_layers=2, dim_feedforward=32, dropout=0.0).double()
    load_from_torch(ours, theirs)
    src = RNG.standard_normal((7, 3, 16))
    kpm = np.zeros((3, 7), bool)
    kpm[0, 4:] = True
    ref = theirs(torch.tensor(src), src_key_padding_mask=torch.tensor(kpm)).detach().numpy()
    assert_close(ours(src, src_key_padding_mask=kpm), ref, **TOL)
