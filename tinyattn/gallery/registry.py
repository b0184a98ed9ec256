"""The figure registry: every figure is a function returning a matplotlib Figure, registered by name.

A function may instead return an object with a ``suffix`` (e.g. ".html") and ``save(path)``, such
as an interactive view (``tinyattn.interactive``) or a browser screenshot: it is saved as
``figures/{name}{suffix}``.

    @figure("score_matrix", "attention weights on a labelled sentence")
    def score_matrix(): ...

``make(name)`` builds one (seeded) for a notebook; ``python -m tinyattn.figures`` saves them all.
"""

from __future__ import annotations

__all__ = ["FIGURES", "FigureSkipped", "figure", "make"]

FIGURES: dict = {}  # name -> (function returning a Figure, one-line description)


class FigureSkipped(RuntimeError):
    """Raised by a figure whose input is not available here (e.g. a pretrained model not on disk);
    ``python -m tinyattn.figures`` reports the figure as skipped instead of failing."""


def figure(name: str, description: str):
    """Register ``fn() -> matplotlib.figure.Figure`` as the figure ``figures/{name}.png`` (or ``fn()`` ->
    an object with ``suffix`` and ``save(path)``, as ``figures/{name}{suffix}``)."""

    def register(fn):
        if name in FIGURES:
            raise ValueError(f"figure {name!r} is registered twice")
        FIGURES[name] = (fn, description)
        return fn

    return register


def make(name: str):
    """Build the figure ``name`` (seeded) and return it, without saving: for notebooks."""
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(sorted(FIGURES))}")
    return FIGURES[name][0]()
