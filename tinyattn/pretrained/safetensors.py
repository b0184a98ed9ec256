"""A safetensors reader in NumPy that checks the whole file layout before it allocates anything.

The format (https://github.com/huggingface/safetensors): 8 bytes, a little-endian unsigned
header length N; N bytes of UTF-8 JSON, an object mapping each tensor name to
``{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}`` (offsets into the byte
buffer that follows the header), plus an optional ``"__metadata__"`` object of strings; then
the raw little-endian buffer. It holds no code, so reading it can execute nothing; what a
hostile file can still try is a giant header, offsets outside the file, overlapping tensors or
a shape whose size disagrees with its bytes, gaps or trailing bytes between tensors (the reference
refuses them too), a shape too large for NumPy, a wrong type where a string or a list belongs, or
a header nested deeply enough to exhaust the JSON parser. Each of these is a ``ValueError`` naming
the file.
"""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np

from ..serialization import shape_problem

__all__ = ["read_safetensors", "read_header", "DTYPES", "MAX_HEADER_BYTES"]

# safetensors dtype -> (stored little-endian NumPy dtype, dtype returned to the caller)
DTYPES = {
    "F64": (np.dtype("<f8"), np.dtype(np.float64)),
    "F32": (np.dtype("<f4"), np.dtype(np.float32)),
    "F16": (np.dtype("<f2"), np.dtype(np.float32)),
    "BF16": (np.dtype("<u2"), np.dtype(np.float32)),  # the top 16 bits of a float32
    "I64": (np.dtype("<i8"), np.dtype(np.int64)),
    "I32": (np.dtype("<i4"), np.dtype(np.int32)),
    "I16": (np.dtype("<i2"), np.dtype(np.int16)),
    "I8": (np.dtype("i1"), np.dtype(np.int8)),
    "U8": (np.dtype("u1"), np.dtype(np.uint8)),
    "BOOL": (np.dtype("u1"), np.dtype(np.bool_)),
}
MAX_HEADER_BYTES = 100_000_000  # the limit the reference implementation uses


def _reject_duplicates(pairs):
    keys = [k for k, _ in pairs]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        raise ValueError(f"duplicate keys {dups}")
    return dict(pairs)


def _entry(path: str, name, info, buffer_len: int):
    """Check one header entry; return (name, dtype code, shape tuple, begin, end)."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"{where} must be an object with exactly 'dtype', 'shape' and "
                         f"'data_offsets', got {info!r:.200}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(f"{where} has unknown dtype {dtype!r:.40}; known: {', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ValueError(f"{where} has shape {shape!r:.200}; expected a list of integers >= 0")
    problem = shape_problem(tuple(shape))
    if problem:
        raise ValueError(f"{where} has shape {shape!r:.200}, which NumPy cannot hold: {problem}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int for o in offsets)):
        raise ValueError(f"{where} has data_offsets {offsets!r:.200}; expected [begin, end]")
    begin, end = offsets
    if not 0 <= begin <= end <= buffer_len:
        raise ValueError(f"{where} has data_offsets [{begin}, {end}] outside the data buffer of "
                         f"{buffer_len} bytes (the file is truncated or the header is wrong)")
    nbytes = math.prod(shape) * DTYPES[dtype][0].itemsize
    if nbytes != end - begin:
        raise ValueError(f"{where} of dtype {dtype} and shape {tuple(shape)} needs {nbytes} bytes "
                         f"but its data_offsets [{begin}, {end}] span {end - begin}")
    return name, dtype, tuple(shape), begin, end


def _check_tiling(path: str, entries: list, buffer_len: int) -> None:
    """Sorted by offsets, the tensors must fill the data buffer back to back (as the reference requires)."""
    end, prev, prev_begin = 0, None, 0
    for name, _, _, begin, stop in entries:
        if begin < end:
            raise ValueError(f"{path}: tensors {prev!r} [{prev_begin}, {end}] and {name!r} "
                             f"[{begin}, {stop}] overlap")
        if begin > end:
            after = f"{prev!r} ends at byte {end}" if prev else "the data buffer starts at byte 0"
            raise ValueError(f"{path}: {after} but {name!r} begins at {begin}; tensors must follow "
                             f"one another with no gap")
        end, prev, prev_begin = stop, name, begin
    if end != buffer_len:
        raise ValueError(f"{path}: the data buffer has {buffer_len} bytes but the tensors end at {end}; "
                         f"the header does not describe the whole file")


def read_header(path) -> tuple:
    """Validate a safetensors file's layout without reading its tensors.

    Returns ``(entries, metadata, data_start)``: entries is a list of
    ``(name, dtype code, shape, begin, end)`` sorted by ``begin``, metadata a dict of strings,
    data_start the file offset of the byte buffer. Raises ``ValueError`` naming the file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder; expected a .safetensors file")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: {size} bytes is too short for a safetensors file "
                             f"(it starts with an 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > MAX_HEADER_BYTES or n > size - 8:
            raise ValueError(f"{path}: header length {n} is impossible for a file of {size} bytes "
                             f"(expected 2..{min(MAX_HEADER_BYTES, size - 8)})")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: the header is not valid UTF-8 JSON: {e}") from None
    except RecursionError:
        raise ValueError(f"{path}: the header is nested too deeply to be a safetensors header "
                         f"(an object of tensors, each an object of a dtype and two lists)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{path}: __metadata__ must be an object of strings, got {metadata!r:.200}")
    buffer_len = size - 8 - n
    entries = sorted((_entry(path, k, v, buffer_len) for k, v in header.items()), key=lambda e: e[3:])
    _check_tiling(path, entries, buffer_len)
    return entries, metadata, 8 + n


def read_safetensors(path) -> dict:
    """Read every tensor of a safetensors file: ``{name: ndarray}``, in file order.

    F32 and F64 keep their precision; F16 and BF16 become float32; integer and bool tensors
    keep their type. The layout is fully validated (``read_header``) before any tensor is read.
    """
    path = os.fspath(path)
    entries, _, start = read_header(path)
    out = {}
    with open(path, "rb") as f:
        for name, code, shape, begin, end in entries:
            stored, returned = DTYPES[code]
            f.seek(start + begin)
            raw = np.frombuffer(f.read(end - begin), dtype=stored)  # (numel,)
            if code == "BF16":
                arr = (raw.astype(np.uint32) << 16).view(np.float32)  # bf16 = high half of f32
            else:
                arr = raw.astype(returned)
            out[name] = arr.reshape(shape)
    return out
