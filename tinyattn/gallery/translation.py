"""Figures for notebook 08: the masks of a padded batch, training, and the trained translator's
cross-attention next to the known alignment.

Nothing is trained here: the trained figures load the committed checkpoint
``tinyattn/checkpoints/translate.npz`` and its training log (written by
``python -m tinyattn.train --task translate --seed 0 --save ...``).
"""

from __future__ import annotations

import functools

import numpy as np

from .. import data, nn, viz
from .registry import figure
from ..models import alignment_score, cross_attention_maps
from ..train import load_translator

SHOWN_FORMATS = ("weekday_the_dth_of", "month_words", "day_mon_yy", "us_slash", "eu_dots")


@functools.lru_cache(maxsize=1)
def committed():
    """(model, config, log, test split) of the committed translate run (the dates it was scored on)."""
    model, config, log = load_translator()
    _, _, test = data.date_splits(config.n_train, config.n_val, config.n_test, config.seed)
    return model, config, log, test


def first_of_each_format(split: data.DateSplit, formats=SHOWN_FORMATS) -> list:
    """The index of the first example of each of ``formats`` in ``split``."""
    return [split.formats.index(f) for f in formats]


def example_maps(split: data.DateSplit, i: int, model=None) -> np.ndarray:
    """Cross-attention of example i: (layers, H, 11, len(source)), rows = predicted characters."""
    model = committed()[0] if model is None else model
    n = len(split.sources[i])
    return cross_attention_maps(model, split.src[i:i + 1, :n], split.tgt[i:i + 1])[:, 0]  # (layers, H, 11, n)


def source_labels(text: str) -> list:
    """Column labels for a source: its characters, with spaces drawn as ``␣``."""
    return ["␣" if c == " " else c for c in text]


def output_labels(split: data.DateSplit, i: int) -> list:
    """Row labels: the character each decoder position predicts (``</s>`` for the last)."""
    return list(split.targets[i]) + ["</s>"]


def padded_batch(n: int = 3):
    """A real batch of n test sources of different lengths, padded: (src ids (n, S), texts)."""
    _, _, _, test = committed()
    picks = first_of_each_format(test, ("month_day_year", "day_mon_yy", "us_slash"))[:n]
    texts = [test.sources[i] for i in picks]
    return data.encode_source(texts), texts, [test.targets[i] for i in picks]


@figure("translation_masks", "the three masks of an encoder-decoder for a real padded batch")
def translation_masks():
    import matplotlib.pyplot as plt

    src, texts, targets = padded_batch()
    b = int(np.argmin([len(t) for t in texts]))  # the most padded example
    S, T = src.shape[1], data.TARGET_LEN + 1
    src_labels = source_labels(texts[b]) + ["·"] * (S - len(texts[b]))  # "·" = padding
    tgt_in = ["<s>"] + list(targets[b])  # the decoder's input under teacher forcing
    pad = src[b] == data.PAD  # (S,) True = may NOT attend, as MultiheadAttention reads it
    masks = [("encoder self-attention\nsrc_key_padding_mask", np.broadcast_to(pad, (S, S)), src_labels,
              src_labels),
             ("decoder self-attention\ntgt_mask (causal)", nn.causal_mask(T), tgt_in, tgt_in),
             ("cross-attention\nmemory_key_padding_mask", np.broadcast_to(pad, (T, S)), tgt_in, src_labels)]
    fig, axes = plt.subplots(1, 3, figsize=(17, 6.4), constrained_layout=True,
                             gridspec_kw={"width_ratios": [S, T, S]})
    for ax, (title, m, rows, cols) in zip(axes, masks):
        viz.mask_picture(m, rows, cols, title=title, polarity="block", ax=ax)
    fig.suptitle(f"masks for {texts[b]!r} padded to {S} characters in a batch of {len(texts)} "
                 f"(· = padding, ␣ = space)")
    return fig


@figure("translation_training", "the committed translate run: loss and validation exact match")
def translation_training():
    import matplotlib.pyplot as plt

    _, _, log, _ = committed()
    steps = np.array([h["step"] for h in log["history"]])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    viz.curves({"training loss (label smoothing 0.1)": (steps, [h["loss"] for h in log["history"]])},
               "step", "cross-entropy", ax=left, title="teacher-forced loss")
    viz.curves({"validation exact match (greedy)": (steps, [h["val_exact_match"] for h in log["history"]])},
               "step", "exact match", ax=right,
               title=f"held-out test exact match {log['result']['test_exact_match']:.3f}")
    return fig


