"""``set_num_threads`` / ``get_num_threads``: the BLAS thread count, as ``torch.set_num_threads``.

NumPy's matrix products run on OpenBLAS with one thread per core. For small matrices (a tiny
model, a notebook example) waking the extra threads costs more than it saves, and on a busy
machine it can cost ten times the work itself; one thread is then much faster. This module finds
the OpenBLAS library that NumPy loaded and calls its own setter, so no extra dependency is
needed. Where that is impossible (another BLAS, or not Linux) it reports False and changes
nothing; the environment variable ``OPENBLAS_NUM_THREADS`` set before starting Python works
everywhere.
"""

from __future__ import annotations

import ctypes
import functools
import os

import numpy as np  # noqa: F401  (loads NumPy's BLAS, which the functions below look for)

__all__ = ["set_num_threads", "get_num_threads"]

_PREFIXES = ("scipy_openblas", "openblas")
_SUFFIXES = ("64_", "_64_", "")


@functools.lru_cache(maxsize=1)
def _openblas():
    """(setter, getter) of the OpenBLAS that NumPy loaded, or None."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in paths:
        if not os.path.exists(path):
            continue
        lib = ctypes.CDLL(path)
        for prefix in _PREFIXES:
            for suffix in _SUFFIXES:
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    setter.argtypes, setter.restype = [ctypes.c_int], None
                    getter.argtypes, getter.restype = [], ctypes.c_int
                    return setter, getter
    return None


def set_num_threads(n: int) -> bool:
    """Use ``n`` threads in NumPy's matrix products; True if applied, False if no OpenBLAS found."""
    if int(n) < 1:
        raise ValueError(f"set_num_threads needs a positive thread count, got {n}")
    blas = _openblas()
    if blas is None:
        return False
    blas[0](int(n))
    return True


def get_num_threads():
    """The number of threads NumPy's OpenBLAS uses, or None if it cannot be found."""
    blas = _openblas()
    return None if blas is None else int(blas[1]())
