"""Attention speed: the encoder layer forward + backward vs PyTorch CPU and vs its matmuls alone,
and scaled dot-product attention forward vs the two raw matmuls it must do; medians from one run.

    python benchmarks/attention.py         # prints the tables and rewrites benchmarks/README.md
"""

from __future__ import annotations

import argparse

import numpy as np

import tinyattn as ta
from _common import interleaved_medians, machine_line, median_time, progress, try_torch, write_section

B, T, E, H, FF = 16, 128, 256, 8, 1024
SDPA_SHAPE = (8, 8, 512, 64)


def encoder_inputs(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, T, E)).astype(np.float32), rng.standard_normal((B, T, E)).astype(np.float32)


def tinyattn_layer():
    ta.manual_seed(0)
    return ta.nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=True)


def tinyattn_encoder_step(layer, x, c):
    layer.zero_grad()
    xt = ta.Tensor(x, requires_grad=True)
    layer(xt).backward(c)


def torch_encoder_step(torch, layer, x, c):
    layer.zero_grad()
    xt = torch.tensor(x, requires_grad=True)
    layer(xt).backward(torch.tensor(c))


def encoder_matmul_operands(layer, seed=2):
    """Arrays shaped like every GEMM operand of the layer (values do not matter for timing)."""
    rng = np.random.default_rng(seed)
    D = E // H
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return dict(X=f32(B * T, E), W_in=layer.self_attn.in_proj_weight.data, W_o=layer.self_attn.out_proj.weight.data,
                W1=layer.linear1.weight.data, W2=layer.linear2.weight.data,
                qkv=f32(B * T, 3 * E), q=f32(B, H, T, D), k=f32(B, H, T, D), P=f32(B, H, T, T),
                a=f32(B * T, E), h=f32(B * T, FF), e=f32(B * T, E))


def encoder_matmuls(o):
    """The layer's GEMMs alone: 6 in the forward, 12 in the backward (dA = dC Bᵀ, dB = Aᵀ dC each)."""
    X, W_in, W_o, W1, W2 = o["X"], o["W_in"], o["W_o"], o["W1"], o["W2"]
    q, k, P, a, h, e = o["q"], o["k"], o["P"], o["a"], o["h"], o["e"]
    kT, PT = np.swapaxes(k, -1, -2), np.swapaxes(P, -1, -2)
    _ = X @ W_in.T  # (B·T, 3E): Q, K, V projections
    _ = q @ kT  # (B, H, T, T): scores
    _ = P @ k  # (B, H, T, D): P·V
    _ = a @ W_o.T  # (B·T, E): output projection
    _ = e @ W1.T  # (B·T, FF)
    _ = h @ W2.T  # (B·T, E)
    _ = e @ W2, e.T @ h  # dh, dW2
    _ = h @ W1, h.T @ e  # dy, dW1
    _ = e @ W_o, e.T @ a  # da, dW_o
    _ = q @ kT, PT @ q  # dP, dV
    _ = P @ k, PT @ q  # dQ, dK
    _ = o["qkv"] @ W_in, o["qkv"].T @ X  # dX, dW_in


def measure(args, torch, layer, operands, x, c, sdpa_inputs) -> dict:
    """One run: the median time of every implementation, in seconds."""
    q, k, v = sdpa_inputs
    qt, kt, vt = ta.Tensor(q), ta.Tensor(k), ta.Tensor(v)
    kT = np.ascontiguousarray(np.swapaxes(k, -1, -2))
    sdpa = ta.nn.functional.scaled_dot_product_attention

    def reference(fn):
        def run():
            with ta.kernels.disabled():
                fn()
        return run

    progress("encoder layer: tinyattn (kernel and reference) and its GEMMs ...")
    times = interleaved_medians({
        "tinyattn": lambda: tinyattn_encoder_step(layer, x, c),
        "tinyattn, reference SDPA": reference(lambda: tinyattn_encoder_step(layer, x, c)),
        "its GEMMs alone (NumPy)": lambda: encoder_matmuls(operands),
    }, repeat=args.repeat)
    # SDPA and its matmuls in separate blocks, not interleaved: SDPA's tiles run on worker
    # threads with one BLAS thread each, and right after a two-thread GEMM OpenBLAS's idle
    # worker keeps spinning on a core for a few hundred ms (see benchmarks/README.md).
    progress("SDPA forward: tinyattn kernel, reference, raw matmuls ...")
    times["tinyattn SDPA"] = median_time(lambda: sdpa(qt, kt, vt), repeat=args.repeat, warmup=3)
    times["tinyattn SDPA, reference"] = median_time(reference(lambda: sdpa(qt, kt, vt)), repeat=args.repeat,
                                                    warmup=3)
    times["raw matmuls Q·Kᵀ and S·V"] = median_time(lambda: (q @ kT) @ v, repeat=args.repeat, warmup=3)
    if torch:
        tl = torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=True)
        tl.load_state_dict({name: torch.tensor(w) for name, w in layer.state_dict().items()})
        tq, tk, tv = (torch.tensor(a) for a in (q, k, v))
        progress("PyTorch ...")
        times.update(interleaved_medians({
            "PyTorch CPU": lambda: torch_encoder_step(torch, tl, x, c),
            "PyTorch SDPA": lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv),
        }, repeat=args.repeat))
    return times


