"""A real pretrained BERT: all-MiniLM-L6-v2 encoding 64 sentences of about 32 tokens, tinyattn
vs Hugging Face transformers on PyTorch CPU (when installed), same thread count, same run,
medians and ratios; then a cProfile of where tinyattn's time goes.

Both sides do the same work as sentence-transformers: sort by length, batches of 32, tokenize
with padding, the 6-layer encoder, masked mean pooling, L2 normalization.

    python benchmarks/pretrained.py              # prints the tables, rewrites benchmarks/README.md
    python benchmarks/pretrained.py --threads 2  # BLAS and PyTorch threads (default 1)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats

import numpy as np

import tinyattn as ta
import tinyattn.pretrained as pretrained
from _common import interleaved_medians, machine_line, progress, write_section

WORDS = ("the a one every small large quick slow red green model attention head layer token word "
         "sentence river city music teacher student computer garden winter summer reads writes "
         "builds finds likes under over near after before because while quietly often never "
         "tomorrow yesterday mountain ocean library kitchen").split()


def make_sentences(n: int = 64, seed: int = 0) -> list:
    """``n`` seeded sentences of 25 to 31 random words and a full stop (about 32 tokens)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(25, 32))).capitalize() + "." for _ in range(n)]


def hf_encoder(folder):
    """A Hugging Face encode(sentences) doing sentence-transformers' steps, or None."""
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        return None, None
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()

    def encode(sentences, batch_size=32):
        order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
        out = np.zeros((len(sentences), model.config.hidden_size), np.float32)
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                b = tok([sentences[i] for i in idx], padding=True, truncation=True, max_length=256,
                        return_tensors="pt")
                h = model(**b).last_hidden_state
                m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
                e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(e, dim=1).numpy()
        return out

    return torch, encode


def profile_table(fn, top: int = 12) -> tuple:
    """cProfile ``fn()``: (markdown rows of the top functions by own time, total seconds)."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    total = stats.total_tt
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]  # by own ("tottime") time
    lines = ["| function | calls | own ms | own % |", "|---|---:|---:|---:|"]
    for (path, line, name), (_, ncalls, tottime, _, _) in rows:
        where = f"{path.split('tinyattn/')[-1]}:{line}" if "tinyattn" in path else path.split("/")[-1]
        label = name if path == "~" else f"{name} ({where})"
        lines.append(f"| `{label}` | {ncalls} | {tottime * 1e3:.1f} | {100 * tottime / total:.0f} % |")
    return lines, total


def torch_profile_table(torch, fn, top: int = 6) -> tuple:
    """torch.profiler on ``fn()``: (markdown rows of the top PyTorch ops by own CPU time, total seconds)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    lines = ["| PyTorch op | calls | own ms | own % |", "|---|---:|---:|---:|"]
    for e in events[:top]:
        own = e.self_cpu_time_total / 1e6
        lines.append(f"| `{e.key}` | {e.count} | {own * 1e3:.1f} | {100 * own / total:.0f} % |")
    return lines, total


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="do not rewrite benchmarks/README.md")
    args = parser.parse_args(argv)
    ta.set_num_threads(args.threads)
    model, tok = pretrained.load()
    sentences = make_sentences()
    lengths = [len(tok.encode(s)) for s in sentences]
    torch, hf_encode = hf_encoder(pretrained.model_folder())
    ours = model.encode(sentences)
    fns = {"tinyattn": lambda: model.encode(sentences)}
    if torch is not None:
        torch.set_num_threads(args.threads)
        err = float(np.abs(hf_encode(sentences) - ours).max())
        progress(f"max |tinyattn - HF| over the embeddings: {err:.1e}")
        assert err < 1e-4, f"tinyattn and Hugging Face embeddings differ by {err}"
    hf_fns = {} if torch is None else {"Hugging Face transformers (PyTorch CPU)": lambda: hf_encode(sentences)}
    if args.threads == 1:  # no idle PyTorch threads to spin: interleave, so load drifts hit both alike
        progress("timing tinyattn and Hugging Face, interleaved ...")
        times = interleaved_medians({**fns, **hf_fns}, repeat=args.repeat)
    else:  # PyTorch's spinning OpenMP threads would slow what runs next: time it last
        progress("timing tinyattn, then Hugging Face ...")
        times = interleaved_medians(fns, repeat=args.repeat)
        times.update(interleaved_medians(hf_fns, repeat=args.repeat))
    progress("profiling tinyattn ...")
    prof_lines, prof_total = profile_table(lambda: model.encode(sentences))
    if torch is not None:
        progress("profiling Hugging Face ...")
        hf_lines, hf_total = torch_profile_table(torch, lambda: hf_encode(sentences))
    base = times["tinyattn"]
    lines = [f"all-MiniLM-L6-v2 (6 layers, 12 heads, width 384) encodes {len(sentences)} sentences of "
             f"{min(lengths)}–{max(lengths)} tokens (mean {np.mean(lengths):.1f}, with [CLS] and [SEP]): "
             f"tokenize, encoder, mean pooling, normalization, in batches of 32; float32, "
             f"{args.threads} thread(s) for BLAS and PyTorch; medians of {args.repeat} runs"
             f"{' (one of each per round)' if args.threads == 1 else ''}.", "",
             f"Machine: {machine_line()}. A shared, busy 2-core VM: read ratios, not absolute times.", "",
             "| implementation | median ms | vs tinyattn |", "|---|---:|---:|"]
    lines += [f"| {name} | {t * 1e3:.0f} | {t / base:.2f}× |" for name, t in times.items()]
    if torch is not None:
        ratio = base / times["Hugging Face transformers (PyTorch CPU)"]
        lines += ["", f"tinyattn takes **{ratio:.2f}×** the time of Hugging Face on PyTorch "
                      f"(target ≤ 1.5×, aim ≤ 1.0×); the embeddings agree to {err:.0e}."]
    lines += ["", f"Where tinyattn's time goes (cProfile, one encode, {prof_total * 1e3:.0f} ms under the "
                  f"profiler; own time of the top functions):", ""] + prof_lines
    if torch is not None:
        lines += ["", f"And Hugging Face's (torch.profiler, one encode, {hf_total * 1e3:.0f} ms of PyTorch ops; "
                      f"`aten::addmm` is its matrix products, `linear` above is tinyattn's):", ""] + hf_lines
    lines += ["", f"Command: `python benchmarks/pretrained.py --threads {args.threads}`"]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("pretrained", text)


if __name__ == "__main__":
    main()
