"""Figures of efficient attention: flash tiles, sliding windows, accuracy, linear vs softmax, scaling.

The scaling figure reads ``tinyattn/measurements/efficient.json`` (written by
``python benchmarks/efficient.py``); every other figure computes its numbers here, seeded.
"""

from __future__ import annotations


import numpy as np

from .. import autograd as ag
from .. import efficient as eff
from .. import viz
from ..examples import attention_io, flash_error_table, linear_vs_softmax_distance, load_benchmark_results
from .registry import figure
from ..nn import functional as F

SENTENCE = "the cat sat on the mat because it was tired of waiting".split()
TILE_COLORS = {eff.TILE_FULL: "#2a9d8f", eff.TILE_MASKED: "#e9c46a", eff.TILE_SKIPPED: "#eeeeee"}
METHOD_STYLE = {"plain": ("plain SDPA", "#264653"), "flash": ("flash, block 128", "#2a9d8f"),
                "flash256": ("flash, block 256", "#3a86ff"),
                "flash_causal": ("flash causal, block 256", "#8ab17d"), "linear": ("linear", "#e76f51"),
                "linear_causal": ("linear, causal", "#f4a261"), "sliding": ("sliding window", "#6a4c93")}


# ----------------------------------------------------------------------------------------------
# flash attention: which tiles are computed
# ----------------------------------------------------------------------------------------------

def below_diagonal(corners: list) -> list:
    """Clip a convex polygon of (j, i) points to the half-plane j ≤ i (Sutherland-Hodgman)."""
    kept = []
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
        inside0, inside1 = x0 <= y0, x1 <= y1
        if inside0:
            kept.append((x0, y0))
        if inside0 != inside1:  # the edge crosses j = i
            t = (y0 - x0) / ((x1 - x0) - (y1 - y0))
            kept.append((x0 + t * (x1 - x0), y0 + t * (y1 - y0)))
    return kept


def _draw_tiles(ax, N: int, S: int, block: int, is_causal: bool) -> None:
    """Each tile of ``flash_tile_kinds`` at its true size; inside masked tiles the kept triangle."""
    from matplotlib.patches import Polygon, Rectangle

    kinds = eff.flash_tile_kinds(N, S, block, is_causal)
    for r, c in np.ndindex(kinds.shape):
        r0, c0 = r * block, c * block
        r1, c1 = min(r0 + block, N), min(c0 + block, S)
        kind = kinds[r, c]
        ax.add_patch(Rectangle((c0, r0), c1 - c0, r1 - r0, facecolor=TILE_COLORS[kind], edgecolor="white",
                               linewidth=2, hatch="//" if kind == eff.TILE_SKIPPED else None))
        if kind == eff.TILE_MASKED:  # the part j ≤ i, kept after masking
            kept = below_diagonal([(c0, r0), (c1, r0), (c1, r1), (c0, r1)])
            ax.add_patch(Polygon(kept, closed=True, facecolor=TILE_COLORS[eff.TILE_FULL], alpha=0.55,
                                 edgecolor="none"))
    computed = int((kinds != eff.TILE_SKIPPED).sum())
    ax.set_xlim(0, S)
    ax.set_ylim(N, 0)
    ax.set_aspect("equal")
    ax.set_xlabel("key position j")
    ax.set_ylabel("query position i")
    mode = "causal (j ≤ i)" if is_causal else "no mask"
    ax.set_title(f"L={N}, S={S}, {mode}\n{computed} of {kinds.size} tiles computed", fontsize=10)


