"""Shared helpers for the benchmark scripts: timing medians, peak memory, torch detection and
writing one script's section of benchmarks/README.md."""

from __future__ import annotations

import gc
import os
import platform
import re
import statistics
import sys
import time
import tracemalloc

import numpy as np

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")


def median_time(fn, repeat: int = 7, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(fns: dict, repeat: int = 9, warmup: int = 1) -> dict:
    """Median seconds of each ``fns[name]()``, timed one run of each per round.

    Interleaving puts slow drifts of a shared machine on every implementation alike. Time
    PyTorch in a later call than NumPy code: its OpenMP threads keep spinning on the cores
    for a while after each call and would slow whatever runs next.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for i in range(repeat):
        progress(f"  round {i + 1}/{repeat}")
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def peak_memory(fn) -> int:
    """Peak bytes allocated (as NumPy reports them to tracemalloc) while ``fn()`` runs."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def try_torch():
    """torch if installed (the optional oracle), else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def machine_line() -> str:
    torch = try_torch()
    parts = [f"{platform.machine()}, {os.cpu_count()} cores", f"Python {platform.python_version()}",
             f"NumPy {np.__version__}"]
    if torch is not None:
        parts.append(f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads)")
    return "; ".join(parts)


def write_section(name: str, markdown: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in README.md."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise KeyError(f"benchmarks/README.md has no {start} ... {end} markers")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: f"{start}\n{markdown.strip()}\n{end}", text)
    tmp = README + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, README)


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