@figure("translation_cross_attention", "trained cross-attention for five date formats vs the known alignment")
def translation_cross_attention():
    import matplotlib.pyplot as plt

    model, _, _, test = committed()
    picks = first_of_each_format(test)
    maps = cross_attention_maps(model, test.src[:300], test.tgt[:300])  # (layers, 300, H, 11, S)
    scores = alignment_score(maps, test.spans[:300])  # (layers, H)
    layer = int(np.argmax(scores.mean(axis=1)))
    fig, axes = plt.subplots(len(picks), 2, figsize=(13, 2.9 * len(picks)), constrained_layout=True,
                             gridspec_kw={"width_ratios": [1, 1]})
    for row, i in enumerate(picks):
        cols = source_labels(test.sources[i])
        rows = output_labels(test, i)
        known = np.vstack([data.alignment_matrix(test, i), np.zeros((1, len(cols)))])  # (11, n)
        learned = example_maps(test, i, model)[layer].mean(axis=0)  # (11, n)
        viz.heatmap(known, rows, cols, ax=axes[row, 0], colorbar=False, vmin=0, vmax=1,
                    title=f"known alignment: {test.sources[i]!r}", xlabel="source character",
                    ylabel="output character")
        viz.heatmap(learned, rows, cols, ax=axes[row, 1], colorbar=False, vmin=0, vmax=1,
                    title=f"decoder layer {layer}, mean of heads", xlabel="source character",
                    ylabel="output character")
        for ax in axes[row]:
            ax.set_aspect("auto")
    fig.suptitle(f"cross-attention of the trained translator (alignment score of layer {layer}: "
                 f"{scores[layer].mean():.2f} on 300 test dates)")
    return fig


VIEW_FORMAT = "weekday_the_dth_of"


@figure("translation_head_view", "interactive head view (HTML) of the translator's cross-attention on one date")
def translation_head_view():
    model, _, _, test = committed()
    i = first_of_each_format(test, (VIEW_FORMAT,))[0]
    maps = example_maps(test, i, model)  # (layers, H, 11, n)
    return viz.head_view(output_labels(test, i), maps, key_tokens=source_labels(test.sources[i]),
                         layer_names=[f"decoder layer {k}" for k in range(len(maps))],
                         title=f"cross-attention of the trained translator: {test.sources[i]!r} -> "
                               f"{test.targets[i]} (left: the character being predicted, right: the source)")


