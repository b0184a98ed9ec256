"""Save and load state_dicts as ``.npz`` files: no pickle, atomic writes."""

from __future__ import annotations

import io
import math
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np

from .autograd import Tensor

__all__ = ["save", "load", "atomic_write", "check_writable", "shape_problem"]

MAX_DIMS = 64  # NumPy's limit on ndim
MAX_ELEMENTS = 2 ** 60  # dims multiplied (a zero counted as 1) times 8 bytes stays within NumPy's int64 sizes


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


def check_writable(path, kind: str = "file") -> str:
    """Check, before any work, that ``path`` can be written as a ``kind`` ("file" or "folder").

    A file must not be an existing folder; a folder must not be an existing file; the nearest
    folder that exists must be writable (missing folders are created at write time). Returns the
    path; raises ValueError naming it and what is wrong.
    """
    path = os.fspath(path)
    if not path:
        raise ValueError(f"the output {kind} name is empty")
    full = os.path.abspath(path)
    if kind == "file" and path.endswith(("/", os.sep)):
        raise ValueError(f"{path} ends with a path separator; expected a file name")
    if kind == "file" and os.path.isdir(full):
        raise ValueError(f"{path} is a folder; expected a file name")
    if kind == "folder" and os.path.exists(full) and not os.path.isdir(full):
        raise ValueError(f"{path} is a file; expected a folder")
    parent = full if kind == "folder" else os.path.dirname(full)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"cannot write {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: {parent} is not writable")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def shape_problem(shape) -> str | None:
    """Why NumPy cannot make an array of ``shape`` (a tuple of ints >= 0), or None if it can.

    More than 64 dims, or dims whose product (a zero counted as 1) exceeds 2**60 elements: NumPy
    checks that product even for an empty array, so (0, 2**70) fails inside ``reshape``.
    """
    if len(shape) > MAX_DIMS:
        return f"it has {len(shape)} dimensions; at most {MAX_DIMS} are possible"
    if math.prod(max(d, 1) for d in shape) > MAX_ELEMENTS:
        return "it is too large (its dims multiply to more than 2**60 elements, counting a zero as 1)"
    return None


ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")  # a first member, or the end record of an empty archive
MAX_KEY_BYTES = 0xFFFF - len(".npy")  # a zip member name holds at most 65,535 bytes


def _storable(dtype: np.dtype) -> bool:
    """Can ``load`` read an array of this dtype back? Numbers and bools only (no pickle, no text)."""
    return not dtype.hasobject and dtype.kind in "biufc"


def _check_key(name) -> None:
    """A key ``save`` can store so that ``load`` gives it back unchanged, or a TypeError/ValueError."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"save: every name must be a non-empty str, got {name!r:.80}")
    if "\0" in name:
        raise ValueError(f"save: the name {name!r:.80} holds a NUL character, which a zip archive "
                         f"cannot store (it would cut the name short and merge entries)")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError as err:
        raise ValueError(f"save: the name {name!r:.80} is not valid UTF-8 text ({err.reason} at "
                         f"position {err.start})") from None
    if size > MAX_KEY_BYTES:
        raise ValueError(f"save: the name {name!r:.20}... is {size:,} bytes long; a zip archive holds "
                         f"names of at most {MAX_KEY_BYTES:,} bytes")


def _as_array(name: str, value) -> np.ndarray:
    """The array ``save`` writes for one entry, or a TypeError naming the key and what it holds."""
    try:
        arr = value.data if isinstance(value, Tensor) else np.asarray(value)
    except ValueError as err:  # ragged nested lists
        raise TypeError(f"save: {name!r:.80} is not a numeric array ({err})") from None
    if not _storable(arr.dtype):
        raise TypeError(f"save: {name!r:.80} has dtype {arr.dtype}: not a numeric array (numbers or bools), "
                        f"so ta.load could not read it back (text, bytes, dates, records and objects are "
                        f"refused: convert it, e.g. to codes or to np.frombuffer(s.encode(), np.uint8))")
    return arr


def save(state_dict, path) -> None:
    """Write a dict of name -> array (or Tensor) to ``path`` as an uncompressed ``.npz``.

    The archive holds one ``NAME.npy`` per entry, exactly as ``np.savez`` writes it (so
    ``np.load`` reads it too), but any name works, ``"file"`` included. Every entry is checked
    before anything is written: what ``load`` would refuse (a dtype that is not a number or a
    bool, a name with a NUL or that is not UTF-8 text) is a TypeError/ValueError naming the key.
    The file is written under a temporary name and renamed, so a good file is never half-replaced.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"save expects a dict of name -> array (such as module.state_dict()), "
                        f"got {type(state_dict).__name__}")
    arrays = {}
    for name, value in state_dict.items():
        _check_key(name)
        arrays[name] = _as_array(name, value)
    check_writable(path)

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for name, arr in arrays.items():
                with z.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)

    atomic_write(path, write)


