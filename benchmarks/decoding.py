"""Decoding with and without the KV cache: tokens/s as the output grows; beam vs greedy answers.

    python benchmarks/decoding.py                  # lengths 8 … 128; writes the README section
    python benchmarks/decoding.py --lengths 8 32 --no-write       # a quick look

Part 1 times greedy decoding of a batch of 8 real date sources with a randomly initialized
Translator of the trained one's size (d_model 64, 4 heads, 2 + 2 layers, float32) and a
positional table long enough, forced to run ``length`` steps (``stop_at_eos=False``). Cached:
each step feeds one new position through the decoder, reading the stored keys/values of the
past and the memory's keys/values projected once. Uncached: each step recomputes the decoder
over the whole prefix (O(T²) work in total). Medians of interleaved runs, same process.

Part 2 decodes the 1000 test dates of the committed checkpoint greedily and with beam search,
and counts how often the beam changes the answer and what that does to exact match.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, os.environ.get("OMP_NUM_THREADS", "1"))  # before NumPy loads BLAS

import argparse  # noqa: E402

import numpy as np  # noqa: E402

import tinyattn as ta  # noqa: E402
from _common import interleaved_medians, machine_line, progress, write_section  # noqa: E402
from tinyattn import data, train  # noqa: E402
from tinyattn.models import Translator  # noqa: E402

BATCH = 8


def time_lengths(lengths, repeat: int) -> list:
    ta.manual_seed(0)
    model = Translator(max_len=max(lengths) + 1).eval()
    _, _, test = data.date_splits(10, 10, BATCH, seed=0)
    rows = []
    for length in lengths:
        progress(f"length {length}")
        fns = {use: (lambda use=use, length=length: model.greedy_decode(test.src, length, use_cache=use,
                                                                        stop_at_eos=False))
               for use in (True, False)}
        t = interleaved_medians(fns, repeat=repeat)
        rows.append({"length": length, "cached_s": t[True], "uncached_s": t[False],
                     "cached_tok_s": BATCH * length / t[True], "uncached_tok_s": BATCH * length / t[False]})
    return rows


def beam_effect(beams) -> list:
    model, config, _ = train.load_translator()
    _, _, test = data.date_splits(config.n_train, config.n_val, config.n_test, config.seed)
    greedy = train.translate_predictions(model, test)
    truth = test.targets
    rows = [{"search": "greedy", "exact": np.mean([p == t for p, t in zip(greedy, truth)]), "changed": 0,
             "fixed": 0, "broken": 0}]
    for k, lp in beams:
        progress(f"beam {k}, length penalty {lp}")
        beam = train.translate_predictions(model, test, beam_size=k, length_penalty=lp)
        changed = [i for i, (g, b) in enumerate(zip(greedy, beam)) if g != b]
        rows.append({"search": f"beam {k}, length_penalty {lp}",
                     "exact": np.mean([p == t for p, t in zip(beam, truth)]), "changed": len(changed),
                     "fixed": sum(beam[i] == truth[i] for i in changed),
                     "broken": sum(greedy[i] == truth[i] for i in changed)})
    return rows


def markdown(timing, beams, n_test) -> str:
    lines = ["Greedy decoding of 8 date sources, forced to `length` steps, with a randomly initialized",
             "Translator of the trained size (d_model 64, 4 heads, 2 + 2 layers, float32), BLAS on one",
             "thread; medians of interleaved runs in one process on a shared, busy 2-core machine.",
             "", "| output length | cached tokens/s | uncached tokens/s | speed-up |", "|---:|---:|---:|---:|"]
    for r in timing:
        lines.append(f"| {r['length']} | {r['cached_tok_s']:,.0f} | {r['uncached_tok_s']:,.0f} | "
                     f"{r['uncached_s'] / r['cached_s']:.2f}× |")
    lines += ["", f"Beam search vs greedy on the {n_test} test dates of the committed checkpoint "
              "(`tinyattn/checkpoints/translate.npz`):", "",
              "| search | exact match | answers changed vs greedy | fixed | broken |", "|---|---:|---:|---:|---:|"]
    for r in beams:
        lines.append(f"| {r['search']} | {r['exact']:.3f} | {r['changed']} | {r['fixed']} | {r['broken']} |")
    lines += ["", f"Machine: {machine_line()}.", "", "Command: `python benchmarks/decoding.py`."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; leave README.md alone")
    args = parser.parse_args(argv)
    ta.set_num_threads(1)
    timing = time_lengths(args.lengths, args.repeat)
    beams = beam_effect([(4, 0.0), (8, 0.0), (4, 1.0)])
    text = markdown(timing, beams, 1000)
    print(text)
    if not args.no_write:
        write_section("decoding", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
