"""Figures of the efficient-attention arena, drawn from the committed ``tinyattn/measurements/arena.json``.

``python -m tinyattn.arena --write`` measures and rewrites that file; these figures only read it,
so they take a second and show every variant the last run measured.
"""

from __future__ import annotations

import numpy as np

from .. import arena
from .registry import figure

CHANCE = 1 / 64  # an MQAR answer is one of MQAR_VOCAB_SIZE − MQAR_KEYS = 64 values


def styles(names) -> dict:
    """name -> (color, marker): the baseline black, the others from tab10 in registration order."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    markers = "osD^v<>pPX*h"
    out, i = {}, 0
    for name in names:
        if name == arena.BASELINE:
            out[name] = ("black", "o")
        else:
            out[name] = (cmap(i % 10), markers[i % len(markers)])
            i += 1
    return out


def _source(data: dict) -> str:
    return f"tinyattn/measurements/arena.json, {data['date']} ({data['machine'].split(';')[0]})"


@figure("arena_scaling", "time and peak memory vs L (log-log) of every attention variant in the arena")
def arena_scaling():
    import matplotlib.pyplot as plt

    data = arena.load_results()
    sc, cfg = data["scaling"], data["config"]
    style = styles(sc)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True)
    for name, r in sc.items():
        if not r["L"]:
            continue
        color, marker = style[name]
        lw = 2.2 if name == arena.BASELINE else 1.4
        for ax, key, unit in ((axes[0], "fwd_bwd_s", 1e3), (axes[1], "fwd_bwd_peak", 2 ** -20)):
            slope = r["slopes"].get(key)
            label = f"{name} (slope {slope:.2f})" if slope is not None else name
            ax.plot(r["L"], np.array(r[key]) * unit, color=color, marker=marker, ms=4, lw=lw, label=label)
    L = np.array(cfg["sizes"], dtype=float)
    base = sc[arena.BASELINE]
    for ax, key, unit in ((axes[0], "fwd_bwd_s", 1e3), (axes[1], "fwd_bwd_peak", 2 ** -20)):
        y0 = base[key][0] * unit
        ax.plot(L, y0 * (L / L[0]) ** 2, color="grey", ls=":", lw=1, label="∝ L²")
        ax.plot(L, y0 * (L / L[0]), color="grey", ls="--", lw=1, label="∝ L")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    axes[0].set_ylabel("forward + backward, median ms")
    axes[1].set_ylabel("forward + backward, tracemalloc peak MiB")
    axes[0].set_title(f"time (slopes fitted over L ≥ {cfg['slope_from']})", fontsize=10)
    axes[1].set_title("peak memory", fontsize=10)
    fig.suptitle(f"float32, B = 1, H = {cfg['H']}, D = {cfg['D']}, non-causal; {_source(data)}", fontsize=10)
    return fig


@figure("arena_error", "each attention variant's error against exact softmax attention vs L (float64)")
def arena_error():
    import matplotlib.pyplot as plt

    data = arena.load_results()
    sc = data["scaling"]
    style = styles(sc)
    fig, ax = plt.subplots(figsize=(10, 4.8), constrained_layout=True)
    floor = 1e-17  # an error of exactly 0 is drawn here, on the log axis
    for name, r in sc.items():
        if not r["error_L"]:
            continue
        color, marker = style[name]
        ax.plot(r["error_L"], np.maximum(r["err_max"], floor), color=color, marker=marker, ms=5,
                label=f"{name} ({r['claim']})")
        ax.plot(r["error_L"], np.maximum(r["err_mean"], floor), color=color, marker=marker, ms=3, ls=":",
                lw=1)
    ax.axhline(np.finfo(np.float64).eps, color="grey", ls="--", lw=1, label="float64 eps")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("row error ‖o − softmax‖ / ‖softmax‖")
    ax.set_title("max over query rows (solid) and mean (dotted), random q, k, v, D = 64", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    fig.suptitle(f"error against exact softmax attention, float64; {_source(data)}", fontsize=10)
    return fig


@figure("arena_mqar", "MQAR held-out accuracy vs number of key-value pairs, one model per attention variant")
def arena_mqar():
    import matplotlib.pyplot as plt

    data = arena.load_results()
    mq, m = data["mqar"], data["config"]["mqar"]
    style = styles(data["scaling"])
    fig, ax = plt.subplots(figsize=(10, 4.8), constrained_layout=True)
    pairs = m["pairs"]
    for name, r in mq.items():
        if "accuracy" not in r:
            continue
        color, marker = style[name]
        lw = 2.2 if name == arena.BASELINE else 1.4
        ax.plot(pairs, [r["accuracy"][str(P)] for P in pairs], color=color, marker=marker, ms=5, lw=lw,
                label=name)
    ax.axhline(CHANCE, color="grey", ls="--", lw=1, label="chance (1/64)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(pairs, [str(P) for P in pairs])
    ax.set_ylim(0, 1.03)
    ax.set_xlabel("key-value pairs P (sequence length 3P)")
    ax.set_ylabel("held-out accuracy on the queries")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"the same {m['num_layers']}-layer model (d_model {m['d_model']}, {m['num_heads']} heads), "
                 f"{m['steps']} steps, seed 0, with each variant as its attention", fontsize=10)
    fig.suptitle(f"multi-query associative recall (Arora et al. 2023); {_source(data)}", fontsize=10)
    return fig
