"""The decoder layer, decoder stack, ``nn.Transformer`` and ``CrossEntropyLoss`` against PyTorch
with the same weights: outputs and every gradient in float64, across masks of both polarities."""

from __future__ import annotations

import numpy as np
import pytest

import tinyattn as ta
from helpers import assert_close, import_torch

torch = import_torch()
pytestmark = [pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask"),
              pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")]
RNG = np.random.default_rng(14)
TOL = dict(rtol=1e-6, atol=1e-10)
T, S, N, E, H = 5, 7, 2, 8, 2


def load_from_torch(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    assert list(ours.state_dict()) == list(theirs.state_dict())


def perturb(module):
    """Break the identical initial copies (and zero biases) so a mix-up of layers would show."""
    with torch.no_grad():
        for p in module.parameters():
            p += 0.05 * torch.randn(p.shape, dtype=p.dtype)


def compare_grads(ours, theirs):
    grads = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        assert grads[name].grad is not None, f"{name} got no gradient"
        assert_close(grads[name].grad, p.grad.numpy(), what=name, **TOL)


def causal_bool(n):
    return np.triu(np.ones((n, n), bool), 1)


def some_blocked(shape, rate=0.3):
    """A bool mask (True = may NOT attend) with the first key never blocked: no row fully masked."""
    m = RNG.random(shape) < rate
    m[..., 0] = False
    return m


def float_mask(shape):
    """An additive float mask: random finite offsets and a few −inf entries (never a full row)."""
    m = RNG.standard_normal(shape)
    m[some_blocked(shape, 0.2)] = -np.inf
    return m


PAD_T = np.array([[0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], bool)  # (N, T)
PAD_S = np.array([[0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0]], bool)  # (N, S)

MASK_CASES = {
    "none": {},
    "tgt-causal-float+flag": {"tgt_mask": np.triu(np.full((T, T), -np.inf), 1), "tgt_is_causal": True},
    "tgt-causal-bool": {"tgt_mask": causal_bool(T)},
    "tgt-bool": {"tgt_mask": some_blocked((T, T))},
    "tgt-float": {"tgt_mask": float_mask((T, T))},
    "tgt-per-head": {"tgt_mask": some_blocked((N * H, T, T))},
    "memory-bool": {"memory_mask": some_blocked((T, S))},
    "memory-float": {"memory_mask": float_mask((T, S))},
    "key-padding-bool": {"tgt_key_padding_mask": PAD_T, "memory_key_padding_mask": PAD_S},
    "key-padding-float": {"tgt_key_padding_mask": np.where(PAD_T, -np.inf, 0.0),
                          "memory_key_padding_mask": np.where(PAD_S, -np.inf, 0.0)},
    "all": {"tgt_mask": causal_bool(T), "memory_mask": some_blocked((T, S)),
            "tgt_key_padding_mask": PAD_T, "memory_key_padding_mask": PAD_S, "tgt_is_causal": True},
}


def to_torch(kwargs):
    return {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


def run_both(ours, theirs, inputs, kwargs):
    """Forward both with the same inputs and masks, backward one random cotangent; compare."""
    m_in = [ta.tensor(x, requires_grad=True) for x in inputs]
    t_in = [torch.tensor(x, requires_grad=True) for x in inputs]
    m_out, t_out = ours(*m_in, **kwargs), theirs(*t_in, **to_torch(kwargs))
    assert_close(m_out, t_out.detach().numpy(), what="output", **TOL)
    cot = RNG.standard_normal(t_out.shape)
    m_out.backward(cot)
    t_out.backward(torch.tensor(cot))
    for i, (a, b) in enumerate(zip(m_in, t_in)):
        assert_close(a.grad, b.grad.numpy(), what=f"input {i} gradient", **TOL)
    compare_grads(ours, theirs)
    return m_out


@pytest.mark.parametrize("case", list(MASK_CASES))
@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch(case, norm_first):
    kw = dict(dim_feedforward=12, dropout=0.0, norm_first=norm_first)
    theirs = torch.nn.TransformerDecoderLayer(E, H, **kw).double()
    ours = ta.nn.TransformerDecoderLayer(E, H, **kw).double()
    perturb(theirs)
    load_from_torch(ours, theirs)
    run_both(ours, theirs, [RNG.standard_normal((T, N, E)), RNG.standard_normal((S, N, E))], MASK_CASES[case])


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_decoder_layer_options_match_torch(activation, batch_first, bias):
    kw = dict(dim_feedforward=12, dropout=0.0, activation=activation, batch_first=batch_first, bias=bias,
              layer_norm_eps=1e-3)
    theirs = torch.nn.TransformerDecoderLayer(E, H, **kw).double()
    ours = ta.nn.TransformerDecoderLayer(E, H, **kw).double()
    perturb(theirs)
    load_from_torch(ours, theirs)
    assert any("bias" in k for k in ours.state_dict()) == bias
    shape = (lambda L: (N, L, E)) if batch_first else (lambda L: (L, N, E))
    run_both(ours, theirs, [RNG.standard_normal(shape(T)), RNG.standard_normal(shape(S))],
             {"tgt_mask": causal_bool(T), "memory_key_padding_mask": PAD_S})


def test_decoder_layer_unbatched_matches_torch():
    theirs = torch.nn.TransformerDecoderLayer(E, H, 12, dropout=0.0).double()
    ours = ta.nn.TransformerDecoderLayer(E, H, 12, dropout=0.0).double()
    perturb(theirs)
    load_from_torch(ours, theirs)
    run_both(ours, theirs, [RNG.standard_normal((T, E)), RNG.standard_normal((S, E))],
             {"tgt_mask": causal_bool(T), "memory_key_padding_mask": PAD_S[0]})


def test_decoder_state_dict_keys_are_torchs():
    theirs = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(E, H, 12), 2, norm=torch.nn.LayerNorm(E))
    ours = ta.nn.TransformerDecoder(ta.nn.TransformerDecoderLayer(E, H, 12), 2, norm=ta.nn.LayerNorm(E))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for k, v in theirs.state_dict().items():
        assert ours.state_dict()[k].shape == tuple(v.shape), k


@pytest.mark.parametrize("tgt_is_causal", [None, True])
def test_three_layer_decoder_matches_torch(tgt_is_causal):
    theirs = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(E, H, 16, dropout=0.0), 3,
                                         norm=torch.nn.LayerNorm(E)).double()
    ours = ta.nn.TransformerDecoder(ta.nn.TransformerDecoderLayer(E, H, 16, dropout=0.0), 3,
                                    norm=ta.nn.LayerNorm(E)).double()
    perturb(theirs)
    load_from_torch(ours, theirs)
    kwargs = {"tgt_mask": ta.nn.Transformer.generate_square_subsequent_mask(T, dtype=ta.float64),
              "tgt_key_padding_mask": PAD_T, "memory_key_padding_mask": PAD_S, "tgt_is_causal": tgt_is_causal}
    run_both(ours, theirs, [RNG.standard_normal((T, N, E)), RNG.standard_normal((S, N, E))], kwargs)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_transformer_matches_torch(norm_first, batch_first):
    kw = dict(d_model=E, nhead=H, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=16,
              dropout=0.0, batch_first=batch_first, norm_first=norm_first)
    theirs = torch.nn.Transformer(**kw).double()
    ours = ta.nn.Transformer(**kw).double()
    perturb(theirs)
    load_from_torch(ours, theirs)
    src = RNG.standard_normal((N, S, E) if batch_first else (S, N, E))
    tgt = RNG.standard_normal((N, T, E) if batch_first else (T, N, E))
    kwargs = {"src_mask": some_blocked((S, S)),
              "tgt_mask": ta.nn.Transformer.generate_square_subsequent_mask(T, dtype=ta.float64),
              "memory_mask": some_blocked((T, S)), "src_key_padding_mask": PAD_S,
              "tgt_key_padding_mask": PAD_T, "memory_key_padding_mask": PAD_S}
    run_both(ours, theirs, [src, tgt], kwargs)


def test_generate_square_subsequent_mask_matches_torch_and_closed_form():
    ours = ta.nn.Transformer.generate_square_subsequent_mask(4)
    expected = np.array([[0, -np.inf, -np.inf, -np.inf], [0, 0, -np.inf, -np.inf],
                         [0, 0, 0, -np.inf], [0, 0, 0, 0]], np.float32)
    np.testing.assert_array_equal(ours, expected)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, torch.nn.Transformer.generate_square_subsequent_mask(4).numpy())
    np.testing.assert_array_equal(np.isneginf(ours), ta.nn.causal_mask(4))
    ours64 = ta.nn.Transformer.generate_square_subsequent_mask(3, None, ta.float64)  # PyTorch's positional order
    theirs64 = torch.nn.Transformer.generate_square_subsequent_mask(3, None, torch.float64)
    assert ours64.dtype == np.float64 and np.array_equal(ours64, theirs64.numpy())


def test_fully_masked_rows_give_zero_attention_not_nan():
    """Batch element 1 has every memory key padded: its cross-attention output is the out_proj
    bias alone (zero attention), finite, with zero gradient into that element's memory."""
    theirs = torch.nn.TransformerDecoderLayer(E, H, 12, dropout=0.0).double()
    ours = ta.nn.TransformerDecoderLayer(E, H, 12, dropout=0.0).double()
    perturb(theirs)
    load_from_torch(ours, theirs)
    pad = np.zeros((N, S), bool)
    pad[1] = True
    tgt, memory = RNG.standard_normal((T, N, E)), RNG.standard_normal((S, N, E))
    mem = ta.tensor(memory, requires_grad=True)
    out = ours(ta.tensor(tgt), mem, memory_key_padding_mask=pad)
    assert np.all(np.isfinite(out.data))
    out.backward(RNG.standard_normal(out.shape))
    assert np.all(mem.grad[:, 1] == 0) and np.any(mem.grad[:, 0] != 0)
    # closed form for element 1: the cross-attention block adds exactly out_proj.bias
    with ta.no_grad():
        x = ours.norm1(ta.tensor(tgt[:, 1:2]) + ours._sa_block(ta.tensor(tgt[:, 1:2]), None, None, False))
        x = ours.norm2(x + ours.multihead_attn.out_proj.bias)
        expected = ours.norm3(x + ours._ff_block(x))
    assert_close(out.data[:, 1:2], expected.data, **TOL)
    with torch.no_grad():
        t_out = theirs(torch.tensor(tgt), torch.tensor(memory), memory_key_padding_mask=torch.tensor(pad))
    assert_close(out.data[:, 0], t_out.numpy()[:, 0], **TOL)  # the unmasked element agrees with torch


def test_record_attention_sees_decoder_self_and_cross_attention_separately():
    model = ta.nn.Transformer(E, H, 1, 2, 16, dropout=0.0, batch_first=True).double()
    src, tgt = RNG.standard_normal((N, S, E)), RNG.standard_normal((N, T, E))
    with ta.nn.record_attention(model) as rec:
        model(src, tgt, tgt_mask=causal_bool(T), memory_key_padding_mask=PAD_S)
    assert rec.names == ["encoder.layers.0.self_attn", "decoder.layers.0.self_attn",
                         "decoder.layers.0.multihead_attn", "decoder.layers.1.self_attn",
                         "decoder.layers.1.multihead_attn"]
    shapes = [w.shape for w in rec.weights]
    assert shapes == [(N, H, S, S), (N, H, T, T), (N, H, T, S), (N, H, T, T), (N, H, T, S)]
    self_w, cross_w = rec.weights[1], rec.weights[2]
    assert np.all(self_w[..., causal_bool(T)] == 0)  # causal: no weight above the diagonal
    assert np.all(cross_w[0, :, :, 5:] == 0)  # padded memory keys get zero weight
    np.testing.assert_allclose(cross_w.sum(-1), 1.0, rtol=1e-12)


# -- cross-entropy with ignore_index, class weights and label smoothing ----------------------------

CE_CASES = [dict(), dict(label_smoothing=0.1), dict(ignore_index=0), dict(ignore_index=0, label_smoothing=0.2),
            dict(weight=True, ignore_index=0, label_smoothing=0.15), dict(weight=True, label_smoothing=0.3, reduction="sum"),
            dict(ignore_index=0, label_smoothing=0.1, reduction="none"), dict(label_smoothing=1.0)]


@pytest.mark.parametrize("kwargs", CE_CASES, ids=[str(c) for c in CE_CASES])
@pytest.mark.parametrize("spatial", [False, True])
def test_cross_entropy_loss_matches_torch(kwargs, spatial):
    C = 5
    kwargs = dict(kwargs)
    weight = RNG.random(C) + 0.5 if kwargs.pop("weight", False) else None
    shape = (4, C, 3) if spatial else (6, C)
    x = RNG.standard_normal(shape)
    target = RNG.integers(0, C, (4, 3) if spatial else (6,))
    target.reshape(-1)[:2] = 0  # make sure some targets are the ignored class 0
    ours = ta.nn.CrossEntropyLoss(weight=weight, **kwargs)
    theirs = torch.nn.CrossEntropyLoss(weight=None if weight is None else torch.tensor(weight), **kwargs)
    mx, tx = ta.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    m_loss, t_loss = ours(mx, target), theirs(tx, torch.tensor(target))
    assert_close(m_loss, t_loss.detach().numpy(), rtol=1e-10, atol=1e-12)
    cot = RNG.standard_normal(t_loss.shape)
    m_loss.backward(cot)
    t_loss.backward(torch.tensor(cot))
    assert_close(mx.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    if weight is not None:
        assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
