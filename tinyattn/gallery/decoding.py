"""Figures of the decoding variants: cache bytes of MHA, GQA, MQA, MLA and a paged cache, and the
streaming experiment's loss vs position (read from ``tinyattn/measurements/streaming.json``,
written by ``python benchmarks/streaming.py``)."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np

from .. import efficient as eff
from .registry import figure

# a 7B-class decoder in fp16 (Llama-2-7B's shape: 32 layers, 32 heads of 128) and DeepSeek-V2's
# MLA sizes for it (d_c = 4·D, d_r = D / 2)
CACHE_CONFIG = dict(layers=32, heads=32, head_dim=128, gqa_heads=8, latent_dim=512, rope_dim=64,
                    block_size=16, bytes_per_element=2)
CACHE_STYLE = {  # name -> (label, colour, line style)
    "mha": ("MHA (32 kv heads)", "#264653", "-"), "gqa": ("GQA (8 kv heads)", "#2a9d8f", "-"),
    "mqa": ("MQA (1 kv head)", "#8ab17d", "-"), "mla": ("MLA (d_c 512 + d_r 64)", "#e76f51", "-"),
    "paged": ("MHA, paged (blocks of 16)", "#6a4c93", "--"),
}
STREAM_STYLE = {"full": ("#264653", "-"), "window": ("#2a9d8f", "-"), "sinks": ("#e76f51", "--")}  # in order


def kv_cache_curves(lengths, config: dict = CACHE_CONFIG) -> dict:
    """Cache bytes of one sequence of each length under ``config``: name -> (len(lengths),) int64.

    MHA / GQA / MQA: 2 · layers · T · H_kv · D · bytes; MLA: layers · T · (d_c + d_r) · bytes; paged:
    the MHA cache of b · ⌈T / b⌉ positions (its blocks).
    """
    c = config
    lengths = np.asarray(lengths, dtype=np.int64)
    blocks = -(-lengths // c["block_size"]) * c["block_size"]  # (n,) allocated positions
    kv = lambda h, T: eff.kv_cache_bytes(c["layers"], h, c["head_dim"], int(T),  # noqa: E731
                                         bytes_per_element=c["bytes_per_element"])
    return {
        "mha": np.array([kv(c["heads"], T) for T in lengths]),
        "gqa": np.array([kv(c["gqa_heads"], T) for T in lengths]),
        "mqa": np.array([kv(1, T) for T in lengths]),
        "mla": np.array([eff.mla_cache_bytes(c["layers"], c["latent_dim"], c["rope_dim"], int(T),
                                             bytes_per_element=c["bytes_per_element"]) for T in lengths]),
        "paged": np.array([kv(c["heads"], T) for T in blocks]),
    }


def mixed_batch_slots(num_seqs: int = 32, max_len: int = 4096, block_size: int = 16, seed: int = 0) -> dict:
    """Positions used, held by paged caches and held by caches preallocated to max_len, for
    ``num_seqs`` sequences of seeded lengths uniform in 1 .. max_len."""
    lengths = np.random.default_rng(seed).integers(1, max_len + 1, size=num_seqs)
    used = int(lengths.sum())
    return {"lengths": lengths, "used": used, "paged": used + eff.paged_waste(lengths, block_size),
            "preallocated": num_seqs * max_len}


def load_streaming() -> dict:
    """The committed streaming measurements (``benchmarks/streaming.py``)."""
    return json.loads((resources.files("tinyattn") / "measurements" / "streaming.json").read_text())


@figure("kv_cache_bytes", "KV-cache bytes vs sequence length: MHA, GQA, MQA, MLA, a paged cache (7B-class)")
def kv_cache_bytes():
    import matplotlib.pyplot as plt

    lengths = np.unique(np.round(np.logspace(0, 15, 400, base=2)).astype(int))  # 1 .. 32768
    curves = kv_cache_curves(lengths)
    fig, (ax, bar_ax) = plt.subplots(1, 2, figsize=(12, 4.6), constrained_layout=True,
                                     gridspec_kw={"width_ratios": [1.6, 1]})
    for name, (label, color, ls) in CACHE_STYLE.items():
        per_token = curves[name][-1] / lengths[-1] / 1024 if name != "paged" else None
        text = label if per_token is None else f"{label}: {per_token:g} KiB / token"
        ax.plot(lengths, curves[name] / 2 ** 20, color=color, ls=ls, lw=1.6, label=text)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T (tokens in the cache)")
    ax.set_ylabel("cache bytes of one sequence, MiB")
    ax.set_title("32 layers, 32 query heads of D = 128, fp16", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    batch = mixed_batch_slots()
    per_slot = 2 * CACHE_CONFIG["layers"] * CACHE_CONFIG["heads"] * CACHE_CONFIG["head_dim"] * 2  # MHA bytes
    labels = ["used", "paged\n(blocks of 16)", "preallocated\nto 4096"]
    values = [batch["used"], batch["paged"], batch["preallocated"]]
    bars = bar_ax.bar(labels, np.array(values) * per_slot / 2 ** 30, color=["#999999", "#6a4c93", "#264653"])
    for b, v in zip(bars, values):
        bar_ax.annotate(f"{v * per_slot / 2 ** 30:.1f} GiB\n(+{100 * (v / batch['used'] - 1):.1f}%)",
                        (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8)
    bar_ax.set_ylabel("MHA cache of the batch, GiB")
    bar_ax.set_ylim(0, 1.25 * values[-1] * per_slot / 2 ** 30)
    bar_ax.set_title(f"{len(batch['lengths'])} sequences, lengths uniform in 1..4096 (seed 0)", fontsize=10)
    fig.suptitle("KV cache per sequence: GQA and MQA share key/value heads, MLA caches one latent "
                 "(d_c + d_r numbers per token and layer);\na paged cache wastes less than one block per "
                 "sequence, a cache preallocated to the longest length wastes the rest", fontsize=10)
    return fig


@figure("streaming_loss", "loss vs position far past the training window: window, window + sinks, full cache")
def streaming_loss():
    import matplotlib.pyplot as plt

    data = load_streaming()
    T_train, h = data["train_len"], data["entropy_rate"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True, constrained_layout=True)
    smooth = 16
    for ax, (positions, run) in zip(axes, data["runs"].items()):
        for name, (color, ls) in STREAM_STYLE.items():
            curve = np.asarray(run["curves"][name])
            t = np.arange(len(curve))
            mean = np.convolve(curve, np.ones(smooth) / smooth, mode="valid")  # (N − smooth + 1,)
            label = {"window": f"sliding window ({T_train} keys)", "full": "full cache",
                     "sinks": f"window + {data['num_sinks']} sinks ({T_train} keys)"}[name]
            ax.plot(t[smooth - 1:], mean, color=color, ls=ls, lw=1.5, label=label)
            for (lo, hi), value in zip(data["bands"], run["bands"][name]):
                ax.hlines(value, lo, hi, color=color, lw=3, alpha=0.35)
        ax.axhline(h, color="grey", ls=":", lw=1.2, label=f"entropy rate {h:.3f} (the best possible)")
        ax.axvline(T_train, color="grey", ls="--", lw=1)
        ax.text(T_train + 4, 3.9, f"T_train = {T_train}", fontsize=8, color="grey")
        ax.set_xlabel("position in the stream")
        ax.set_title(f"{positions}: test loss {run['result']['test_loss']:.3f} at T_train", fontsize=10)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("next-token loss, nats")
    axes[0].set_ylim(1.7, 4.1)
    axes[0].legend(fontsize=8, loc="center right")
    fig.suptitle(f"A GPT trained on rows of {T_train} tokens read on rows of {data['length']} "
                 f"(mean of {data['rows']} rows, {smooth}-position running mean; thick: band means).\n"
                 "RoPE with the full cache breaks past the training window; ALiBi's three caches coincide; "
                 "the sinks gain little here", fontsize=10)
    return fig
