"""Figures for notebooks 03-05: why scores are scaled by 1/√d_k, the shapes of multi-head
attention, the two data flows of the encoder layer, and post-norm vs pre-norm gradients.

The experiments behind the plots (``scaling_stats``, ``depth_stats``) are plain functions, so
the notebooks print the same numbers the figures draw and the tests can check them.
"""

from __future__ import annotations

import numpy as np

from .. import viz
from ..examples import DEPTHS, depth_stats, depth_sweep, scaling_stats
from .registry import figure


# ----------------------------------------------------------------------------------------------
# the experiments
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------

@figure("scaling_experiment", "why divide by √d_k: score variance, softmax saturation and its "
                              "vanishing Jacobian vs d_k")
def scaling_experiment():
    import matplotlib.pyplot as plt

    s = scaling_stats()
    d_k = s["d_k"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    viz.curves({"q·k": (d_k, s["var_unscaled"]), "q·k / √d_k": (d_k, s["var_scaled"]),
                "d_k (theory)": (d_k, d_k.astype(float))},
               "d_k", "variance of the scores", logx=True, logy=True, ax=axes[0])
    viz.curves({"q·k": (d_k, s["max_weight_unscaled"]), "q·k / √d_k": (d_k, s["max_weight_scaled"]),
                "uniform (1/16)": (d_k, np.full(len(d_k), 1 / 16))},
               "d_k", "mean largest softmax weight", logx=True, ax=axes[1])
    viz.curves({"q·k": (d_k, s["jacobian_unscaled"]), "q·k / √d_k": (d_k, s["jacobian_scaled"])},
               "d_k", "mean ‖diag(p) − p pᵀ‖_F", logx=True, ax=axes[2])
    for ax in axes:
        ax.set_xscale("log", base=2)
    fig.suptitle("Unscaled scores have variance d_k: the softmax saturates and its Jacobian "
                 "(the gradient reaching the scores) vanishes. 16 keys, q, k ~ N(0, I)", fontsize=10)
    return fig


@figure("prenorm_vs_postnorm", "post-norm vs pre-norm at initialization: gradient norms across "
                               "depth and the growing residual stream")
def prenorm_vs_postnorm():
    import matplotlib.pyplot as plt

    seeds, depth = (0, 1, 2), 24
    names = {False: "post-norm", True: "pre-norm"}
    runs = {nf: [depth_stats(nf, depth, seed=s) for s in seeds] for nf in names}
    mean = {key: {names[nf]: np.mean([r[key] for r in runs[nf]], axis=0) for nf in names}
            for key in ("param_grad", "residual_rms")}
    sweep = {names[nf]: (np.array(DEPTHS), depth_sweep(nf, seeds=seeds)) for nf in names}
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    viz.curves(mean["param_grad"], "layer (0 = nearest the input)", "‖grad of the layer's weights‖",
               title=f"{depth} layers", ax=axes[0])
    viz.curves(mean["residual_rms"], "layer", "RMS of the layer's input", title="the residual stream",
               ax=axes[1])
    viz.curves(sweep, "number of layers", "‖grad of the last layer's weights‖", title="last layer vs depth",
               logx=True, logy=True, ax=axes[2])
    axes[2].set_xscale("log", base=2)
    fig.suptitle(f"At initialization (PyTorch's default init, d_model 32, mean of {len(seeds)} seeds)",
                 fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------
# diagrams
# ----------------------------------------------------------------------------------------------

HEAD_COLORS = ("#e76f51", "#2a9d8f", "#e9c46a", "#6a4c93")


def _cells(ax, x: float, y: float, rows: int, cols: int, colors, cell: float = 0.22) -> tuple:
    """Draw a rows x cols block of cells with its top-left corner at (x, y); column c gets
    colors[c]. Returns (width, height)."""
    from matplotlib.patches import Rectangle

    for r in range(rows):
        for c in range(cols):
            ax.add_patch(Rectangle((x + c * cell, y - (r + 1) * cell), cell, cell, facecolor=colors[c],
                                   edgecolor="white", linewidth=0.8))
    return cols * cell, rows * cell


def _arrow(ax, x0: float, x1: float, y: float, text: str) -> None:
    ax.annotate("", xy=(x1, y), xytext=(x0, y), arrowprops=dict(arrowstyle="-|>", color="#444444"))
    ax.text((x0 + x1) / 2, y - 0.15, text, ha="center", va="top", fontsize=7.5)


@figure("head_split", "multi-head attention as shapes: project, split into heads, attend per head, "
                      "concatenate, project with W_o")
def head_split():
    import matplotlib.pyplot as plt

    L, H, D = 4, 3, 3
    E, cell, gap = H * D, 0.22, 1.9
    band = [HEAD_COLORS[c // D] for c in range(E)]
    fig, ax = plt.subplots(figsize=(14, 3.2))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.98)
    ax.set_axis_off()
    top, x, h = 2.0, 0.0, L * cell
    stages = []

    def block(cols, colors_of_head, title, stacked):
        nonlocal x
        for i in range(H if stacked else 1):
            _cells(ax, x, top - i * (h + 0.25), L, cols, colors_of_head(i), cell)
        stages.append((x, cols * cell, title))
        x += cols * cell + gap

    block(E, lambda i: ["#adb5bd"] * E, "x\n(N, L, E)", False)
    block(E, lambda i: band, "Q = x W_qᵀ + b_q\n(N, L, E): column\ngroups = heads", False)
    block(D, lambda i: [HEAD_COLORS[i]] * D, "Q_h, h = 1..H\n(N, H, L, D)", True)
    block(L, lambda i: [HEAD_COLORS[i]] * L, "P_h = softmax(Q_h K_hᵀ/√D)\n(N, H, L, S)", True)
    block(D, lambda i: [HEAD_COLORS[i]] * D, "head_h = P_h V_h\n(N, H, L, D)", True)
    block(E, lambda i: band, "concat(head_1..head_H)\n(N, L, E)", False)
    block(E, lambda i: ["#6c757d"] * E, "concat W_oᵀ + b_o\n(N, L, E): heads mixed", False)
    labels = ["linear\n(W_q)", "reshape\n(N, L, H, D)\ntranspose(1, 2)", "scores,\nsoftmax",
              "@ V_h", "transpose(1, 2)\nreshape\n(N, L, E)", "out_proj\n(W_o)"]
    for (x0, w0, _), (x1, _, _), text in zip(stages[:-1], stages[1:], labels):
        _arrow(ax, x0 + w0 + 0.1, x1 - 0.1, top - h / 2, text)
    for x0, w0, text in stages:
        ax.text(x0 + w0 / 2, top + 0.12, text, ha="center", va="bottom", fontsize=8)
    bottom = top - H * (h + 0.25)
    ax.text(x / 2, bottom - 0.05,
            f"E = H·D: here L = {L} tokens and H = {H} heads of D = {D} columns each (K and V are split "
            f"the same way).\nEach head attends on its own; only W_o mixes the heads.",
            ha="center", fontsize=8.5, va="top")
    ax.set_xlim(-0.2, x - gap + 0.2)
    ax.set_ylim(bottom - 0.6, top + 0.95)
    ax.set_aspect("equal")
    return fig


def _flow(ax, x: float, steps, skips, title: str, identity_path: bool) -> None:
    """One encoder-layer data flow drawn bottom to top: steps are labels (None = an addition ⊕);
    skips are (tap, add) pairs: a residual branching off above step ``tap`` into step ``add``."""
    from matplotlib.patches import FancyBboxPatch

    colors = {"LayerNorm": "#ffd166", "Multi-head": "#bde0fe", "Feed-forward": "#caffbf"}
    for i, label in enumerate(steps):
        if i + 1 < len(steps):
            ax.annotate("", xy=(x, i + 1 - 0.28), xytext=(x, i + 0.28),
                        arrowprops=dict(arrowstyle="-|>", color="#444444"))
        if label is None:
            ax.text(x, i, "+", ha="center", va="center", fontsize=13,
                    bbox=dict(boxstyle="circle,pad=0.15", facecolor="white", edgecolor="#444444"))
            continue
        face = next((c for key, c in colors.items() if label.startswith(key)), "#f1f3f5")
        ax.add_patch(FancyBboxPatch((x - 1.45, i - 0.25), 2.9, 0.5, boxstyle="round,pad=0.02",
                                    facecolor=face, edgecolor="#444444"))
        ax.text(x, i, label, ha="center", va="center", fontsize=8.5)
    for tap, add in skips:
        color = "#2a9d8f" if identity_path else "#444444"
        ax.plot([x, x + 1.75, x + 1.75], [tap + 0.5, tap + 0.5, add], color=color, lw=1.6)
        ax.annotate("", xy=(x + 0.17, add), xytext=(x + 1.75, add),
                    arrowprops=dict(arrowstyle="-|>", color=color, lw=1.6))
    ax.text(x, len(steps) - 0.2, title, ha="center", va="bottom", fontsize=10, weight="bold")


@figure("encoder_layer_diagram", "the encoder layer's two data flows: post-norm (PyTorch's default) "
                                 "and pre-norm (norm_first=True)")
def encoder_layer_diagram():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.4))
    ax.set_axis_off()
    _flow(ax, 0.0, ["x", "Multi-head self-attention", None, "LayerNorm (norm1)",
                    "Feed-forward (linear1, act, linear2)", None, "LayerNorm (norm2)", "output"],
          [(0, 2), (3, 5)], "post-norm (default)", identity_path=False)
    _flow(ax, 5.0, ["x", "LayerNorm (norm1)", "Multi-head self-attention", None, "LayerNorm (norm2)",
                    "Feed-forward (linear1, act, linear2)", None, "output"],
          [(0, 3), (3, 6)], "pre-norm (norm_first=True)", identity_path=True)
    ax.text(2.5, -0.5, "post-norm: x = norm1(x + SA(x)); x = norm2(x + FF(x)) — every path from the "
            "output back to x passes through a LayerNorm.\n"
            "pre-norm: x = x + SA(norm1(x)); x = x + FF(norm2(x)) — the green residual path is the "
            "identity. Dropout omitted.",
            ha="center", va="top", fontsize=8.5)
    ax.set_xlim(-1.6, 7.0)
    ax.set_ylim(-1.2, 7.6)
    return fig


# ----------------------------------------------------------------------------------------------
# rotary position embeddings
# ----------------------------------------------------------------------------------------------

@figure("rotary", "rotary position embeddings: a pair rotated by position, and q·k depending only on "
                  "the offset")
def rotary():
    import matplotlib.pyplot as plt

    from .. import autograd as ag
    from ..nn import functional as F

    rng = np.random.default_rng(0)
    D, L = 16, 24
    q, k = rng.standard_normal(D), rng.standard_normal(D)
    rot_q = F.apply_rotary_pos_emb(ag.tensor(np.tile(q, (L, 1)))).data  # (L, D): q at every position
    rot_k = F.apply_rotary_pos_emb(ag.tensor(np.tile(k, (L, 1)))).data  # (L, D)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.3), constrained_layout=True)
    for pair, color in ((0, "#e76f51"), (1, "#2a9d8f")):
        xs, ys = rot_q[:10, 2 * pair], rot_q[:10, 2 * pair + 1]
        axes[0].plot(xs, ys, marker="o", ms=4, color=color, label=f"pair {pair}: θ = {10000 ** (-2 * pair / D):.3g}")
        for p in (0, 3, 9):
            axes[0].annotate(f"p={p}", (xs[p], ys[p]), fontsize=7, color=color)
    axes[0].set_aspect("equal")
    axes[0].grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title("the same q at positions p = 0..9: each pair turns by p·θ_i", fontsize=10)
    scores = rot_q @ rot_k.T  # (L, L)
    bound = np.abs(scores).max()
    viz.heatmap(scores, [str(p) for p in range(L)], ax=axes[1], cmap="RdBu_r", vmin=-bound, vmax=bound,
                xlabel="key position j", ylabel="query position p",
                title="rope(q)_p · rope(k)_j: constant along diagonals")
    offsets = np.arange(-L + 1, L)
    spread = [np.ptp(np.diagonal(scores, offset=-o)) for o in offsets]
    axes[2].plot(offsets, [np.diagonal(scores, offset=-o)[0] for o in offsets], color="#264653",
                 label="score at offset p − j")
    axes[2].plot(offsets, np.maximum(spread, 1e-18), color="#e76f51", label="spread along the diagonal")
    axes[2].set_yscale("symlog", linthresh=1e-15)
    axes[2].set_xlabel("offset p − j")
    axes[2].grid(True, alpha=0.3)
    axes[2].legend(fontsize=8)
    axes[2].set_title("the score depends on p − j only (spread: round-off)", fontsize=10)
    fig.suptitle(f"Rotary position embeddings (D = {D}): rotate q and k by their positions; "
                 "their dot product then sees only the relative position", fontsize=10)
    return fig
