"""Figures for notebook 06: what a tiny encoder's attention learns on reverse, sort and recall.

Nothing is trained here: the figures load the checkpoints and training logs that
``python -m tinyattn.train --task T --save tinyattn/checkpoints/T.npz`` wrote (package data
in ``tinyattn/checkpoints/``). "Before training" is the same model at its seeded initialization.
"""

from __future__ import annotations


import numpy as np

from .. import data, viz
from ..examples import example, head_overlaps, slot_attention, slot_labels, training_log
from .registry import figure


def _trained_attention(task: str):
    import matplotlib.pyplot as plt

    tokens, answers = example(task)
    spec = data.task_spec(task)
    maps = slot_attention(task, tokens)
    ideal = data.ideal_attention(task, tokens[None])[0, :, :spec.input_len + 1]  # (A, T+1)
    cols = data.decode(tokens[:spec.input_len + 1])
    rows = slot_labels(task, answers)
    after = maps["after training"]  # (layers, H, A, T+1)
    overlap = head_overlaps(task)["after training"]  # (layers, H)
    best_layer, best_head = np.unravel_index(np.argmax(overlap), overlap.shape)
    panels = [("ideal", ideal),
              ("before training\nlast layer, mean of heads", maps["before training"][-1].mean(axis=0))]
    panels += [(f"after training\nlayer {layer}, mean of heads", after[layer].mean(axis=0))
               for layer in range(after.shape[0])]
    best_title = (f"after training: layer {best_layer} head {best_head}\n"
                  f"(overlap with ideal {overlap[best_layer, best_head]:.2f})")
    panels.append((best_title, after[best_layer, best_head]))
    height = 1.2 + 0.3 * len(rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels), height + 0.9),
                             constrained_layout=True)
    for ax, (title, matrix) in zip(axes, panels):
        viz.heatmap(matrix, rows, cols, ax=ax, title=title, vmin=0.0, vmax=1.0, colorbar=False,
                    xlabel="given token", ylabel="answer slot")
        ax.set_aspect("auto")
    fig.colorbar(axes[-1].images[0], ax=axes, shrink=0.9, label="weight")
    fig.suptitle(f"{task}: where the answer slots look ({' '.join(cols)} ?…)")
    return fig


for _task, _what in (("reverse", "the anti-diagonal"), ("sort", "the position of the i-th smallest"),
                     ("recall", "the pair whose key is the query")):
    figure(f"trained_attention_{_task}",
           f"{_task}: slot attention before/after training next to the ideal ({_what})")(
        lambda task=_task: _trained_attention(task))


@figure("training_curves", "training loss and batch accuracy of the committed runs on the three tasks")
def training_curves():
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.0), constrained_layout=True)
    losses, accuracies = {}, {}
    for task in data.TASKS:
        log = training_log(task)
        steps = np.array([h["step"] for h in log["history"]])
        name = f"{task} (test acc {log['result']['test_accuracy']:.3f}, {log['result']['seconds']:.0f} s)"
        losses[name] = (steps, np.array([h["loss"] for h in log["history"]]))
        accuracies[task] = (steps, np.array([h["accuracy"] for h in log["history"]]))
    viz.curves(losses, "step", "cross-entropy (mean since the previous point)", logy=True, ax=left,
               title="training loss", markers=False)
    viz.curves(accuracies, "step", "answer-token accuracy on the batches", ax=right,
               title="training accuracy (chance 0.1)", markers=False)
    right.axhline(0.1, color="grey", linestyle=":", linewidth=1)
    return fig
