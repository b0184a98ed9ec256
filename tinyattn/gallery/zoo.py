"""Figures of the efficient-attention zoo: each approximation's error against the knob that controls it."""

from __future__ import annotations

import numpy as np

from .. import efficient as eff
from ..autograd import Tensor
from ..efficient.common import dense_attention
from .registry import figure

KNOBS = {  # variant -> (knob label, knob values)
    "performer": ("random features m", (16, 32, 64, 128, 256, 512, 1024)),
    "linformer": ("projected length k (S = 256)", (8, 16, 32, 64, 128, 256)),
    "nystrom": ("landmarks m (6 pinv iterations)", (4, 8, 16, 32, 64, 128)),
    "lsh": ("hash rounds (16 buckets, chunks of 32)", (1, 2, 3, 4, 6, 8)),
    "block_sparse": ("window (blocks of 16, 1 global)", (1, 2, 3, 4, 6)),
}


def zoo_knob_errors(L: int = 256, D: int = 16, seed: int = 0) -> dict:
    """Relative RMS error |out − exact| / |exact| of each variant at each knob value, on one seeded
    input q, k ~ 0.5 N(0, 1), v ~ N(0, 1) of shape (4, L, D). Exact is softmax attention (for LSH,
    whose keys are the normalized queries, softmax attention of q against q / |q|)."""
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((4, L, D)) * c for c in (0.5, 0.5, 1.0))
    tq, tk, tv = Tensor(q), Tensor(k), Tensor(v)
    exact = dense_attention(q, k, v)
    exact_lsh = dense_attention(q, q / np.linalg.norm(q, axis=-1, keepdims=True), v)

    def err(out, ref=exact):
        return float(np.sqrt(np.mean((out.numpy() - ref) ** 2) / np.mean(ref ** 2)))

    runs = {
        "performer": lambda m: np.mean([err(eff.performer_attention(tq, tk, tv, num_features=m, seed=s))
                                        for s in range(3)]),
        "linformer": lambda p: np.mean([err(eff.linformer_attention(tq, tk, tv, proj_len=p, seed=s))
                                        for s in range(3)]),
        "nystrom": lambda m: err(eff.nystrom_attention(tq, tk, tv, num_landmarks=m, pinv_iterations=6)),
        "lsh": lambda n: err(eff.lsh_attention(tq, tq, tv, n_buckets=16, n_rounds=n, chunk_size=32), exact_lsh),
        "block_sparse": lambda w: err(eff.block_sparse_attention(tq, tk, tv, block=16, window=w, num_global=1,
                                                                 num_random=0)),
    }
    return {name: [runs[name](x) for x in KNOBS[name][1]] for name in KNOBS}


@figure("zoo_knobs", "error vs exact attention against each zoo variant's knob (log-log, seeded)")
def zoo_knobs():
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    errors = zoo_knob_errors()
    fig, axes = plt.subplots(1, len(KNOBS), figsize=(16, 3.6), constrained_layout=True)
    for ax, (name, (label, xs)) in zip(axes, KNOBS.items()):
        ys = errors[name]
        if name == "performer":
            ax.loglog(xs, ys[0] * (np.asarray(xs) / xs[0]) ** -0.5, "--", color="#999999", label="∝ 1/√m")
            ax.legend(frameon=False, fontsize=8)
        ax.loglog(xs, ys, "o-", color="#2a9d8f")
        ax.axhline(1.0, color="#e76f51", linestyle=":", linewidth=1)  # the error of predicting zeros
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs], fontsize=8)
        ax.xaxis.set_minor_formatter(NullFormatter())
        variant = eff.get(name)
        ax.set_title(f"{name} ({variant.claim})", fontsize=10)
        ax.set_xlabel(label, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("relative RMS error vs exact")
    fig.suptitle("Efficient-attention zoo: error vs full softmax attention against each variant's knob "
                 "(L = S = 256, D = 16, 4 heads; dotted: error 1, the error of predicting zeros)", fontsize=11)
    return fig