def spread(values) -> str:
    """'median m× (a–b× over n runs)' of a list of ratios."""
    return f"**{np.median(values):.2f}×** ({min(values):.2f}–{max(values):.2f}× over {len(values)} runs)"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=9, help="timed calls per implementation and run")
    parser.add_argument("--runs", type=int, default=5, help="independent runs; ratios are given per run")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite benchmarks/README.md")
    args = parser.parse_args(argv)
    torch = try_torch()
    x, c = encoder_inputs()
    layer = tinyattn_layer()
    operands = encoder_matmul_operands(layer)
    rng = np.random.default_rng(1)
    sdpa_inputs = tuple(rng.standard_normal(SDPA_SHAPE).astype(np.float32) for _ in range(3))
    runs = []
    for r in range(args.runs):
        progress(f"run {r + 1}/{args.runs}")
        runs.append(measure(args, torch, layer, operands, x, c, sdpa_inputs))
    times = {name: float(np.median([t[name] for t in runs])) for name in runs[0]}
    ratio = lambda a, b: [t[a] / t[b] for t in runs]  # noqa: E731
    enc_names = ("tinyattn", "tinyattn, reference SDPA", "its GEMMs alone (NumPy)", "PyTorch CPU")
    sdpa_names = ("tinyattn SDPA", "tinyattn SDPA, reference", "raw matmuls Q·Kᵀ and S·V", "PyTorch SDPA")
    rows = [(n, times[n]) for n in enc_names if n in times]
    sdpa_rows = [(n, times[n]) for n in sdpa_names if n in times]

    lines = [f"Machine: {machine_line()}. float32; each of {args.runs} runs takes the median of "
             f"{args.repeat} calls per implementation; the tables give the median over runs, the ratios "
             f"their median and range over runs. PyTorch is timed after the rest (its spinning OpenMP "
             f"threads would slow what runs next). \"reference\" = `with ta.kernels.disabled():`, "
             f"the readable `scaled_dot_product_attention` that notebook 03 shows.", "",
             f"**Encoder layer** forward + backward, B={B}, T={T}, E={E}, H={H}, FF={FF}, dropout 0, batch_first:",
             "", "| implementation | median ms | vs tinyattn |", "|---|---:|---:|"]
    lines += [f"| {n} | {t * 1e3:.1f} | {t / times['tinyattn']:.2f}× |" for n, t in rows]
    lines += [""]
    if torch:
        lines += [f"tinyattn / PyTorch = {spread(ratio('tinyattn', 'PyTorch CPU'))} (target ≤ 1.5×)."]
    lines += [f"tinyattn with the reference SDPA / with the kernel = "
              f"{spread(ratio('tinyattn, reference SDPA', 'tinyattn'))}.",
              f"tinyattn / its GEMMs alone = {spread(ratio('tinyattn', 'its GEMMs alone (NumPy)'))}.", "",
              f"**SDPA forward**, shape {SDPA_SHAPE}, each timed in its own block:", "",
              "| implementation | median ms | vs raw matmuls |",
              "|---|---:|---:|"]
    raw = times["raw matmuls Q·Kᵀ and S·V"]
    lines += [f"| {n} | {t * 1e3:.1f} | {t / raw:.2f}× |" for n, t in sdpa_rows]
    lines += ["", f"tinyattn SDPA / raw matmuls = {spread(ratio('tinyattn SDPA', 'raw matmuls Q·Kᵀ and S·V'))} "
              f"(target ≤ 1.5×).",
              f"reference / kernel = {spread(ratio('tinyattn SDPA, reference', 'tinyattn SDPA'))}: what the "
              f"kernel buys.", "", "Command: `python benchmarks/attention.py`"]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("attention", text)


if __name__ == "__main__":
    main()
