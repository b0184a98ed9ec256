"""``python -m tinyattn.figures``: regenerate every figure in ``figures/`` (PNGs, and the interactive
HTML views of ``tinyattn.interactive``).

The figures themselves live in ``tinyattn.gallery`` (one module per topic, each figure a function
registered by name); this module only saves them. The notebooks draw the same functions with
``tinyattn.figures.make(name)``, so the pictures in the README and in the notebooks agree. Every
figure is seeded: on one machine with the same library versions a rerun gives the same bytes
(the two figures of round-off errors, ``flash_error`` and ``gradcheck_errors``, depend on the
CPU's BLAS kernels and differ between machines).

    python -m tinyattn.figures                 # all figures into ./figures
    python -m tinyattn.figures --list          # names and descriptions
    python -m tinyattn.figures --only score_matrix head_grid --out /tmp/figs
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .gallery import FIGURES, FigureSkipped, make
from .serialization import atomic_write, check_writable

__all__ = ["FIGURES", "make", "save_figure", "main"]


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
    if args.list:
        for name, (_, description) in FIGURES.items():
            print(f"{name:28s} {description}")
        return 0
    try:  # before rendering, so a bad folder does not cost the run
        check_writable(args.out, "folder")
    except ValueError as err:
        parser.error(f"--out: {err}")
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
        try:
            fig = make(name)
        except FigureSkipped as why:  # its input is not on this machine (e.g. a pretrained model)
            skipped.append(name)
            print(f"[{i}/{len(names)}] {name}: skipped: {why}", flush=True)
            continue
        if hasattr(fig, "savefig"):
            path = os.path.join(args.out, f"{name}.png")
            save_figure(fig, path)
        else:  # an interactive view (.html) or a browser screenshot (.png)
            path = os.path.join(args.out, f"{name}{fig.suffix}")
            fig.save(path)
        print(f"[{i}/{len(names)}] {path}  ({time.perf_counter() - t0:.1f}s)", flush=True)
    note = f", {len(skipped)} skipped ({', '.join(skipped)})" if skipped else ""
    print(f"{len(names) - len(skipped)} figure(s) written to {args.out}/ in "
          f"{time.perf_counter() - start:.1f}s{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
