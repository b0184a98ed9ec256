"""Property-based fuzzing (hypothesis) of the surfaces that read or write files: safetensors,
``ta.save``/``ta.load``, and the grader on random submission notebooks.

The oracles are written here, not taken from the code under test: a safetensors writer and
decoder built byte by byte, the save rule "numbers and bools only, keys that are UTF-8 text
without NUL", and for the grader the score each kind of answer must get. Whatever the input,
the only exception allowed is the documented one (ValueError/TypeError naming the file or key).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import struct
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinyattn as ta
from tinyattn.pretrained import safetensors

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# ----------------------------------------------------------------------------------------------
# safetensors: valid files read exactly; any mutation is read or refused with the file's name
# ----------------------------------------------------------------------------------------------

ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
            "BOOL": 1}


def expected_array(code: str, raw: bytes, shape) -> np.ndarray:
    """What a reader must return for ``raw``, decoded without tinyattn (BF16: the top half of a float32)."""
    if code == "BF16":
        raw = b"".join(b"\0\0" + raw[i:i + 2] for i in range(0, len(raw), 2))  # little-endian f32
        return np.frombuffer(raw, "<f4").astype(np.float32).reshape(shape)
    numpy_type = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
                  "I8": "i1", "U8": "u1", "BOOL": "u1"}[code]
    arr = np.frombuffer(raw, numpy_type)
    if code == "BOOL":
        return (arr != 0).reshape(shape)
    return arr.astype(np.float32 if code == "F16" else arr.dtype).reshape(shape)


@st.composite
def safetensors_file(draw):
    """(file bytes, {name: (code, shape, raw bytes)}): tensors back to back, listed in any order."""
    names = draw(st.lists(st.text(min_size=1, max_size=8).filter(lambda s: s != "__metadata__"),
                          max_size=4, unique=True))
    tensors, header, offset = {}, {}, 0
    for name in names:
        code = draw(st.sampled_from(sorted(ITEMSIZE)))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        raw = draw(st.binary(min_size=int(np.prod(shape)) * ITEMSIZE[code],
                             max_size=int(np.prod(shape)) * ITEMSIZE[code]))
        tensors[name] = (code, shape, raw)
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    order = draw(st.permutations(list(header)))
    listed = {name: header[name] for name in order}
    if draw(st.booleans()):
        listed["__metadata__"] = draw(st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2))
    head = json.dumps(listed).encode()
    head += b" " * draw(st.integers(0, 7))  # writers pad the header with spaces
    body = b"".join(raw for _, _, raw in tensors.values())
    return struct.pack("<Q", len(head)) + head + body, tensors


@FUZZ
@given(safetensors_file())
def test_fuzz_valid_safetensors_read_exactly(tmp_path, case):
    data, tensors = case
    path = tmp_path / "ok.safetensors"
    path.write_bytes(data)
    out = safetensors.read_safetensors(path)
    assert set(out) == set(tensors)
    for name, (code, shape, raw) in tensors.items():
        want = expected_array(code, raw, shape)
        assert out[name].dtype == want.dtype and out[name].shape == tuple(shape), name
        assert np.array_equal(out[name], want, equal_nan=want.dtype.kind == "f"), name


SCALARS = st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=5)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


@st.composite
def mutated_safetensors(draw):
    """A valid file broken one way: a byte changed, cut short, a field or the whole header replaced."""
    data, tensors = draw(safetensors_file())
    kind = draw(st.sampled_from(["byte", "truncate", "field", "header", "length"]))
    if kind == "byte" and data:
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    if kind == "truncate":
        return data[:draw(st.integers(0, len(data)))]
    (n,) = struct.unpack("<Q", data[:8])
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    if kind == "field" and tensors:
        name = draw(st.sampled_from(sorted(tensors)))
        header[name][draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(JSON)
    elif kind == "header":
        header = draw(JSON)
    head = json.dumps(header).encode()
    length = draw(st.integers(0, 2 ** 64 - 1)) if kind == "length" else len(head)
    return struct.pack("<Q", length) + head + body


@FUZZ
@given(mutated_safetensors())
def test_fuzz_broken_safetensors_are_read_or_refused_naming_the_file(tmp_path, data):
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(data)
    try:
        out = safetensors.read_safetensors(path)
    except ValueError as err:
        assert str(path) in str(err)
        return
    entries, _, start = safetensors.read_header(path)  # read: then every tensor matches its header
    assert list(out) == [e[0] for e in entries]
    for name, code, shape, begin, end in entries:
        assert out[name].shape == shape and start + end <= len(data)
        want = expected_array(code, data[start + begin:start + end], shape)
        assert np.array_equal(out[name], want, equal_nan=want.dtype.kind == "f"), name


# ----------------------------------------------------------------------------------------------
# ta.save / ta.load: what is saved loads back bit for bit; what cannot be is refused before writing
# ----------------------------------------------------------------------------------------------

DTYPES = st.one_of(hnp.scalar_dtypes(), hnp.byte_string_dtypes(max_len=3),
                   hnp.unicode_string_dtypes(max_len=3), hnp.datetime64_dtypes(), hnp.timedelta64_dtypes(),
                   st.sampled_from([np.dtype([("a", "<f4"), ("b", "<i2")]), np.dtype(">f8"),
                                    np.dtype(">i4")]))
NUMBERS = st.one_of(hnp.boolean_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                    hnp.floating_dtypes(), hnp.complex_number_dtypes())
VALUES = (hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
          | st.sampled_from([np.zeros(2, "V4"), np.array([1, None], dtype=object)]))
KEYS = st.text(max_size=12) | st.sampled_from(["a\0b", "x\udcff", "file", "a/b", "..", "w.npy"])


def storable_key(key) -> bool:
    """The spec: a non-empty str, no NUL, encodable as UTF-8."""
    if not isinstance(key, str) or not key or "\0" in key:
        return False
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_dtype(dtype: np.dtype) -> bool:
    """The spec: numbers and bools (b, i, u, f, c), nothing with fields or objects."""
    return dtype.fields is None and dtype.kind in "biufc"


@FUZZ
@given(st.dictionaries(KEYS, VALUES, max_size=4))
def test_fuzz_save_load_round_trip_or_refusal_before_writing(state):
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "state.npz"
        ta.save({"old": np.arange(3)}, path)
        before = path.read_bytes()
        if all(storable_key(k) and storable_dtype(v.dtype) for k, v in state.items()):
            ta.save(state, path)
            back = ta.load(path)
            assert list(back) == list(state)
            for k, v in state.items():
                assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
                assert back[k].tobytes() == np.ascontiguousarray(v).tobytes(), k
        else:
            with pytest.raises((TypeError, ValueError)) as err:
                ta.save(state, path)
            bad = next(k for k, v in state.items() if not (storable_key(k) and storable_dtype(v.dtype)))
            assert repr(bad)[:20] in str(err.value)
            assert path.read_bytes() == before, "a refused save changed the file"
        assert sorted(os.listdir(tmp)) == ["state.npz"], "a temporary file was left behind"


@FUZZ
@given(st.dictionaries(st.text(min_size=1, max_size=5).filter(lambda k: "\0" not in k),
                       hnp.arrays(NUMBERS, hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)),
                       max_size=3),
       st.data())
def test_fuzz_corrupted_archives_are_read_or_refused_naming_the_file(state, data):
    state = {k: v for k, v in state.items() if storable_key(k)}
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "state.npz"
        ta.save(state, path)
        raw = bytearray(path.read_bytes())
        for _ in range(data.draw(st.integers(1, 3))):
            if data.draw(st.booleans()):
                raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
            else:
                del raw[data.draw(st.integers(0, len(raw) - 1)):]
                if not raw:
                    break
        path.write_bytes(bytes(raw))
        try:
            out = ta.load(path)
        except ValueError as err:
            assert str(path) in str(err)
            return
    assert all(isinstance(v, np.ndarray) and storable_dtype(v.dtype) for v in out.values())


# ----------------------------------------------------------------------------------------------
# the grader: random submissions always get a report and a score in [0, max], the right one
# ----------------------------------------------------------------------------------------------

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "exercises" / "01_softmax_and_attention.ipynb"
SOLVED = ROOT / "notebooks" / "exercises" / "solutions" / NOTEBOOK.name


def _solution_cells(path) -> dict:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return {c["metadata"]["exercise"]: "".join(c["source"]) for c in cells
            if "solution" in c["metadata"].get("tags", [])}


def answer(kind: str, name: str, solution: str) -> tuple:
    """(code of a solution cell, points it must get): one kind of answer a student hands in."""
    generic = f"import numpy as np\n\n\ndef {name}(*args, **kwargs):\n"
    return {
        "correct": (solution, 1.0),
        "prints then correct": ("print('working on it ' * 500)\n" + solution, 1.0),
        "raises": ("raise RuntimeError('half-finished cell')\n", 0.0),
        "syntax error": (f"def {name}(x\n    return x\n", 0.0),
        "wrong shape": (generic + "    return np.zeros((1, 1, 1, 1, 7))\n", 0.0),
        "NaN": (generic + "    return np.full(np.shape(args[0]), np.nan)\n", 0.0),
        "None": (generic + "    return None\n", 0.0),
        "raises when called": (generic + "    raise ValueError('oops')\n", 0.0),
        "exits": ("raise SystemExit(1)\n", 0.0),
        "kills its kernel": ("import os\nos._exit(3)\n", 0.0),
    }[kind]


KINDS = ["correct", "prints then correct", "raises", "syntax error", "wrong shape", "NaN", "None",
         "raises when called", "exits", "kills its kernel"]
EXTRA_CELLS = ["1 / 0", "print('hello')", "import sys\nsys.stderr.write('x' * 10_000)", "undefined_name", ""]


@settings(max_examples=int(os.environ.get("FUZZ_GRADER_EXAMPLES", 4)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_grader_always_reports_the_right_score(data):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    from tinyattn.exercises import grader

    solutions = _solution_cells(SOLVED)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    expected = {}
    for cell in nb.cells:
        name = cell.metadata.get("exercise")
        if "solution" in cell.metadata.get("tags", []):
            cell.source, expected[name] = answer(data.draw(st.sampled_from(KINDS), label=name), name,
                                                 solutions[name])
    for extra in data.draw(st.lists(st.sampled_from(EXTRA_CELLS), max_size=2), label="extra cells"):
        at = data.draw(st.integers(0, len(nb.cells)))
        nb.cells.insert(at, nbformat.v4.new_code_cell(extra))
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "student.ipynb"
        nbformat.write(nb, path)
        report = io.StringIO()
        grader.grade([path], json_path=pathlib.Path(tmp) / "results.json", timeout=20, out=report)
        results = json.loads((pathlib.Path(tmp) / "results.json").read_text(encoding="utf-8"))
    assert "student.ipynb" in report.getvalue()
    got = {t["name"]: t["score"] for t in results["tests"]}
    assert got == expected, [t["output"] for t in results["tests"]]
    max_score = sum(t["max_score"] for t in results["tests"])
    assert max_score == len(expected) and 0 <= results["score"] <= max_score
    assert results["score"] == sum(expected.values())


def test_a_kernel_killed_at_top_level_costs_only_that_exercise():
    """The bug this fuzzing found (issue 26): every exercise used to get 0, "not graded: DeadKernelError"."""
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    from tinyattn.exercises import grader

    solutions = _solution_cells(SOLVED)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    kinds = iter(["correct", "kills its kernel", "correct"])
    expected = {}
    for cell in nb.cells:
        name = cell.metadata.get("exercise")
        if "solution" in cell.metadata.get("tags", []):
            cell.source, expected[name] = answer(next(kinds), name, solutions[name])
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "student.ipynb"
        nbformat.write(nb, path)
        (sub,) = grader.grade([path], timeout=20, out=io.StringIO())
    assert {r.exercise: r.score for r in sub.results} == expected, [r.output for r in sub.results]