@figure("flash_tiles", "the tiles flash attention computes, masks or skips (causal, L != S, ragged)")
def flash_tiles():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, 3, figsize=(12.5, 4.6), constrained_layout=True)
    for ax, (N, S, causal) in zip(axes, [(600, 600, False), (600, 600, True), (600, 340, True)]):
        _draw_tiles(ax, N, S, 128, causal)
    handles = [Patch(color=TILE_COLORS[eff.TILE_FULL], label="computed, no mask"),
               Patch(color=TILE_COLORS[eff.TILE_MASKED], label="computed, then this part set to −inf"),
               Patch(facecolor=TILE_COLORS[eff.TILE_SKIPPED], hatch="//", label="skipped (all j > i)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle("flash_attention, block_size=128: one 128 x 128 score tile in memory at a time "
                 "(last row/column of tiles is ragged)")
    return fig


# ----------------------------------------------------------------------------------------------
# sliding window: the band and the tiles that cover it
# ----------------------------------------------------------------------------------------------

@figure("sliding_window", "the sliding-window band (|i - j| <= w, causal 0 <= i - j <= w) and its tiles")
def sliding_window():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, 3, figsize=(14.5, 5.8), constrained_layout=True)
    T = len(SENTENCE)
    viz.mask_picture(eff.sliding_window_mask(T, T, 2), SENTENCE, ax=axes[0],
                     title="window 2: |i − j| ≤ 2")
    viz.mask_picture(eff.sliding_window_mask(T, T, 2, is_causal=True), SENTENCE, ax=axes[1],
                     title="window 2, causal: 0 ≤ i − j ≤ 2")
    N, w = 96, 8
    ax = axes[2]
    band = eff.sliding_window_mask(N, N, w)
    ax.imshow(band, cmap="Greys", vmin=0, vmax=1.6, extent=(0, N, N, 0))
    tiles = eff.sliding_window_tiles(N, N, w)
    for q0, q1, k0, k1 in tiles:
        ax.add_patch(Rectangle((k0, q0), k1 - k0, q1 - q0, fill=False, edgecolor="#e76f51", linewidth=1.8))
    scored = sum((q1 - q0) * (k1 - k0) for q0, q1, k0, k1 in tiles)
    ax.set_xlabel("key position j")
    ax.set_ylabel("query position i")
    ax.set_title(f"sliding_window_attention, L={N}, window {w}:\n{len(tiles)} tiles (orange) cover "
                 f"the band (grey)\n{scored} scores computed, not L² = {N * N}", fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------
# flash == plain, to round-off
# ----------------------------------------------------------------------------------------------


@figure("flash_error", "flash vs plain attention: float64 round-off, and float32 error of each vs float64")
def flash_error():
    import matplotlib.pyplot as plt

    t = flash_error_table()
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2), constrained_layout=True, sharey=True)
    for name, marker in zip(("output", "dq", "dk", "dv"), "osD^"):
        axes[0].plot(t["sizes"], t["flash64"][name], marker=marker, label=name)
    axes[0].axhline(np.finfo(np.float64).eps, color="grey", ls="--", label="float64 eps")
    axes[0].set_title("float64: flash vs SDPA (same math, other order of sums)", fontsize=10)
    for key, color in (("plain32", "#264653"), ("flash32", "#2a9d8f")):
        label = "plain SDPA" if key == "plain32" else "flash"
        axes[1].plot(t["sizes"], t[key]["output"], color=color, marker="o", label=f"{label}: output")
        axes[1].plot(t["sizes"], t[key]["dq"], color=color, marker="s", ls=":", label=f"{label}: dq")
    axes[1].axhline(np.finfo(np.float32).eps, color="grey", ls="--", label="float32 eps")
    axes[1].set_title("float32, each against float64 SDPA: flash is as accurate as plain", fontsize=10)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L (causal, d = 32, block 64)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("max |x − reference| / max |reference|")
    return fig


# ----------------------------------------------------------------------------------------------
# linear attention vs softmax attention
# ----------------------------------------------------------------------------------------------