def _flow_box(ax, x, y, w, h, text, color, fontsize=8.5):
    """A rounded box centred at (x, y) with a label; returns (bottom, top) y of the box."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=color, edgecolor="#333333", lw=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    return y - h / 2, y + h / 2


def _flow_arrow(ax, start, end, label=None, color="#333333", rad=0.0, label_side="right"):
    """An arrow from ``start`` to ``end``, optionally labelled with a shape at its middle."""
    from matplotlib.patches import FancyArrowPatch

    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, lw=1.2, color=color,
                                 connectionstyle=f"arc3,rad={rad}"))
    if label:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        dx = 0.08 if label_side == "right" else -0.08
        ax.text(mx + dx, my, label, ha="left" if label_side == "right" else "right", va="center",
                fontsize=7.5, color="#555555", family="monospace")


def _flow_skip(ax, x, x_side, y_from, y_to):
    """A residual connection: from the stream at height ``y_from`` around the block to the sum at ``y_to``."""
    from matplotlib.patches import FancyArrowPatch

    ax.plot([x, x_side, x_side], [y_from, y_from, y_to], color="#888888", lw=1, ls="-")
    ax.add_patch(FancyArrowPatch((x_side, y_to), (x_side + 0.12, y_to), arrowstyle="-|>", mutation_scale=9,
                                 lw=1, color="#888888"))


@figure("encoder_decoder_flow", "the translator's data flow: encoder, decoder, cross-attention, with shapes")
def encoder_decoder_flow():
    """The whole encoder-decoder of notebook 08 as a data-flow diagram, shapes in the notebooks' notation.

    N sequences, S source characters, T target positions, E = 64, H = 4 heads of D = 16, F = 128,
    14 target symbols; both stacks are pre-norm (LayerNorm before each block, one more at the end).
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 9.2), constrained_layout=True)
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 10.6)
    ax.axis("off")
    enc, dec, w = 2.9, 7.9, 3.6
    emb, attn, ff, norm, io = "#fde2c4", "#cfe3f7", "#d6efd0", "#eeeeee", "#ffffff"

    # inputs and embeddings
    _flow_box(ax, enc, 0.45, w, 0.5, "source ids  'june 22, 2004'", io)
    _flow_box(ax, dec, 0.45, w, 0.5, "target ids  <s> y1 … y10  (shifted right)", io)
    for x, name in ((enc, "source"), (dec, "target")):
        _flow_box(ax, x, 1.45, w, 0.6, f"{name} embedding · √E  +  PE", emb)
        _flow_arrow(ax, (x, 0.7), (x, 1.15), "(N, S)" if x == enc else "(N, T)")

    # the encoder layer (x 2)
    ax.add_patch(plt.Rectangle((enc - w / 2 - 0.25, 2.25), w + 0.5, 3.55, fill=False, ls="--", lw=1.2,
                               ec="#888888"))
    ax.text(enc - w / 2 - 0.15, 5.62, "encoder layer  × 2", fontsize=9, color="#666666", va="center")
    _flow_arrow(ax, (enc, 1.75), (enc, 2.6), "X (N, S, E)")
    _flow_box(ax, enc, 2.95, w, 0.6, "LayerNorm → self-attention, H = 4 heads\nP: (N, H, S, S), "
              "source padding masked", attn)
    _flow_box(ax, enc, 3.85, w, 0.3, "+ residual", norm, fontsize=8)
    _flow_box(ax, enc, 4.7, w, 0.6, "LayerNorm → feed-forward\nE → F = 128 → E, per position", ff)
    _flow_arrow(ax, (enc, 3.25), (enc, 3.7))
    _flow_arrow(ax, (enc, 4.0), (enc, 4.4))
    for y0, y1 in ((2.5, 3.85), (4.2, 5.35)):
        _flow_skip(ax, enc, enc - w / 2 - 0.12, y0, y1)
    _flow_box(ax, enc, 5.35, w, 0.3, "+ residual", norm, fontsize=8)
    _flow_box(ax, enc, 6.45, w, 0.5, "final LayerNorm", norm)
    _flow_arrow(ax, (enc, 5.5), (enc, 6.2), "(N, S, E)")
    _flow_box(ax, enc, 7.55, w, 0.6, "memory  X_enc\n(N, S, E): one vector per source character", "#f7d6e0")
    _flow_arrow(ax, (enc, 6.7), (enc, 7.25))

    # the decoder layer (x 2)
    ax.add_patch(plt.Rectangle((dec - w / 2 - 0.25, 2.25), w + 0.5, 5.0, fill=False, ls="--", lw=1.2,
                               ec="#888888"))
    ax.text(dec - w / 2 - 0.15, 7.07, "decoder layer  × 2", fontsize=9, color="#666666", va="center")
    _flow_arrow(ax, (dec, 1.75), (dec, 2.6), "X_dec (N, T, E)")
    _flow_box(ax, dec, 2.95, w, 0.6, "LayerNorm → masked self-attention\nP: (N, H, T, T), causal", attn)
    _flow_box(ax, dec, 3.7, w, 0.3, "+ residual", norm, fontsize=8)
    _flow_box(ax, dec, 4.55, w, 0.75, "LayerNorm → cross-attention\nQ from the decoder (N, H, T, D)\n"
              "K, V from the memory (N, H, S, D); P: (N, H, T, S)", "#b9d4f1")
    _flow_box(ax, dec, 5.35, w, 0.3, "+ residual", norm, fontsize=8)
    _flow_box(ax, dec, 6.2, w, 0.6, "LayerNorm → feed-forward\nE → F = 128 → E, per position", ff)
    _flow_box(ax, dec, 6.85, w, 0.3, "+ residual", norm, fontsize=8)
    for y0, y1 in ((3.25, 3.55), (3.85, 4.17), (4.93, 5.2), (5.5, 5.9), (6.5, 6.7)):
        _flow_arrow(ax, (dec, y0), (dec, y1))
    for y0, y1 in ((2.5, 3.7), (4.02, 5.35), (5.7, 6.85)):
        _flow_skip(ax, dec, dec - w / 2 - 0.12, y0, y1)
    # the memory feeds the cross-attention of every decoder layer
    _flow_arrow(ax, (enc + w / 2, 7.55), (dec - w / 2, 4.55), color="#c2185b", rad=-0.25)
    ax.text(5.45, 8.3, "memory (N, S, E) → K, V of the\ncross-attention of every decoder layer",
            fontsize=7.5, color="#c2185b", ha="center", va="center")

    # output
    _flow_box(ax, dec, 7.9, w, 0.45, "final LayerNorm", norm)
    _flow_arrow(ax, (dec, 7.0), (dec, 7.67), "(N, T, E)")
    _flow_box(ax, dec, 8.8, w, 0.55, "linear head  E → 14 target symbols", emb)
    _flow_arrow(ax, (dec, 8.12), (dec, 8.52))
    _flow_box(ax, dec, 9.85, w, 0.6, "softmax → next character, position by position\n"
              "logits (N, T, 14): '2004-06-22' </s>", io)
    _flow_arrow(ax, (dec, 9.07), (dec, 9.55), "(N, T, 14)")
    ax.text(enc, 9.6, "Encoder: reads the whole source at once,\nevery character attends to every other.\n"
            "Decoder: writes one character at a time;\nmasked self-attention sees only the past,\n"
            "cross-attention looks across at the memory.", fontsize=8.5, ha="center", va="center",
            color="#333333")
    ax.set_title("notebook 08's translator: data flow and shapes  (E = 64, H = 4, D = E/H = 16, pre-norm;"
                 " grey lines: residual connections)", fontsize=10)
    return fig
