"""Fast paths, each the same math as a readable reference elsewhere, tested equal to it.

- ``attention``: the tiled, threaded scaled dot-product attention that
  ``nn.functional.scaled_dot_product_attention`` dispatches to (see ``kernels/tiled_attention.py``
  for the tricks and what each buys).
- ``erf``: the error function for arrays, which the exact GELU needs.

``ENABLED`` switches the dispatch; ``with tinyattn.kernels.disabled(): ...`` runs the readable
reference instead (the tests compare the two, and the benchmark times both).
"""

from __future__ import annotations

import contextlib

from .tiled_attention import attention
from .erf import erf

__all__ = ["attention", "erf", "ENABLED", "disabled"]

ENABLED = True


@contextlib.contextmanager
def disabled():
    """Inside this block, functions with a fast path run their readable reference instead."""
    global ENABLED
    previous, ENABLED = ENABLED, False
    try:
        yield
    finally:
        ENABLED = previous
