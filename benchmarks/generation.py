"""GPT generation with and without the KV cache: tokens/s against the generated length.

    python benchmarks/generation.py                       # T = 64 … 512; writes README section
    python benchmarks/generation.py --lengths 32 64 --no-write

A GPT of 4 layers, d_model 128, 4 heads (float32, block_size 512, random weights: speed does
not depend on what was learned) generates from a one-token prompt, batch 1, greedily, until the
sequence holds T tokens. Without the cache every step reruns the whole prefix (step t costs
O(t) rows through every layer and O(t²) attention scores), so the whole run is O(T²) work
(O(T³) in the scores); with the cache every step runs one new row against the t cached keys.
Both runs of each length are timed in the same round, interleaved, and the medians reported;
the cache's bytes are read from the KVCache objects of a prefilled sequence and checked against
``kv_cache_bytes``. BLAS runs on one thread unless OPENBLAS_NUM_THREADS / OMP_NUM_THREADS is set.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, os.environ.get("OMP_NUM_THREADS", "1"))  # before NumPy loads BLAS

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402

import tinyattn as ta  # noqa: E402
from _common import interleaved_medians, machine_line, progress, write_section  # noqa: E402
from tinyattn.efficient import KVCache, kv_cache_bytes  # noqa: E402
from tinyattn.models import GPT  # noqa: E402
from tinyattn.serialization import atomic_write  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "generation.json")
LAYERS, D_MODEL, HEADS, VOCAB, BLOCK = 4, 128, 4, 64, 512


def cache_bytes(model: GPT, T: int) -> int:
    """Bytes held by the per-layer KV caches after a T-token sequence went through the model."""
    caches = [KVCache() for _ in model.blocks]
    with ta.no_grad():
        model(np.zeros((1, T), np.int64), caches)
    return sum(c.nbytes for c in caches)


def measure(lengths, repeat: int) -> list:
    ta.manual_seed(0)
    model = GPT(VOCAB, BLOCK, d_model=D_MODEL, num_heads=HEADS, num_layers=LAYERS).eval()
    prompt = np.zeros((1, 1), np.int64)
    rows = []
    for T in lengths:
        progress(f"T = {T}")
        new = T - 1
        times = interleaved_medians({
            "cached": lambda new=new: model.generate(prompt, new, temperature=0, use_cache=True),
            "uncached": lambda new=new: model.generate(prompt, new, temperature=0, use_cache=False),
        }, repeat=repeat)
        nbytes = cache_bytes(model, T)
        assert nbytes == kv_cache_bytes(LAYERS, HEADS, D_MODEL // HEADS, T, bytes_per_element=4)
        rows.append({"T": T, "cached_s": times["cached"], "uncached_s": times["uncached"],
                     "cached_tokens_per_s": new / times["cached"],
                     "uncached_tokens_per_s": new / times["uncached"],
                     "speedup": times["uncached"] / times["cached"], "cache_bytes": nbytes})
    return rows


def markdown(rows: list, repeat: int, machine: str) -> str:
    lines = [f"GPT ({LAYERS} layers, d_model {D_MODEL}, {HEADS} heads, float32, batch 1) generating "
             f"greedily from a 1-token prompt to T tokens; medians of {repeat} interleaved runs.",
             "", f"Machine: {machine}.", "",
             "| T | cached tokens/s | uncached tokens/s | speed-up | KV cache |",
             "|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['T']} | {r['cached_tokens_per_s']:,.0f} | {r['uncached_tokens_per_s']:,.0f} | "
                     f"{r['speedup']:.1f}× | {r['cache_bytes'] / 1024:,.0f} KiB |")
    lines += ["", "The cache holds K and V for every layer and position: 2 · layers · T · d_model · 4 "
              "bytes (= `kv_cache_bytes`, checked). Without it every step reruns the whole prefix, "
              "so the uncached tokens/s fall as T grows; with it every step is one row against t "
              "keys, and the speed-up grows with T. Single timings on a shared machine are noisy "
              "(other jobs were running); the speed-up measured in the same round is the number "
              "to read.", "",
              "Command: `python benchmarks/generation.py` (`--from-results` re-renders this section "
              "from `benchmarks/results/generation.json` without measuring)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; leave the README alone")
    parser.add_argument("--from-results", action="store_true",
                        help="re-render the README section from the saved results; measure nothing")
    args = parser.parse_args(argv)
    if args.from_results:
        with open(RESULTS, encoding="utf-8") as f:
            saved = json.load(f)
        text = markdown(saved["rows"], saved["repeat"], saved["machine"])
        print(text)
        write_section("generation", text)
        return 0
    if max(args.lengths) > BLOCK or min(args.lengths) < 2:
        parser.error(f"lengths must lie in 2..{BLOCK}, got {args.lengths}")
    rows = measure(args.lengths, args.repeat)
    text = markdown(rows, args.repeat, machine_line())
    print(text)
    if not args.no_write:
        saved = {"machine": machine_line(), "repeat": args.repeat, "rows": rows}
        atomic_write(RESULTS, lambda f: f.write(json.dumps(saved, indent=1).encode() + b"\n"))
        write_section("generation", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