@figure("linear_vs_softmax", "softmax weights vs the weights linear attention uses, and their distance")
def linear_vs_softmax():
    import matplotlib.pyplot as plt

    tokens = SENTENCE[:8]
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((8, 16)), rng.standard_normal((8, 16))
    _, p = F.scaled_dot_product_attention(ag.tensor(q), ag.tensor(k), ag.tensor(q), return_weights=True)
    a = eff.linear_attention_weights(q, k)
    fig = plt.figure(figsize=(14.5, 4.6), constrained_layout=True)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.15]})
    vmax = float(max(p.data.max(), a.max()))
    viz.heatmap(p.data, tokens, ax=axes[0], vmin=0, vmax=vmax, colorbar=False,
                title="softmax: e^(q·k/√d) / Σ")
    viz.heatmap(a, tokens, ax=axes[1], vmin=0, vmax=vmax, title="linear: φ(q)·φ(k) / Σ, φ = elu + 1")
    scales = np.geomspace(0.05, 8, 25)
    dist = linear_vs_softmax_distance(scales)
    axes[2].plot(scales, dist["tv"], marker="o", ms=3, label="mean TV distance of weight rows")
    axes[2].plot(scales, dist["output_error"], marker="s", ms=3,
                 label="‖linear − softmax‖ / ‖softmax‖ (output)")
    axes[2].set_xscale("log")
    axes[2].set_xlabel("logit scale s (q and k multiplied by s)")
    axes[2].set_title("L = 64 random q, k, v: they agree only while both are near uniform", fontsize=10)
    axes[2].grid(True, alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.suptitle("linear attention uses another similarity than softmax (random q, k with d = 16 "
                 "standing in for 8 tokens)")
    return fig


# ----------------------------------------------------------------------------------------------
# time and memory against N, from the saved benchmark
# ----------------------------------------------------------------------------------------------

@figure("efficient_scaling", "time and peak memory vs L of plain, flash, linear and sliding-window attention")
def efficient_scaling():
    import matplotlib.pyplot as plt

    data = load_benchmark_results()
    res = data["results"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), constrained_layout=True)
    for name, (label, color) in METHOD_STYLE.items():
        r = res.get(name, {"N": []})
        if not r["N"]:
            continue
        axes[0].plot(r["N"], np.array(r["fwd_bwd_s"]) * 1e3, marker="o", ms=4, color=color, label=label)
        axes[1].plot(r["N"], np.array(r["peak_bytes"]) / 2 ** 20, marker="o", ms=4, color=color, label=label)
    n = np.array(data["sizes"], dtype=float)
    for ax, key, unit in ((axes[0], "fwd_bwd_s", 1e3), (axes[1], "peak_bytes", 1 / 2 ** 20)):
        anchor = res["plain"]["N"][0], res["plain"][key][0] * unit
        ax.plot(n, anchor[1] * (n / anchor[0]) ** 2, color="grey", ls=":", lw=1, label="∝ L²")
        ax.plot(n, anchor[1] * (n / anchor[0]), color="grey", ls="--", lw=1, label="∝ L")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("forward + backward, median ms")
    axes[1].set_ylabel("tracemalloc peak, MiB")
    axes[0].legend(fontsize=8)
    cfg = data["config"]
    fig.suptitle(f"float32, B = H = 1, d = {cfg['d']}, window {cfg['window']}; "
                 f"from tinyattn/measurements/efficient.json ({data['machine'].split(';')[0]})", fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------
# the IO model: numbers moved between slow and fast memory
# ----------------------------------------------------------------------------------------------

IO_SIZES = (256, 512, 1024, 2048, 4096, 8192, 16384)
IO_FAST_MEMORY = (16 * 1024, 64 * 1024)  # fast-memory sizes M in numbers (fp16: 32 KiB, 128 KiB)


@figure("flash_io", "the IO model: numbers moved between slow and fast memory, plain vs flash attention")
def flash_io():
    import matplotlib.pyplot as plt

    lengths = np.array(IO_SIZES)
    D = 64
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), constrained_layout=True)
    standard = np.array([attention_io(L, D, IO_FAST_MEMORY[0])["standard"] for L in lengths])
    axes[0].plot(lengths, standard, marker="o", ms=4, color="#264653", label="plain: 4LD + 4L²")
    for M, color in zip(IO_FAST_MEMORY, ("#2a9d8f", "#3a86ff")):
        for key, ls, name in (("flash2", "-", "FlashAttention-2 order (printed)"),
                              ("flash1", "--", "FlashAttention-1 order")):
            moved = np.array([attention_io(L, D, M)[key] for L in lengths])
            axes[0].plot(lengths, moved, marker="o", ms=3, ls=ls, color=color,
                         label=f"{name}, M = {M // 1024}K")
    axes[0].set_xscale("log", base=2)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("sequence length L")
    axes[0].set_ylabel("numbers read + written in slow memory")
    axes[0].set_title(f"forward pass, one head, D = {D}", fontsize=10)
    fast = np.array([2 ** e for e in range(11, 19)])  # M = 2K .. 256K numbers
    for dim, color in zip((32, 64, 128), ("#e76f51", "#2a9d8f", "#6a4c93")):
        ok = fast >= 4 * dim
        for key, ls in (("flash2", "-"), ("flash1", "--")):
            ratio = [attention_io(4096, dim, int(M))["standard"] / attention_io(4096, dim, int(M))[key]
                     for M in fast[ok]]
            axes[1].plot(fast[ok], ratio, marker="o", ms=3, ls=ls, color=color,
                         label=f"D = {dim}" if key == "flash2" else ("dashed: FlashAttention-1 order"
                                                                     if dim == 32 else "_nolegend_"))
    axes[1].axhline(1, color="grey", lw=1, ls=":")
    axes[1].set_xscale("log", base=2)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("fast memory M (numbers)")
    axes[1].set_ylabel("plain / flash, numbers moved")
    axes[1].set_title("L = 4096: the saving grows like M / D²", fontsize=10)
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Flash attention moves Θ(L²D²/M) numbers instead of Θ(LD + L²): on a GPU the speed-up "
                 "is fewer trips to slow memory, in one fused kernel", fontsize=10)
    return fig
