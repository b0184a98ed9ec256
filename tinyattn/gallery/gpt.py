"""Figures for notebook 09: a GPT's induction heads, from the committed run.

Nothing is trained here: the figures load ``tinyattn/checkpoints/induction.npz`` and its log
``induction.json``, which ``python -m tinyattn.train --task induction --save ...`` wrote.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from .. import data, nn, viz
from ..autograd import no_grad, tensor
from .registry import figure
from ..train import induction_scores, lm_checkpoint_path, load_gpt, load_lm_log, next_token_losses


def smooth(y, window: int = 25) -> np.ndarray:
    """Moving average of a per-step curve (the first window−1 points average what exists)."""
    y = np.asarray(y, dtype=np.float64)
    c = np.cumsum(np.concatenate([[0.0], y]))
    lo = np.maximum(np.arange(1, len(y) + 1) - window, 0)
    return (c[1:] - c[lo]) / (np.arange(1, len(y) + 1) - lo)


def induction_test_rows(n: int = 200):
    """The first n held-out rows of the committed run: (seqs (n, 25), offset (n,))."""
    _, config = load_gpt(lm_checkpoint_path("induction"))
    seqs, offset = data.make_induction_test(config.n_test, config.seed)
    return seqs[:n], offset[:n]


def head_scores(model=None, n: int = 200) -> tuple:
    """(previous-token, induction) scores, each (layers, H), of the committed model on test rows."""
    model = model or load_gpt(lm_checkpoint_path("induction"))[0]
    seqs, offset = induction_test_rows(n)
    return induction_scores(model.attention_maps(seqs[:, :-1]), offset)


def named_heads(model=None) -> tuple:
    """((layer, head) with the highest previous-token score in layer 0, (layer, head) with the
    highest induction score in the last layer)."""
    prev, ind = head_scores(model)
    return (0, int(prev[0].argmax())), (len(ind) - 1, int(ind[-1].argmax()))


class _HeadPatch(nn.Module):
    """``out_proj`` of one attention module, with head ``cols`` of its input recorded or replaced.

    The input of ``out_proj`` is the heads' outputs side by side, (N, T, H·D); head h owns the
    columns h·D .. h·D + D − 1. With ``value`` None the patch records them; with ``value`` (T, D)
    it replaces them, at every position, by that value (for mean ablation).
    """

    def __init__(self, proj, cols: slice, value=None):
        super().__init__()
        self.proj, self.cols, self.value, self.seen = proj, cols, value, []

    def forward(self, x):
        if self.value is None:
            self.seen.append(x.data[..., self.cols].copy())  # (N, T, D)
            return self.proj(x)
        heads = x.data.copy()  # (N, T, H·D)
        heads[..., self.cols] = self.value[:heads.shape[-2]]  # (T, D), the same for every sequence
        return self.proj(tensor(heads))


@contextlib.contextmanager
def mean_ablated_head(model, layer: int, head: int, reference):
    """Inside the block, head ``head`` of block ``layer`` outputs its mean over ``reference``.

    reference (n, T) token rows: the head's output at each position t is replaced by its average
    at position t over those rows (mean ablation), so the rest of the network still receives an
    input of the usual size and direction — only the information the head carries is removed.
    """
    attn = model.blocks[layer].attn
    cols, proj = slice(head * attn.head_dim, (head + 1) * attn.head_dim), attn.out_proj
    attn.out_proj = _HeadPatch(proj, cols)
    try:
        with no_grad():
            model(reference)
        mean = attn.out_proj.seen[0].mean(axis=0)  # (T, D)
        attn.out_proj = _HeadPatch(proj, cols, mean)
        yield model
    finally:
        attn.out_proj = proj


def ablation_losses(n: int = 200, kind: str = "zero") -> dict:
    """Loss on the first part and on the copy, copy accuracy and confidence, per ablated head.

    Returns {"intact": (first, copy, copy accuracy, copy confidence), "L0H1": (...), ...} on the
    first n held-out rows; confidence is the mean probability of the predicted token on the copy.
    ``kind``: "zero" (the head's columns of W_o zeroed, ``GPT.ablate_head``) or "mean" (the head's
    output replaced by its per-position mean over the other held-out rows, ``mean_ablated_head``).
    """
    if kind not in ("zero", "mean"):
        raise ValueError(f"kind must be 'zero' or 'mean', got {kind!r}")
    model, config = load_gpt(lm_checkpoint_path("induction"))
    seqs, _ = data.make_induction_test(config.n_test, config.seed)  # (n_test, 25)
    scored, reference = seqs[:n], seqs[n:, :-1]
    first, repeat = data.induction_positions()  # (24,) masks

    def stats():
        with no_grad():
            per_token, logits = next_token_losses(model, scored)  # (n, 24), (n, 24, vocab)
        z = logits.data[:, repeat].astype(np.float64)  # (n, 9, vocab)
        p = np.exp(z - z.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        correct = z.argmax(-1) == scored[:, 1:][:, repeat]
        return (float(per_token.data[:, first].mean()), float(per_token.data[:, repeat].mean()),
                float(correct.mean()), float(p.max(-1).mean()))

    out = {"intact": stats()}
    for layer, block in enumerate(model.blocks):
        for head in range(block.attn.num_heads):
            ablated = (model.ablate_head(layer, head) if kind == "zero"
                       else mean_ablated_head(model, layer, head, reference))
            with ablated:
                out[f"L{layer}H{head}"] = stats()
    return out


def token_labels(seq) -> list:
    """Token strings of an induction row: "^" for the start token, else the token id."""
    return ["^" if int(t) == data.INDUCTION_BOS else str(int(t)) for t in seq]


@figure("induction_phase_change", "Induction task: loss on the first part and on the copy, and "
        "per-head scores, over training")
def induction_phase_change():
    import matplotlib.pyplot as plt

    log = load_lm_log("induction")
    curve, probes = log["history"]["curve"], log["history"]["probes"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    steps = np.asarray(curve["step"])
    ax1.plot(steps, curve["loss_first"], color="C0", alpha=0.2, lw=0.7)
    ax1.plot(steps, curve["loss_repeat"], color="C1", alpha=0.2, lw=0.7)
    ax1.plot(steps, smooth(curve["loss_first"]), color="C0", label="first part (unpredictable)")
    ax1.plot(steps, smooth(curve["loss_repeat"]), color="C1", label="copy (predictable in context)")
    ax1.axhline(math.log(data.INDUCTION_TOKENS), color="grey", ls=":", label="chance, ln 16")
    ax1.set(xlabel="training step", ylabel="next-token loss (nats)", title="loss per step")
    ax1.grid(True, alpha=0.3)
    ax1.legend()
    ps = np.array([p["step"] for p in probes])
    prev = np.array([p["previous_token"] for p in probes])  # (probes, layers, H)
    ind = np.array([p["induction"] for p in probes])  # (probes, layers, H)
    for layer in range(prev.shape[1]):
        for head in range(prev.shape[2]):
            color = f"C{2 + layer * prev.shape[2] + head}"
            ax2.plot(ps, prev[:, layer, head], color=color, ls="--", label=f"L{layer}H{head} previous-token")
            ax2.plot(ps, ind[:, layer, head], color=color, label=f"L{layer}H{head} induction")
    ax2.set(xlabel="training step", ylabel="mean attention weight", title="per-head scores", ylim=(0, 1))
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=7, ncol=2)
    return fig


@figure("induction_heads", "The layer-0 recency head and the induction head on one held-out sequence")
def induction_heads():
    import matplotlib.pyplot as plt

    model, _ = load_gpt(lm_checkpoint_path("induction"))
    seqs, offset = induction_test_rows(1)
    x = seqs[0, :-1]  # (24,): the model's input
    maps = model.attention_maps(x[None])[:, 0]  # (layers, H, T, T)
    (l0, h0), (l1, h1) = named_heads(model)
    labels = token_labels(x)
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.3), constrained_layout=True)
    viz.heatmap(maps[l0, h0], labels, ax=axes[0], colorbar=False, vmin=0, vmax=1,
                title=f"layer {l0} head {h0}: recency head")
    viz.heatmap(maps[l1, h1], labels, ax=axes[1], vmin=0, vmax=1,
                title=f"layer {l1} head {h1}: induction (copy {int(offset[0])} positions later)")
    return fig


@figure("induction_ablation", "Loss with each head ablated: zeroed (its columns of W_o) and mean-ablated")
def induction_ablation():
    import matplotlib.pyplot as plt

    zero, mean = ablation_losses(kind="zero"), ablation_losses(kind="mean")
    names = list(zero)
    fig, ax = plt.subplots(figsize=(7.5, 3.8), constrained_layout=True)
    pos = np.arange(len(names))
    ax.bar(pos - 0.27, [mean[n][0] for n in names], 0.27, label="first part (mean ablation)", color="#8ecae6")
    ax.bar(pos, [zero[n][1] for n in names], 0.27, label="copy, zero ablation", color="#fb8500")
    ax.bar(pos + 0.27, [mean[n][1] for n in names], 0.27, label="copy, mean ablation", color="#ffb703")
    ax.axhline(math.log(data.INDUCTION_TOKENS), color="grey", ls=":", label="uniform guess, ln 16")
    ax.set_xticks(pos, ["intact"] + [f"without {n}" for n in names[1:]])
    ax.set(ylabel="mean next-token loss (nats)", title="ablating one head at a time")
    ax.legend(fontsize=8)
    return fig
