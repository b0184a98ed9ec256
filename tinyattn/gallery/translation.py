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