class _ArchiveError(ValueError):
    """A ValueError of ``load`` that already names the file and what is wrong with it."""


def load(path) -> dict:
    """Read a ``.npz`` written by ``save`` (or ``np.savez``) into a dict of name -> ndarray.

    Never unpickles. Every member's header is checked before its data is read: a file that is
    not an ``.npz`` archive, a truncated or corrupt one, or a member that is not a plain numeric
    array is a ``ValueError`` naming the file (and the member). ``path`` may also be an open
    binary file.
    """
    if hasattr(path, "read"):  # an open file: read it whole, then check it like any file
        data, path = path.read(), str(getattr(path, "name", "<file object>"))
        if not isinstance(data, bytes):
            raise TypeError(f"{path} is open in text mode; open it with 'rb' (an .npz archive is binary)")
        source = io.BytesIO(data)
    else:
        source = path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file")
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path} is a folder; expected an .npz file written by ta.save")
    if isinstance(source, io.BytesIO):
        starts_like_zip = source.getvalue()[:4] in ZIP_STARTS
    else:
        with open(source, "rb") as f:
            starts_like_zip = f.read(4) in ZIP_STARTS
    if starts_like_zip and not zipfile.is_zipfile(source):
        raise ValueError(f"{path}: truncated or corrupt .npz archive (its central directory is missing)")
    if not starts_like_zip:
        raise ValueError(f"{path}: not an .npz archive (tinyattn saves with ta.save; a single "
                         f".npy array or a text file is not a state_dict)")
    out = {}
    try:
        with zipfile.ZipFile(source) as z:
            for info in z.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if name in out:
                    raise _ArchiveError(f"{path}: the archive holds {name!r} twice (as {info.filename!r} "
                                        f"and an earlier member); one would silently replace the other")
                with z.open(info) as member:
                    out[name] = _read_member(member, info.file_size, path, name)
    except _ArchiveError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, struct.error, ValueError,
            NotImplementedError, RuntimeError) as err:  # what zipfile raises on damaged bytes
        raise _ArchiveError(f"{path}: truncated or corrupt .npz archive ({err})") from None
    return out


def _read_member(member, size: int, path: str, name: str) -> np.ndarray:
    """One ``.npy`` member: its header checked against its size before the data is read."""
    try:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"unknown .npy version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
            else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(member)
    except ValueError as err:
        raise _ArchiveError(f"{path}: member {name!r} is not an array ({err})") from None
    if not _storable(dtype):
        raise _ArchiveError(f"{path}: member {name!r} is not an array of numbers (dtype {dtype})")
    problem = shape_problem(shape)
    if problem:
        raise _ArchiveError(f"{path}: member {name!r} has shape {shape!r:.200}, which NumPy cannot hold: "
                            f"{problem}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != size - member.tell():
        raise _ArchiveError(f"{path}: truncated or corrupt: member {name!r} should hold {nbytes} bytes "
                            f"of data for shape {shape}, but holds {size - member.tell()}")
    data = np.frombuffer(member.read(nbytes), dtype=dtype)
    if data.nbytes != nbytes:
        raise _ArchiveError(f"{path}: truncated or corrupt: member {name!r} ends early")
    return data.reshape(shape, order="F" if fortran else "C").copy()
