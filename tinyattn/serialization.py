"""Save and load state_dicts as ``.npz`` files: no pickle, atomic writes."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from .autograd import Tensor

__all__ = ["save", "load"]


def atomic_write(path, write) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it.

    A crash mid-write leaves the old file (or none), never a half-written one.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(state_dict, path) -> None:
    """Write a dict of name -> array (or Tensor) to ``path`` as an uncompressed ``.npz``."""
    arrays = {}
    for name, value in state_dict.items():
        arr = value.data if isinstance(value, Tensor) else np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"save: {name!r} is not a numeric array (object arrays need pickle)")
        arrays[name] = arr
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load(path) -> dict:
    """Read a ``.npz`` written by ``save`` into a dict of name -> ndarray (no pickle)."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}
