"""The README's key figures: a score matrix, per-head weights, masks, positional encodings.

The example sentence is "the cat sat on the mat because it was tired". Its word vectors are
one-hot word kinds (animal, place, verb, ...) and one-hot positions, and the projection weights
are set by hand, so every pattern in the pictures has a reason that can be read off the code.
"""

from __future__ import annotations


import numpy as np

from .. import autograd as ag
from .. import nn, viz
from ..examples import HEAD_NAMES, SENTENCE, hand_set_heads, toy_attention
from .registry import figure


@figure("score_matrix", "attention weights on a labelled sentence (hand-built word kinds and W_q)")
def score_matrix():
    tokens, weights = toy_attention()
    return viz.heatmap(weights, tokens, annotate=True, figsize=(7.2, 6.2),
                       title="softmax(Q Kᵀ/√d): each row is one word's attention over the sentence\n"
                             "(hand-set W_q: 'it' looks for animals, 'on' for places, verbs for animals)")


@figure("head_grid", "per-head weights of a MultiheadAttention: hand-set heads vs a seeded random init")
def head_grid():
    mha, x = hand_set_heads()
    _, set_by_hand = mha(x[None], x[None], x[None], average_attn_weights=False)  # (1, 4, T, T)
    ag.manual_seed(0)
    random_init = nn.MultiheadAttention(mha.embed_dim, mha.num_heads, batch_first=True, dtype=np.float64)
    _, untrained = random_init(x[None], x[None], x[None], average_attn_weights=False)  # (1, 4, T, T)
    grid = np.stack([set_by_hand.data[0], untrained.data[0]])  # (2, 4, T, T)
    return viz.attention_grid(grid, SENTENCE, row_titles=["hand-set", "random init"], col_titles=HEAD_NAMES,
                              panel_size=2.5,
                              title="MultiheadAttention(48, 4): one relation per hand-set head; "
                                    "an untrained module attends almost uniformly")


MASK_TOKENS = ["<s>", "the", "cat", "sat", "<pad>", "<pad>"]


@figure("masks", "causal, padding and combined masks (SDPA polarity; MultiheadAttention's is the opposite)")
def masks():
    import matplotlib.pyplot as plt

    L = len(MASK_TOKENS)
    causal = ~nn.causal_mask(L)  # (L, L): SDPA polarity, True = may attend
    is_pad = np.array([t == "<pad>" for t in MASK_TOKENS])  # (S,): a key_padding_mask, True = pad
    padding = np.broadcast_to(~is_pad, (L, L))  # (L, S): every query may attend to non-pad keys
    panels = [("causal: ~causal_mask(L)", causal), ("padding: ~key_padding_mask", padding),
              ("combined: causal & padding", causal & padding)]
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 4.6), constrained_layout=True)
    for ax, (name, mask) in zip(axes, panels):
        viz.mask_picture(mask, MASK_TOKENS, ax=ax, title=name)
    fig.suptitle("Masks in scaled_dot_product_attention polarity (True = may attend).  "
                 "MultiheadAttention's attn_mask / key_padding_mask\nand nn.causal_mask use the "
                 "opposite (True = may NOT attend): pass ~mask.", fontsize=10)
    return fig


@figure("positional_encoding", "sinusoidal positional encoding table and the similarity of positions")
def positional_encoding():
    fig = viz.positional_encoding_picture(nn.sinusoidal_table(64, 64))
    fig.suptitle("Sinusoidal positional encoding, 64 positions x d_model 64: "
                 "PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d))", fontsize=10)
    return fig


@figure("sentence_head_view", "interactive head view (HTML) of the four hand-set heads on the labelled sentence")
def sentence_head_view():
    mha, x = hand_set_heads()
    _, weights = mha(x[None], x[None], x[None], average_attn_weights=False)  # (1, 4, T, T)
    return viz.head_view(SENTENCE, [weights.data], layer_names=["hand-set heads"], head_names=HEAD_NAMES,
                         title="MultiheadAttention(48, 4) with hand-set heads: hover a word to see where it looks")
