"""The tiny encoder of notebook 06: embeddings, sinusoidal positions, a Transformer encoder, a head."""

from __future__ import annotations

import numpy as np

from .. import data, nn

__all__ = ["TinyEncoder"]


class TinyEncoder(nn.Module):
    """Embedding + positional encoding + TransformerEncoder + a linear head per position.

    tokens (N, L) int -> logits (N, L, vocab_size). Pre-norm layers (``norm_first=True``) with
    a final LayerNorm, no dropout. The answer slots (token ``?``) carry no information, so they
    are masked as keys: every attention row is a distribution over the given tokens and ``=``.

    logits = LN(Encoder(W_emb[tokens] + PE; mask)) Wᵀ + b, mask = −inf on the keys that are ``?``.
    """

    def __init__(self, vocab_size: int, d_model: int = 64, nhead: int = 4, num_layers: int = 2,
                 dim_feedforward: int = 128, max_len: int = 64, positional: bool = True):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.positions = nn.PositionalEncoding(d_model, max_len) if positional else nn.Identity()
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model))
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens):
        tokens = np.asarray(tokens)
        if tokens.ndim != 2:
            raise ValueError(f"tokens has shape {tokens.shape}; expected (N, L) integer ids")
        x = self.positions(self.embedding(tokens))  # (N, L, d_model)
        x = self.encoder(x, src_key_padding_mask=tokens == data.SLOT)  # (N, L, d_model)
        return self.head(x)  # (N, L, vocab_size)
