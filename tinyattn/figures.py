"""``python -m tinyattn.figures``: regenerate every figure in ``figures/``.

Each figure is a function that returns a matplotlib Figure, registered with ``@figure(name)``
in one of the topic modules of ``tinyattn.gallery`` (engine, attention, training, efficient).
The notebooks call the same functions (``tinyattn.figures.make(name)``), so the pictures in
the README and in the notebooks agree. Every figure is seeded, so a rerun gives the same image.

    python -m tinyattn.figures                 # all figures into ./figures
    python -m tinyattn.figures --list          # names and descriptions
    python -m tinyattn.figures --only score_matrix head_grid --out /tmp/figs
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .serialization import atomic_write

FIGURES: dict = {}  # name -> (function returning a Figure, one-line description)


class FigureSkipped(RuntimeError):
    """Raised by a figure whose input is not available here (e.g. a pretrained model not on disk);
    ``main`` reports the figure as skipped instead of failing."""


def figure(name: str, description: str):
    """Register ``fn() -> matplotlib.figure.Figure`` as the figure ``figures/{name}.png``."""

    def register(fn):
        if name in FIGURES:
            raise ValueError(f"figure {name!r} is registered twice")
        FIGURES[name] = (fn, description)
        return fn

    return register


def make(name: str):
    """Build the figure ``name`` (seeded) and return it, without saving: for notebooks."""
    _load_all()
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(sorted(FIGURES))}")
    return FIGURES[name][0]()


def save_figure(fig, path: str, dpi: int = 110) -> None:
    """Write ``fig`` as PNG through a temporary file and a rename; close it."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, metadata={"Software": None}))
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyattn.figures", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="figures", help="output folder (default: figures)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="build just these figures")
    parser.add_argument("--list", action="store_true", help="list the figures and exit")
    args = parser.parse_args(argv)
    _load_all()
    if args.list:
        for name, (_, description) in FIGURES.items():
            print(f"{name:28s} {description}")
        return 0
    names = args.only or list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s): {', '.join(unknown)}; use --list to see the "
                     f"{len(FIGURES)} known names")
    import matplotlib

    matplotlib.use("Agg")
    start = time.perf_counter()
    skipped = []
    for i, name in enumerate(names, 1):
        t0 = time.perf_counter()
        path = os.path.join(args.out, f"{name}.png")
        # -- issue 12: a figure whose input is missing (FigureSkipped) is reported, not fatal
        try:
            fig = make(name)
        except FigureSkipped as e:
            skipped.append(name)
            print(f"[{i}/{len(names)}] {name}: skipped: {e}", flush=True)
            continue
        save_figure(fig, path)
        print(f"[{i}/{len(names)}] {path}  ({time.perf_counter() - t0:.1f}s)", flush=True)
    note = f", {len(skipped)} skipped ({', '.join(skipped)})" if skipped else ""
    print(f"{len(names) - len(skipped)} figure(s) written to {args.out}/ in "
          f"{time.perf_counter() - start:.1f}s{note}")
    return 0


def _load_all() -> None:
    """Import the topic modules, whose figures register themselves in FIGURES."""
    from . import gallery  # noqa: F401


if __name__ == "__main__":
    # Run through the imported module, whose FIGURES the gallery modules register into
    # (under -m this file is also loaded as __main__, with a registry of its own).
    from tinyattn.figures import main as _main

    sys.exit(_main())
