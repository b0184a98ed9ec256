"""Efficient attention vs plain SDPA: median time and tracemalloc peak memory against sequence length.

    python benchmarks/efficient.py                 # N = 256 … 16384; writes results + README section
    python benchmarks/efficient.py --sizes 256 1024 --no-write     # a quick look

Plain SDPA, flash attention (block 128, the default, and block 256, a 256 KiB float32 tile that
sits in L2; causal with block 256), linear attention (non-causal and causal) and sliding-window
attention (window 128), float32, B = H = 1, d = 64. For each N: forward time,
forward + backward time (medians) and the peak bytes allocated during forward + backward.
Plain SDPA stops at --plain-max (its N x N scores, probabilities and their gradient no longer fit
sensibly beyond). BLAS runs on one thread unless OPENBLAS_NUM_THREADS / OMP_NUM_THREADS is set,
so that the numbers compare algorithms rather than thread scheduling on a shared machine.
Results go to tinyattn/measurements/efficient.json (package data, plotted by the `efficient_scaling`
figure) and to the `efficient` section of benchmarks/README.md.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, os.environ.get("OMP_NUM_THREADS", "1"))  # before NumPy loads BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import tinyattn as ta  # noqa: E402
from _common import machine_line, median_time, peak_memory, progress, write_section  # noqa: E402
from tinyattn import efficient as eff  # noqa: E402
from tinyattn.serialization import atomic_write  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tinyattn",
                       "measurements", "efficient.json")
D, WINDOW, BIG_BLOCK = 64, 128, 256
SDPA = ta.nn.functional.scaled_dot_product_attention

METHODS = {  # name -> (label, attention(q, k, v))
    "plain": ("plain SDPA", lambda q, k, v: SDPA(q, k, v)),
    "flash": ("flash (block 128)", lambda q, k, v: eff.flash_attention(q, k, v)),
    "flash256": (f"flash (block {BIG_BLOCK})",
                 lambda q, k, v: eff.flash_attention(q, k, v, block_size=BIG_BLOCK)),
    "flash_causal": (f"flash causal ({BIG_BLOCK})",
                     lambda q, k, v: eff.flash_attention(q, k, v, is_causal=True, block_size=BIG_BLOCK)),
    "linear": ("linear", lambda q, k, v: eff.linear_attention(q, k, v)),
    "linear_causal": ("linear, causal", lambda q, k, v: eff.linear_attention(q, k, v, is_causal=True)),
    "sliding": (f"sliding window {WINDOW}", lambda q, k, v: eff.sliding_window_attention(q, k, v, WINDOW)),
}


def inputs(N: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [ta.Tensor(rng.standard_normal((1, 1, N, D)).astype(np.float32), requires_grad=True)
            for _ in range(3)]


def measure(fn, N: int, repeat: int) -> dict:
    """Forward median, forward+backward median and the forward+backward tracemalloc peak."""
    q, k, v = inputs(N)
    grad = np.random.default_rng(1).standard_normal((1, 1, N, D)).astype(np.float32)

    def forward():
        with ta.no_grad():
            fn(q, k, v)

    def forward_backward():
        for t in (q, k, v):
            t.grad = None
        fn(q, k, v).backward(grad)

    return {"fwd_s": median_time(forward, repeat=repeat),
            "fwd_bwd_s": median_time(forward_backward, repeat=repeat),
            "peak_bytes": peak_memory(forward_backward)}


def paired_forward(N: int, names, repeat: int = 21) -> dict:
    """Median forward seconds of ``names`` at one N, the methods run in turn within each repeat,
    so that a load change on a shared machine hits all of them alike."""
    q, k, v = inputs(N)
    times = {name: [] for name in names}
    with ta.no_grad():
        for name in names:
            METHODS[name][1](q, k, v)  # warm-up
        for _ in range(repeat):
            for name in names:
                t0 = time.perf_counter()
                METHODS[name][1](q, k, v)
                times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def slope(ns, ys) -> float:
    """Least-squares slope of log y against log N."""
    return float(np.polyfit(np.log(ns), np.log(ys), 1)[0])


def at(results: dict, name: str, N: int, key: str):
    r = results[name]
    return r[key][r["N"].index(N)] if N in r["N"] else None


def targets(results: dict, paired: dict) -> list:
    """(description, measured text, met: bool or None when not measured)."""
    out = []
    pf, pp = at(results, "flash", 4096, "peak_bytes"), at(results, "plain", 4096, "peak_bytes")
    pf8, pp8 = at(results, "flash", 8192, "peak_bytes"), at(results, "plain", 8192, "peak_bytes")
    at_8192 = f" (N = 8192: {pp8 / pf8:.1f}×)" if pf8 and pp8 else ""
    out.append(("flash fwd+bwd peak memory ≥ 10× below plain at N = 4096 (aim 50×)",
                f"{pp / pf:.1f}×{at_8192}" if pf and pp else "not measured",
                None if not (pf and pp) else pp / pf >= 10))
    ratios = {name: paired[name] / paired["plain"] for name in ("flash", "flash256") if paired}
    out.append(("flash forward time ≤ 1.5× plain at N = 2048 (paired runs, median of 21)",
                ", ".join(f"{METHODS[n][0]}: {r:.2f}×" for n, r in ratios.items()) or "not measured",
                None if not ratios else min(ratios.values()) <= 1.5))
    lin = results["linear"]
    big = [(n, t) for n, t in zip(lin["N"], lin["fwd_bwd_s"]) if n >= 2048]
    s_big = slope(*zip(*big)) if len(big) >= 2 else None
    s_all = slope(lin["N"], lin["fwd_bwd_s"]) if len(lin["N"]) >= 2 else None
    out.append(("linear attention fwd+bwd log-log slope ≤ 1.1 (fit over N ≥ 2048)",
                "not measured" if s_big is None else f"{s_big:.2f} (over all N: {s_all:.2f})",
                None if s_big is None else s_big <= 1.1))
    pairs = [(n, at(results, "linear", n, "fwd_bwd_s"), at(results, "plain", n, "fwd_bwd_s"))
             for n in results["plain"]["N"] if n >= 2048 and n in lin["N"]]
    out.append(("linear attention fwd+bwd faster than plain from N = 2048 on",
                ", ".join(f"N={n}: {p / t:.1f}×" for n, t, p in pairs) or "not measured",
                None if not pairs else all(t < p for _, t, p in pairs)))
    sw = results["sliding"]
    s_mem = slope(sw["N"], sw["peak_bytes"]) if len(sw["N"]) >= 2 else None
    per = [b / n for n, b in zip(sw["N"], sw["peak_bytes"])]
    out.append(("sliding-window peak memory linear in N (log-log slope ≈ 1)",
                "not measured" if s_mem is None else
                f"slope {s_mem:.2f}; {min(per) / 1024:.1f}–{max(per) / 1024:.1f} KiB per position",
                None if s_mem is None else s_mem <= 1.1))
    return out


def markdown(data: dict) -> str:
    res, sizes = data["results"], data["sizes"]
    names = list(METHODS)
    mib = lambda b: f"{b / 2 ** 20:.1f}" if b is not None else "—"  # noqa: E731
    ms = lambda s: f"{s * 1e3:.1f}" if s is not None else "—"  # noqa: E731
    lines = [f"Machine: {data['machine']}; BLAS threads: {data['config']['blas_threads']}. "
             f"float32, B = H = 1, d = {D}, window {WINDOW}; medians "
             f"(5 runs up to N = 2048, 3 above). Peak = tracemalloc peak during forward + backward.",
             "", "**Forward + backward**, median ms / peak MiB:", "",
             "| N | " + " | ".join(METHODS[n][0] for n in names) + " |",
             "|---:|" + "---:|" * len(names)]
    for N in sizes:
        cells = [f"{ms(at(res, n, N, 'fwd_bwd_s'))} / {mib(at(res, n, N, 'peak_bytes'))}" for n in names]
        lines.append(f"| {N} | " + " | ".join(cells) + " |")
    lines += ["", "**Forward only**, median ms:", "",
              "| N | " + " | ".join(METHODS[n][0] for n in names) + f" | flash (128 / {BIG_BLOCK}) / plain |",
              "|---:|" + "---:|" * (len(names) + 1)]
    for N in sizes:
        tf, tp = at(res, "flash", N, "fwd_s"), at(res, "plain", N, "fwd_s")
        tf2 = at(res, "flash256", N, "fwd_s")
        ratio = f"{tf / tp:.2f}× / {tf2 / tp:.2f}×" if tf and tf2 and tp else "—"
        lines.append(f"| {N} | " + " | ".join(ms(at(res, n, N, "fwd_s")) for n in names) + f" | {ratio} |")
    lines += ["", "| target | measured | |", "|---|---|---|"]
    for desc, measured, met in data["targets"]:
        verdict = "met" if met else ("not measured" if met is None else "**missed**")
        lines.append(f"| {desc} | {measured} | {verdict} |")
    lines += ["", f"Plain SDPA stops at N = {data['config']['plain_max']}. Total run "
              f"{data['seconds']:.0f} s. Raw numbers: `tinyattn/measurements/efficient.json`; plot: "
              f"`python -m tinyattn.figures --only efficient_scaling`.", "",
              f"Command: `{data['command']}`"]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256 * 2 ** i for i in range(7)])
    parser.add_argument("--plain-max", type=int, default=8192, help="largest N for plain SDPA")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; do not write the results file or benchmarks/README.md")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = {name: {"N": [], "fwd_s": [], "fwd_bwd_s": [], "peak_bytes": []} for name in METHODS}
    for N in args.sizes:
        repeat = 5 if N <= 2048 else 3
        for name, (label, fn) in METHODS.items():
            if name == "plain" and N > args.plain_max:
                continue
            r = measure(fn, N, repeat)
            for key, value in r.items():
                results[name][key].append(value)
            results[name]["N"].append(N)
            progress(f"N={N:6d} {label:20s} fwd {r['fwd_s'] * 1e3:9.1f} ms  fwd+bwd "
                     f"{r['fwd_bwd_s'] * 1e3:9.1f} ms  peak {r['peak_bytes'] / 2 ** 20:8.1f} MiB  "
                     f"({time.perf_counter() - start:.0f} s)")
    paired = {}
    if 2048 in args.sizes and args.plain_max >= 2048:
        paired = paired_forward(2048, ("plain", "flash", "flash256"))
        progress("N=  2048 paired forward: " + ", ".join(f"{METHODS[n][0]} {t * 1e3:.1f} ms"
                                                         for n, t in paired.items()))
    command = " ".join(["python benchmarks/efficient.py"] + list(sys.argv[1:] if argv is None else argv))
    data = {"command": command, "machine": machine_line(), "sizes": args.sizes,
            "config": {"dtype": "float32", "B": 1, "H": 1, "d": D, "window": WINDOW,
                       "block_sizes": [128, BIG_BLOCK],
                       "plain_max": args.plain_max, "blas_threads": os.environ["OPENBLAS_NUM_THREADS"]},
            "results": results, "paired_forward_2048_s": paired, "targets": targets(results, paired),
            "seconds": time.perf_counter() - start}
    text = markdown(data)
    print(text)
    if not args.no_write:
        atomic_write(RESULTS, lambda f: f.write((json.dumps(data, indent=1) + "\n").encode("utf-8")))
        write_section("efficient", text)
        progress(f"wrote {os.path.relpath(RESULTS)} and the efficient section of benchmarks/README.md")


if __name__ == "__main__":
    main()
