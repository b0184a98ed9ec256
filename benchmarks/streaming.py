"""The streaming experiment: loss vs position far past the training window, three caches.

    python benchmarks/streaming.py                 # trains RoPE and ALiBi GPTs, ~3 minutes on one core
    python benchmarks/streaming.py --steps 50 --length 128 --no-write     # a quick look

Trains one small GPT per position scheme (RoPE, ALiBi; ``tinyattn.streaming.StreamConfig``) on
rows of T_train = 64 tokens of the order-2 Markov stream (``tinyattn.data.markov_stream``), then
reads ``--rows`` fresh rows of ``--length`` tokens one token at a time with a sliding-window
cache (64 keys), a window + 4 sinks cache (64 keys) and the full cache (one causal forward,
checked against token-by-token decoding with a KVCache). Writes the checkpoints
(tinyattn/checkpoints/streaming_{rope,alibi}.npz + .json), the per-position losses to
tinyattn/measurements/streaming.json (plotted by the ``streaming_loss`` figure) and the band
table to the ``streaming`` section of benchmarks/README.md.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before NumPy loads BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from _common import machine_line, progress, write_section  # noqa: E402
from tinyattn import data, streaming  # noqa: E402
from tinyattn.serialization import atomic_write  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "tinyattn", "measurements", "streaming.json")
CHECKPOINT = os.path.join(ROOT, "tinyattn", "checkpoints", "streaming_{}.npz")


def bands(T_train: int, length: int) -> list:
    """Position bands [lo, hi): from 2 (the first position the chain's two-token context is known)."""
    edges = [2, T_train] + [e for e in (2 * T_train, 4 * T_train, 8 * T_train, 16 * T_train) if e < length]
    return [(lo, hi) for lo, hi in zip(edges, edges[1:] + [length])]


def run(positions: str, args) -> dict:
    config = streaming.StreamConfig(positions=positions, steps=args.steps)
    progress(f"training {positions} for {config.steps} steps")
    model, result, history = streaming.train_stream(config, log=progress)
    if args.write:
        streaming.save_stream_run(model, config, result, history, CHECKPOINT.format(positions))
    table = data.markov_table(config.seed)
    rows = data.markov_stream(args.rows, args.length + 1, np.random.default_rng([config.seed, 4]), table)
    curves, seconds = {}, {}
    for name, (_, make) in streaming.CACHES.items():
        t0 = time.perf_counter()
        if name == "full":
            losses = streaming.full_losses(model, rows)  # (rows, length)
            decoded = streaming.decode_losses(model, rows[:, :args.check + 1], lambda: make(config.train_len))
            result["full_cache_vs_recompute_max_abs"] = float(np.abs(decoded - losses[:, :args.check]).max())
        else:
            losses = streaming.decode_losses(model, rows, lambda: make(config.train_len))
        seconds[name] = round(time.perf_counter() - t0, 2)
        curves[name] = losses.mean(axis=0)  # (length,)
        progress(f"  {name}: {seconds[name]} s")
    band_table = {name: [float(c[lo:hi].mean()) for lo, hi in bands(config.train_len, args.length)]
                  for name, c in curves.items()}
    sinks = streaming.sink_attention(model, rows[:, :config.train_len])  # (layers, H)
    return {"config": {k: getattr(config, k) for k in ("positions", "steps", "batch_size", "train_len",
                                                        "d_model", "num_heads", "num_layers", "lr")},
            "result": result, "curves": {k: np.round(v, 5).tolist() for k, v in curves.items()},
            "bands": band_table, "attention_on_first_token": np.round(sinks, 4).tolist(),
            "eval_seconds": seconds}


def markdown(out: dict) -> str:
    lines = [f"`{out['command']}` — {out['machine']}", "",
             f"Order-2 Markov stream of {data.MARKOV_TOKENS} tokens; best possible loss (entropy rate) "
             f"{out['entropy_rate']:.4f} nats at every position ≥ 2, chance {np.log(data.MARKOV_TOKENS):.4f}. "
             f"Trained on rows of T_train = {out['train_len']}; read {out['rows']} rows of {out['length']} tokens. "
             f"Mean next-token loss per position band (window and window + sinks: {out['train_len']} keys "
             f"each):", "",
             "| model | cache | " + " | ".join(f"[{lo}, {hi})" for lo, hi in out["bands"]) + " |",
             "|---|---|" + "---:|" * len(out["bands"])]
    for positions, run_out in out["runs"].items():
        for name, values in run_out["bands"].items():
            label = streaming.CACHES[name][0]
            lines.append(f"| {positions} | {label} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    lines.append("")
    for positions, run_out in out["runs"].items():
        att = np.asarray(run_out["attention_on_first_token"])
        lines.append(f"{positions}: test loss at T_train {run_out['result']['test_loss']:.4f}; mean weight on "
                     f"the first token \"^\" per head (queries ≥ 8), layer 1: "
                     f"{', '.join(f'{a:.3f}' for a in att[0])}; layer 2: {', '.join(f'{a:.3f}' for a in att[-1])} "
                     f"(uniform over the keys would be ≈ {np.mean(1 / np.arange(9, out['train_len'] + 1)):.3f}).")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=streaming.StreamConfig.steps)
    parser.add_argument("--length", type=int, default=512, help="tokens read per row")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--check", type=int, default=128, help="positions decoded with a KVCache to check 'full'")
    parser.add_argument("--positions", nargs="+", default=["rope", "alibi"])
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    runs = {p: run(p, args) for p in args.positions}
    first = next(iter(runs.values()))
    out = {"command": "python benchmarks/streaming.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip(),
           "machine": machine_line(), "entropy_rate": first["result"]["entropy_rate"],
           "train_len": first["config"]["train_len"], "length": args.length, "rows": args.rows,
           "num_sinks": streaming.NUM_SINKS, "bands": bands(first["config"]["train_len"], args.length),
           "runs": runs, "seconds": round(time.perf_counter() - start, 1)}
    text = markdown(out)
    print(text)
    if args.write:
        atomic_write(RESULTS, lambda f: f.write(json.dumps(out, indent=1).encode() + b"\n"))
        write_section("streaming", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
