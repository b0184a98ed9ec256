"""The decoder layer, ``nn.Transformer`` and ``CrossEntropyLoss`` without PyTorch: finite
differences, closed forms and the errors a learner meets first."""

from __future__ import annotations

import numpy as np
import pytest

import tinyattn as ta
from helpers import t64

RNG = np.random.default_rng(140)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_gradcheck(norm_first):
    layer = ta.nn.TransformerDecoderLayer(4, 2, 6, dropout=0.0, norm_first=norm_first).double()
    tgt, memory = t64(RNG, 3, 2, 4), t64(RNG, 5, 2, 4)
    pad = np.array([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], bool)
    params = [p for _, p in layer.named_parameters()]

    def fn(tgt, memory, *weights):
        return layer(tgt, memory, tgt_mask=ta.nn.causal_mask(3), memory_key_padding_mask=pad)

    assert ta.gradcheck(fn, (tgt, memory, *params))


def test_decoder_layer_is_causal_in_the_target():
    """Changing target position 2 leaves the outputs at positions 0 and 1 unchanged."""
    layer = ta.nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True).double()
    tgt, memory = RNG.standard_normal((1, 4, 8)), RNG.standard_normal((1, 6, 8))
    changed = tgt.copy()
    changed[0, 2] += 1.0
    mask = ta.nn.Transformer.generate_square_subsequent_mask(4, dtype=ta.float64)
    a, b = layer(tgt, memory, tgt_mask=mask).data, layer(changed, memory, tgt_mask=mask).data
    np.testing.assert_array_equal(a[0, :2], b[0, :2])
    assert np.abs(a[0, 2:] - b[0, 2:]).min() > 1e-6


def test_transformer_reinitializes_matrices_with_xavier():
    ta.manual_seed(0)
    model = ta.nn.Transformer(16, 2, 1, 1, 64)
    w = model.decoder.layers[0].linear1.weight.data  # (64, 16)
    bound = np.sqrt(6 / (16 + 64))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert np.all(model.encoder.norm.weight.data == 1) and np.all(model.decoder.norm.bias.data == 0)


def test_clear_errors():
    layer = ta.nn.TransformerDecoderLayer(8, 2, 16, batch_first=True)
    tgt = np.zeros((2, 3, 8), np.float32)
    with pytest.raises(ValueError, match=r"memory has shape \(2, 5, 6\).*d_model is 8"):
        layer(tgt, np.zeros((2, 5, 6), np.float32))
    with pytest.raises(ValueError, match=r"attn_mask has shape \(4, 4\); expected \(L, S\) = \(3, 3\)"):
        layer(tgt, np.zeros((2, 5, 8), np.float32), tgt_mask=np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match=r"key_padding_mask has shape \(2, 4\); expected \(N, S\) = \(2, 5\)"):
        layer(tgt, np.zeros((2, 5, 8), np.float32), memory_key_padding_mask=np.zeros((2, 4), bool))
    model = ta.nn.Transformer(8, 2, 1, 1, 16, batch_first=True)
    with pytest.raises(ValueError, match=r"batch sizes"):
        model(np.zeros((3, 5, 8), np.float32), tgt)
    with pytest.raises(ValueError, match=r"d_model = 8"):
        model(np.zeros((2, 5, 6), np.float32), tgt)


def test_cross_entropy_label_smoothing_closed_form():
    """ε-smoothed loss = Σ_c q_c (−log p_c) with q = (1 − ε) onehot + ε/C, padding ignored."""
    x = RNG.standard_normal((4, 3))
    target = np.array([2, 0, 1, 0])
    eps = 0.2
    logp = x - np.log(np.exp(x).sum(1, keepdims=True))
    q = np.full((4, 3), eps / 3) + (1 - eps) * np.eye(3)[target]
    per_row = -(q * logp).sum(1)
    loss = ta.nn.CrossEntropyLoss(ignore_index=0, label_smoothing=eps)(ta.tensor(x), target)
    assert loss.item() == pytest.approx(per_row[[0, 2]].mean(), rel=1e-12)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        ta.nn.CrossEntropyLoss(label_smoothing=1.5)
