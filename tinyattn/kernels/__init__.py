"""Fast paths, each the same math as a readable reference elsewhere, tested equal to it.

- ``attention``: the tiled, threaded scaled dot-product attention that
  ``nn.functional.scaled_dot_product_attention`` dispatches to (see ``kernels/tiled_attention.py``
  for the tricks and what each buys).
- ``erf``: the error function for arrays, which the exact GELU needs, and ``gelu``, the exact
  GELU done block by block, that ``nn.functional.gelu`` dispatches to (see ``kernels/erf.py``).

``ENABLED`` switches the dispatch; ``with tinyattn.kernels.disabled(): ...`` runs the readable
reference instead (the tests compare the two, and the benchmark times both).
"""

from __future__ import annotations

import contextlib

from .tiled_attention import attention
from .erf import erf, gelu

__all__ = ["attention", "erf", "gelu", "ENABLED", "disabled"]

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
