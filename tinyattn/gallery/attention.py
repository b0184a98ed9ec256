"""The README's key figures: a score matrix, per-head weights, masks, positional encodings.

The example sentence is "the cat sat on the mat because it was tired". Its word vectors are
one-hot word kinds (animal, place, verb, ...) and one-hot positions, and the projection weights
are set by hand, so every pattern in the pictures has a reason that can be read off the code.
"""

from __future__ import annotations

import math

import numpy as np

from .. import autograd as ag
from .. import nn, viz
from ..figures import figure
from ..nn import functional as F

SENTENCE = "the cat sat on the mat because it was tired".split()
KINDS = ["animal", "place", "pronoun", "verb", "preposition", "determiner", "conjunction", "adjective"]
KIND_OF = {"the": "determiner", "cat": "animal", "sat": "verb", "on": "preposition", "mat": "place",
           "because": "conjunction", "it": "pronoun", "was": "verb", "tired": "adjective"}
# what a word of one kind looks for: (query kind, key kind) -> score
RELATIONS = {
    ("pronoun", "animal"): 5.0,  # "it" refers to "cat"
    ("verb", "animal"): 3.5, ("verb", "pronoun"): 2.0,  # a verb looks for its subject
    ("preposition", "place"): 4.0, ("place", "preposition"): 3.0,  # "on" <-> "mat"
    ("determiner", "animal"): 3.0, ("determiner", "place"): 3.0,  # "the" looks for a noun
    ("adjective", "pronoun"): 3.0, ("adjective", "animal"): 3.0,  # "tired" describes "it"/"cat"
    ("animal", "verb"): 2.5, ("animal", "adjective"): 1.5,  # "cat" -> what it does / is
    ("conjunction", "verb"): 2.5,  # "because" links the two verbs
}


def word_kinds(tokens=SENTENCE) -> np.ndarray:
    """One-hot word kinds, tokens as rows: (T, len(KINDS))."""
    x = np.zeros((len(tokens), len(KINDS)))  # (T, 8)
    x[np.arange(len(tokens)), [KINDS.index(KIND_OF[t]) for t in tokens]] = 1.0
    return x


def relation_matrix() -> np.ndarray:
    """R[a, b] = score of a query of kind a for a key of kind b (1 on the diagonal: self)."""
    r = np.eye(len(KINDS))  # (8, 8)
    for (a, b), score in RELATIONS.items():
        r[KINDS.index(a), KINDS.index(b)] = score
    return r


def toy_attention(tokens=SENTENCE):
    """Attention weights of the hand-built example: (tokens, P (T, T)).

    X = one-hot word kinds (T, 8); Q = X W_qᵀ with W_q = √8 · Rᵀ, K = X W_kᵀ with W_k = I, so
    the score q_i · k_j / √8 = R[kind(i), kind(j)], and P = softmax over keys.
    """
    x = ag.tensor(word_kinds(tokens))  # (T, 8)
    d = x.shape[-1]
    q = F.linear(x, ag.tensor(math.sqrt(d) * relation_matrix().T))  # (T, 8)
    k = F.linear(x, ag.tensor(np.eye(d)))  # (T, 8)
    _, weights = F.scaled_dot_product_attention(q, k, x, return_weights=True)  # (T, T)
    return tokens, weights.data


@figure("score_matrix", "attention weights on a labelled sentence (hand-built word kinds and W_q)")
def score_matrix():
    tokens, weights = toy_attention()
    return viz.heatmap(weights, tokens, annotate=True, figsize=(7.2, 6.2),
                       title="softmax(Q Kᵀ/√d): each row is one word's attention over the sentence\n"
                             "(hand-set W_q: 'it' looks for animals, 'on' for places, verbs for subjects)")


HEAD_NAMES = ["previous word", "word relations", "nouns", "first token"]


def hand_set_heads(tokens=SENTENCE, head_dim: int = 12):
    """A 4-head MultiheadAttention whose packed weights are set by hand, one relation per head.

    Input x (T, E) = [one-hot word kind (8) | one-hot position (head_dim) | zeros], E = 4 head_dim.
    Head 0 attends to the previous word (positions), head 1 uses RELATIONS (word kinds), head 2
    looks for nouns whatever the query (a query bias), head 3 for the first token (a "sink").
    Returns (module, x); W_v = I and W_o = I, biases as described.
    """
    T, H, D = len(tokens), 4, head_dim
    E, nk = H * D, len(KINDS)
    if T > D:
        raise ValueError(f"{T} tokens but only head_dim = {D} one-hot positions; use a larger head_dim")
    pos = nk + np.arange(T)  # input column of each position's one-hot
    strong = 6.0 * math.sqrt(D)  # a score of 6 after the 1/√D scale
    w_q, w_k, b_q = np.zeros((E, E)), np.zeros((E, E)), np.zeros(E)  # rows: head h uses h·D..(h+1)·D
    w_q[np.maximum(np.arange(T) - 1, 0), pos] = strong  # head 0: query at i asks for position i - 1
    w_k[np.arange(T), pos] = 1.0
    w_q[D:D + nk, :nk] = math.sqrt(D) * relation_matrix().T  # head 1: the relation matrix
    w_k[D:D + nk, :nk] = np.eye(nk)
    b_q[2 * D + KINDS.index("animal")] = b_q[2 * D + KINDS.index("place")] = strong  # head 2: nouns
    w_k[2 * D:2 * D + nk, :nk] = np.eye(nk)
    b_q[3 * D] = strong  # head 3: every query asks for position 0
    w_k[3 * D, pos[0]] = 1.0
    mha = nn.MultiheadAttention(E, H, batch_first=True, dtype=np.float64)
    mha.load_state_dict({
        "in_proj_weight": np.concatenate([w_q, w_k, np.eye(E)]),  # (3E, E): W_q, W_k, W_v
        "in_proj_bias": np.concatenate([b_q, np.zeros(2 * E)]),  # (3E,)
        "out_proj.weight": np.eye(E), "out_proj.bias": np.zeros(E),
    })
    x = np.zeros((T, E))  # (T, E)
    x[:, :nk] = word_kinds(tokens)
    x[np.arange(T), pos] = 1.0
    return mha, x


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
