"""Grade homework notebooks: every checker, run on each student's own functions, in a fresh kernel.

    python -m tinyattn.exercises grade SUBMISSION.ipynb [MORE.ipynb | FOLDER ...]
                                       [--json results.json] [--timeout 60] [--jobs 1]

Every submission is read before any kernel starts, then executed top to bottom, without its
"check" cells, from its own private copy in a fresh temporary folder (the kernel's working
folder; the source checkout tinyattn may come from is not on the kernel's path, so the worked
solutions are out of its reach). The kernel only *runs* the student's functions: for each call a
checker makes, the grader sends the arguments to the kernel and gets back what the function
returned, as arrays (an .npz without pickle, in base64) — the checkers, the comparison with the
expected values and the scores all stay in the grader's own process, and the exercises (hence
the maximum score) are the whole sheet each notebook belongs to, whatever cells it kept. Every
cell — the student's and each call — has ``timeout`` seconds: a cell that loops forever is
interrupted and the next one runs. A kernel that dies while one function runs is restarted (the
student's cells run again) and the other exercises are graded. A kernel killed by the notebook's
own code (``os._exit`` at top level, a crash, out of memory) costs the exercise of the cell that
was running (its "solution" cell, or the exercises it defines) and no other: the kernel is
restarted and every cell runs again from the top except the cells that killed it (the earlier
ones define what the later exercises use), then the rest is graded (the cell running when the
kernel died is the one blamed: a delayed kill, from a timer, costs the cell it interrupts).
After ``MAX_RESTARTS`` (5) restarts, whatever their cause, the exercises not yet graded are
reported "error"; each cell still has ``timeout`` seconds on every run. ``--jobs N`` grades N
submissions at a time. Ctrl-C stops the kernels, writes what was graded and exits with 130.
The results, one per exercise:

    passed          full points
    failed          0, with the checker's message and likely cause
    not attempted   0: the stub still raises NotImplementedError
    missing         0: no function of that name (a cell that raised is named)
    timeout         0: the check did not finish within ``timeout`` seconds (after three cells
                    in a row time out, the kernel is stopped and the rest reported "error")
    flagged         0: the function calls tinyattn's own implementation (or torch, SciPy, JAX,
                    TensorFlow) instead of computing the result in NumPy (the calls are named)
    error           0: the kernel died (in the function, or in its cell at top level), or the
                    check could not run

Every exercise is worth ``POINTS`` (1) point. ``--json`` writes, for one submission, the shape
Gradescope's autograder reads::

    {"score": 2.0, "output": "...", "tests": [{"name": "softmax", "score": 1.0,
                                              "max_score": 1.0, "output": "passed: ..."}, ...]}

and for several submissions (or a folder) one such object per student, with its file name::

    {"submissions": [{"submission": "alice.ipynb", "score": ..., "max_score": ...,
                      "output": ..., "tests": [...]}, ...]}

What is enforced and what is advisory. A submission cannot raise its score: whatever its code
does in its kernel (replace the grader's functions, display forged results, rewrite other
notebooks), only its functions' outputs reach the grader, which judges them. The "flagged" rule
is advisory: it watches, inside the student's kernel, the calls the function makes (threads it
starts and the conversion of what it returns included, and switching the watch off is itself
flagged), so a determined student can still hide a call (a thread started before the check,
another process, copied source) — a hidden call then scores what a correct function scores,
never more. The grader runs the students' code with the instructor's permissions: it is not a
sandbox (a submission can still read any file the instructor can).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import functools
import importlib.util
import io
import json
import math
import os
import pathlib
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

from . import checkers

EXERCISES = {name.removeprefix("check_"): getattr(checkers, name) for name in checkers.__all__}
SHEETS = (("softmax", "softmax_backward", "scaled_dot_product_attention"),  # the three notebooks
          ("causal_mask", "split_heads", "merge_heads", "multi_head_forward", "positional_encoding"),
          ("layer_norm_backward", "online_softmax"))
POINTS = 1.0
MIME = "application/vnd.tinyattn.grade+json"
PRINT_LIMIT = 100_000  # characters a function may print while checked before the report says so
CAUSE_WIDTH = 100
DEAF_AFTER = 3  # cells in a row that time out before the grader stops the kernel
MAX_CALLS = 500  # calls of the student's function one check may make (a guard against a loop)
MAX_RESTARTS = 5  # kernel deaths the grader restarts after, before it reports the rest "error"

_PACKAGE = os.path.realpath(pathlib.Path(checkers.__file__).parents[1]) + os.sep
_EXERCISES_DIR = os.path.realpath(pathlib.Path(checkers.__file__).parent) + os.sep
_LIBRARIES = ("tinyattn", "torch", "scipy", "jax", "tensorflow")  # implementations a student may not call


@dataclasses.dataclass
class Result:
    """The grade of one exercise of one submission."""

    exercise: str
    status: str
    score: float
    output: str
    max_score: float = POINTS

    def cause(self) -> str:
        """The one-line reason shown in the table: the likely cause, else the first line."""
        if self.status == "passed":
            return ""
        text = self.output.split("likely cause: ", 1)[-1] if "likely cause: " in self.output \
            else self.output.splitlines()[0] if self.output else ""
        text = " ".join(text.split())
        return text if len(text) <= CAUSE_WIDTH else text[:CAUSE_WIDTH - 1] + "…"


@dataclasses.dataclass
class Submission:
    """The grades of one notebook: one Result per exercise it poses, and notes about the run."""

    path: pathlib.Path
    results: list
    notes: list
    seconds: float

    @property
    def score(self) -> float:
        return sum(r.score for r in self.results)

    @property
    def max_score(self) -> float:
        return sum(r.max_score for r in self.results)

    def gradescope(self) -> dict:
        """This submission in the shape of Gradescope's results.json."""
        return {"score": self.score, "output": "\n".join(self.notes),
                "tests": [{"name": r.exercise, "score": r.score, "max_score": r.max_score,
                           "output": f"{r.status}: {r.output}" if r.output else r.status}
                          for r in self.results]}


# ----------------------------------------------------------------------------------------------
# what crosses between the grader and the kernel: values as text, never pickled
# ----------------------------------------------------------------------------------------------

class Opaque:
    """A returned value that is not an array, as the grader sees it: named after its type; it
    converts to an object array (``convertible``) or refuses to convert, as the original did."""

    convertible = True

    def __array__(self, dtype=None, copy=None):
        if not self.convertible:
            raise ValueError(f"a {type(self).__name__} is not an array")
        return np.array(None, dtype=object)


def _opaque(type_name: str, convertible: bool) -> Opaque:
    name = type_name if type_name.isidentifier() else "object"
    return type(name, (Opaque,), {"convertible": bool(convertible)})()


def pack(value) -> str:
    """``value`` — arrays, numbers, strings, None, tuples and lists of them — as JSON text: a
    skeleton, and the arrays in one .npz (no pickle) in base64."""
    arrays: list = []

    def skeleton(v):
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return {"int": str(v)}
        if isinstance(v, float):
            return {"float": repr(float(v))}
        if isinstance(v, np.ndarray):
            arrays.append(np.asarray(v))
            return {"array": len(arrays) - 1, "probe": isinstance(getattr(v, "log", None), list)}
        if isinstance(v, (tuple, list)):
            return {type(v).__name__ if type(v) in (tuple, list) else "list": [skeleton(x) for x in v]}
        if isinstance(v, Opaque):
            return {"opaque": type(v).__name__, "convertible": v.convertible}
        raise TypeError(f"cannot send a {type(v).__name__} to or from the kernel")

    tree = skeleton(value)
    buf = io.BytesIO()
    np.savez(buf, **{f"a{i}": a for i, a in enumerate(arrays)})
    return json.dumps({"value": tree, "arrays": base64.b64encode(buf.getvalue()).decode("ascii")})


def unpack(text: str, probe_log: list | None = None):
    """The value ``pack`` wrote; arrays marked as probes become ``checkers.probe_keys`` arrays
    logging to ``probe_log`` (in the kernel). Anything else is a ValueError."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("arrays"), str):
        raise ValueError("not a packed value")
    try:
        with np.load(io.BytesIO(base64.b64decode(data["arrays"], validate=True)), allow_pickle=False) as npz:
            arrays = [npz[f"a{i}"] for i in range(len(npz.files))]
    except ValueError:
        raise
    except Exception as e:  # not base64, not an .npz, a truncated one: all the same to the grader
        raise ValueError(f"not a packed value: {type(e).__name__}: {e}") from e

    def build(t, depth=0):
        if depth > 8:
            raise ValueError("a packed value nested too deeply")
        if t is None or isinstance(t, (bool, str)):
            return t
        if isinstance(t, dict) and len(t) in (1, 2):
            if "int" in t:
                return int(t["int"])
            if "float" in t:
                return float(t["float"])
            if "array" in t and type(t["array"]) is int and 0 <= t["array"] < len(arrays):
                a = arrays[t["array"]]
                return checkers.probe_keys(a, probe_log) if t.get("probe") and probe_log is not None else a
            if "tuple" in t or "list" in t:
                items = t.get("tuple", t.get("list"))
                if isinstance(items, list):
                    seq = [build(x, depth + 1) for x in items]
                    return tuple(seq) if "tuple" in t else seq
            if "opaque" in t and isinstance(t["opaque"], str):
                return _opaque(t["opaque"][:60], t.get("convertible", True))
        raise ValueError(f"not a packed value: {str(t)[:80]}")

    return build(data["value"])


# ----------------------------------------------------------------------------------------------
# inside the student's kernel: run the function, send back what it returned
# ----------------------------------------------------------------------------------------------

class _Counter:
    """A stand-in for stdout/stderr that only counts what is written."""

    def __init__(self):
        self.chars = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        return len(text)

    def flush(self) -> None:
        pass


@functools.lru_cache(maxsize=None)
def _library_dirs() -> tuple:
    """The folders of the libraries in ``_LIBRARIES`` other than tinyattn that are installed."""
    dirs = []
    for name in _LIBRARIES[1:]:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        dirs += [os.path.realpath(d) + os.sep for d in (spec.submodule_search_locations or [])] if spec else []
    return tuple(dirs)


@functools.lru_cache(maxsize=None)
def _library_file(filename: str) -> bool:
    """True for a source file of tinyattn outside tinyattn.exercises, or of torch, SciPy, JAX or
    TensorFlow (symlinks resolved)."""
    path = os.path.realpath(filename)
    return (path.startswith(_PACKAGE) and not path.startswith(_EXERCISES_DIR)) \
        or path.startswith(_library_dirs())


def _in_library(frame) -> bool:
    return _library_file(frame.f_code.co_filename)


def _library_builtin(fn) -> str | None:
    """The name of a C function of one of ``_LIBRARIES`` (or sys.setprofile), else None."""
    if fn is sys.setprofile:
        return "sys.setprofile"
    module = getattr(fn, "__module__", None)
    if not isinstance(module, str):
        module = type(getattr(fn, "__self__", None)).__module__
    if module.split(".")[0] in _LIBRARIES and not module.startswith("tinyattn.exercises"):
        return f"{module}.{getattr(fn, '__name__', '?')}"
    return None


def _plain(out, depth: int = 0):
    """What the student's function returned, made of values ``pack`` can send: arrays (a Tensor
    as its data), numbers, strings, None, short tuples and lists; anything else an Opaque."""
    from ..autograd import Tensor

    if out is None or isinstance(out, (bool, int, float, str)):
        return out
    if isinstance(out, Tensor):
        out = out.data
    if isinstance(out, (tuple, list)) and depth < 2 and len(out) <= 16:
        return type(out)(_plain(x, depth + 1) for x in out) if type(out) in (tuple, list) \
            else [_plain(x, depth + 1) for x in out]
    try:
        arr = np.asarray(out)
    except Exception:
        return _opaque(type(out).__name__, False)
    return _opaque(type(out).__name__, True) if arr.dtype.hasobject else arr


def _watched(fn, calls: list, printed: _Counter):
    """``fn`` wrapped so that each call records the library functions it (and any thread it
    starts) calls directly, and counts, without showing, what it prints; what it returns is
    converted by ``_plain`` inside the watch."""

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is threading.setprofile.__code__:
            calls.append("threading.setprofile")
        elif event == "call" and _in_library(frame) and not (frame.f_back and _in_library(frame.f_back)):
            calls.append(f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_name}")
        elif event == "c_call" and not _in_library(frame) and frame.f_code.co_filename != __file__:
            name = _library_builtin(arg)
            if name:
                calls.append(name)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous, previous_threads = sys.getprofile(), threading.getprofile()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            threading.setprofile(profile)
            sys.setprofile(profile)
            try:
                return _plain(fn(*args, **kwargs))
            finally:
                sys.setprofile(previous)
                threading.setprofile(previous_threads)

    return wrapper


def _raised_at(exc: BaseException) -> str:
    """The deepest line of the traceback outside NumPy and this file, as the checkers show it."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if os.path.realpath(f.filename) != os.path.realpath(__file__)
              and f"{os.sep}numpy{os.sep}" not in f.filename]
    return f"\n  at line {frames[-1].lineno}: {frames[-1].line}" if frames and frames[-1].line else ""


def answer(namespace: dict, name: str, arguments: str) -> dict:
    """Call ``namespace[name]``, the student's function, on the packed ``arguments``; what it
    returned (packed), or what it raised, with the calls it made and the characters it printed."""
    fn = namespace.get(name)
    if fn is None:
        similar = [k for k, v in namespace.items() if callable(v) and name in k and k != name]
        return {"missing": f"no function named {name} is defined"
                           + (f" (found {', '.join(similar)})" if similar else "")}
    if not callable(fn):
        return {"missing": f"{name} is a {type(fn).__name__}, not a function"}
    log: list = []
    args, kwargs = unpack(arguments, probe_log=log)
    calls: list = []
    printed = _Counter()
    reply = {"name": str(getattr(fn, "__name__", name))[:60], "keys": log}
    try:
        with np.errstate(all="ignore"):  # as the checkers call it: NumPy's warnings are not the student's
            reply["returned"] = pack(_watched(fn, calls, printed)(*args, **dict(kwargs)))
    except Exception as e:
        reply.update(raised=type(e).__name__, message=str(e)[:2000], line=_raised_at(e))
    reply.update(calls=list(dict.fromkeys(calls))[:20], printed=printed.chars,
                 after=pack(tuple(np.asarray(a) if isinstance(a, np.ndarray) else None for a in args)))
    return reply


def serve(namespace: dict, name: str, arguments: str) -> None:
    """What each calling cell runs in the student's kernel: ``answer``, displayed for the grader."""
    from IPython.display import display  # only ever called inside a Jupyter kernel

    display({MIME: answer(namespace, name, arguments)}, raw=True)


# ----------------------------------------------------------------------------------------------
# in the grader's process: the checkers call a stand-in that asks the kernel
# ----------------------------------------------------------------------------------------------

class StudentError(Exception):
    """An exception the student's function raised in its kernel, as the checkers see it here."""


class _Unanswered(BaseException):
    """The checker made a call the kernel has not answered yet."""

    def __init__(self, arguments: str):
        super().__init__()
        self.arguments = arguments


class _Stopped(BaseException):
    """The exercise ends here with ``result`` (the call timed out, the kernel died, ...)."""

    def __init__(self, result: Result):
        super().__init__()
        self.result = result


class _Replay:
    """The student's function as the checkers see it: call i returns the kernel's i-th answer, or
    raises _Unanswered with the arguments to send (the checker then runs again from the start:
    its inputs are seeded, so it asks the same questions)."""

    def __init__(self, name: str, answers: list):
        self.__name__, self.exercise, self.answers = name, name, answers
        self.asked, self.calls, self.printed = 0, [], 0

    def __call__(self, *args, **kwargs):
        arguments = pack((args, tuple(sorted(kwargs.items()))))
        i, self.asked = self.asked, self.asked + 1
        if i == len(self.answers):
            raise _Unanswered(arguments)
        asked, reply = self.answers[i]
        if asked != arguments:
            raise _Stopped(Result(self.exercise, "error", 0.0, "the check asked different questions on replay"))
        return self._apply(reply, args)

    def _apply(self, reply: dict, args: tuple):
        if "missing" in reply:
            raise _Stopped(Result(self.exercise, "missing", 0.0, str(reply["missing"])))
        self.__name__ = str(reply["name"])
        self.calls += [str(c) for c in reply["calls"]]
        self.printed += int(reply["printed"])
        logs = [a.log for a in args if isinstance(getattr(a, "log", None), list)]
        if logs:
            logs[0].extend(int(k) for k in reply["keys"])
        for a, after in zip(args, unpack(reply["after"])):  # in-place changes, for the checker to see
            if isinstance(a, np.ndarray) and isinstance(after, np.ndarray) and after.shape == a.shape:
                a[...] = after
        if "raised" in reply:
            ename = str(reply["raised"])
            exc = NotImplementedError(reply["message"]) if ename == "NotImplementedError" else \
                type(ename if ename.isidentifier() else "Exception", (StudentError,), {})(str(reply["message"]))
            exc.student_line = str(reply["line"])
            raise exc
        return unpack(reply["returned"])


def _outcome(name: str, student: _Replay) -> Result:
    """Run the checker of ``name`` on ``student``; the Result (scores are given here only)."""
    try:
        status, message = "passed", checkers.run_check(name, student)
    except AssertionError as e:
        message = str(e).removeprefix(f"check_{name}: ")
        status = "failed"
        if "is not written yet" in message:
            status, message = "not attempted", "the stub still raises NotImplementedError"
    except Exception as e:  # the checker itself could not run on what the function returned
        status, message = "error", f"the check raised {type(e).__name__}: {e}"
    notes = []
    if student.calls:
        used = list(dict.fromkeys(student.calls))
        what = "tinyattn's own implementation" if any(u.startswith("tinyattn") for u in used) \
            else "a library's implementation or switches off the grader's watch"
        flag = f"calls {what} ({', '.join(used[:3])}{', …' if len(used) > 3 else ''}) instead of writing it in NumPy"
        if status == "passed":
            status, message = "flagged", flag
        else:
            notes.append(flag)
    if student.printed > PRINT_LIMIT:
        notes.append(f"printed {student.printed:,} characters while being checked (not shown)")
    output = "; ".join(([message] if message else []) + notes)
    return Result(name, status, POINTS if status == "passed" else 0.0, output)


def judge(name: str, ask) -> Result:
    """Grade exercise ``name``: run its checker here, sending each call of the student's function
    to ``ask(arguments) -> reply`` (the kernel's ``answer``); ``ask`` may raise _Stopped."""
    answers: list = []
    while True:
        student = _Replay(name, answers)
        try:
            return _outcome(name, student)
        except _Stopped as stop:
            return stop.result
        except _Unanswered as need:
            arguments = need.arguments
        if len(answers) >= MAX_CALLS:
            return Result(name, "error", 0.0, f"the check made more than {MAX_CALLS} calls")
        try:
            answers.append((arguments, ask(arguments)))
        except _Stopped as stop:
            return stop.result


def evaluate(name: str, namespace: dict) -> dict:
    """Grade exercise ``name`` on ``namespace[name]`` in this process (kernel and grader in one,
    the answers sent through JSON as from a kernel); the Result as a dict."""
    return dataclasses.asdict(judge(name, lambda arguments: json.loads(json.dumps(
        answer(namespace, name, arguments)))))


# ----------------------------------------------------------------------------------------------
# the grader: read, execute, ask, report
# ----------------------------------------------------------------------------------------------

def _tags(cell) -> list:
    return cell.get("metadata", {}).get("tags", [])


def _defines(source: str, name: str) -> bool:
    """True if ``source`` has a line ``def name(``."""
    return re.search(rf"^\s*def\s+{name}\s*\(", source, re.M) is not None


def posed_exercises(nb) -> list:
    """The exercises a notebook poses: every exercise of each sheet (SHEETS) it mentions — in a
    cell tagged "solution", a definition or a check call —, else all of them (then each is
    reported missing). Deleting a cell does not drop its exercise."""
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    mentioned = {c.metadata["exercise"] for c in nb.cells
                 if "solution" in _tags(c) and c.get("metadata", {}).get("exercise") in EXERCISES}
    mentioned |= {name for name in EXERCISES
                  if _defines(source, name) or re.search(rf"check_{name}\s*\(", source)}
    posed = [name for sheet in SHEETS if mentioned & set(sheet) for name in sheet]
    return posed or list(EXERCISES)


def _errors(cell) -> list:
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def _first_line(cell) -> str:
    line = next((t.strip() for t in cell.source.splitlines() if t.strip()), "")
    return line if len(line) <= 40 else line[:39] + "…"


def _printed(cell) -> int:
    return sum(len(o.get("text", "")) for o in cell.get("outputs", []) if o.get("output_type") == "stream")


TIMED_OUT = ("KeyboardInterrupt", "CellTimeoutError")  # what an interrupted cell records


def _stopped(timeout: float) -> str:
    return f"stopped after {timeout:g} s (the time limit)"


def _what_happened(where: str, error: dict, timeout: float) -> str:
    """``where`` raised its error, or was stopped by the time limit (the interrupt is the grader's,
    so it is not reported as the student's KeyboardInterrupt)."""
    if error.get("ename") in TIMED_OUT:
        return f"{where} {_stopped(timeout)}"
    return f"{where} raised {error.get('ename')}: {error.get('evalue')}"


def _give_up_on_a_deaf_kernel(limit: int = DEAF_AFTER):
    """A hook for nbclient: stop the run once ``limit`` cells in a row have timed out.

    A timed-out cell is interrupted; a kernel that ignores the interrupt (a long C call, or code
    that ignores SIGINT) would otherwise cost ``timeout`` seconds for every remaining cell."""
    in_a_row = 0

    def hook(cell, cell_index, execute_reply):
        nonlocal in_a_row
        content = (execute_reply or {}).get("content", {})
        in_a_row = in_a_row + 1 if content.get("ename") == "CellTimeoutError" else 0
        if in_a_row >= limit:
            raise RuntimeError(f"{limit} cells in a row did not finish within the timeout: the kernel "
                               f"no longer responds to interrupts")

    return hook


def check_timeout(timeout) -> float:
    """``timeout`` as seconds: a positive, finite number, else a ValueError."""
    try:
        seconds = float(timeout)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"--timeout must be a positive number of seconds, got {timeout!r}")
    return seconds


def check_json_path(json_path) -> pathlib.Path:
    """``json_path`` if the results can be written there (checked before any grading)."""
    path = pathlib.Path(json_path)
    if path.is_dir():
        raise ValueError(f"cannot write --json {path}: it is a folder")
    if not path.parent.is_dir():
        raise ValueError(f"cannot write --json {path}: there is no folder {path.parent}")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"cannot write --json {path}: permission denied")
    return path


def _private_folder(tmp: pathlib.Path) -> dict:
    """Lay out a private grading folder: work/ (the kernel's working folder) and lib/tinyattn (a
    link to this package); the kernel's environment, with lib/ instead of a source checkout."""
    work, lib = tmp / "work", tmp / "lib"
    work.mkdir()
    lib.mkdir()
    package = pathlib.Path(_PACKAGE)
    try:
        os.symlink(package, lib / "tinyattn", target_is_directory=True)
    except OSError:  # no symlinks (Windows without the privilege): a copy
        shutil.copytree(package, lib / "tinyattn", ignore=shutil.ignore_patterns("__pycache__"))
    checkout = os.path.realpath(package.parent)
    kept = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.realpath(p) != checkout]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(lib), *kept])}


def _setup_cell(nbformat):
    """The kernel's first cell: no folder holding tinyattn's source checkout on sys.path."""
    checkout = os.path.realpath(pathlib.Path(_PACKAGE).parent)
    return nbformat.v4.new_code_cell(
        f"import os as _os, sys as _sys\n"
        f"_sys.path[:] = [p for p in _sys.path if _os.path.realpath(p or '.') != {checkout!r}]\n"
        f"del _os, _sys")


def _calling_cell(nbformat, name: str, arguments: str):
    return nbformat.v4.new_code_cell(
        f"import tinyattn.exercises.grader as _tinyattn_grader\n"
        f"_tinyattn_grader.serve(globals(), {name!r}, {arguments!r})")


def _reply(cell) -> dict | None:
    """The last answer a calling cell displayed, or None."""
    found = None
    for out in cell.get("outputs", []):
        if out.get("output_type") == "display_data" and MIME in out.get("data", {}):
            found = out["data"][MIME]
    if isinstance(found, str):
        found = json.loads(found)
    return found if isinstance(found, dict) else None


class _Interrupted(Exception):
    """The grading was stopped (Ctrl-C)."""


def _killed_by(where: str) -> str:
    """What the report says of a cell of the notebook's own code that killed the kernel."""
    return (f"the kernel died while {where} ran (os._exit, a crash, or out of memory); it was restarted "
            f"and the other cells ran again without that one")


def _exercises_of(cell, names: list) -> list:
    """The exercises a cell answers: its "solution" tag's exercise, else those it defines."""
    tagged = cell.get("metadata", {}).get("exercise")
    if "solution" in _tags(cell) and tagged in names:
        return [tagged]
    return [name for name in names if _defines(cell.source, name)]


def _run(nb, names: list, timeout: float, kernel_name: str, stop: threading.Event, active: set):
    """Execute one notebook in a private folder and grade ``names``: (results, notes)."""
    import nbclient
    import nbformat

    number = {id(c): i + 1 for i, c in enumerate(nb.cells)}  # as the student's notebook counts
    student = [c for c in nb.cells if c.cell_type == "code" and "check" not in _tags(c)]
    results: dict = {}
    notes: list = []
    errors: list = []
    killed: dict = {}  # id(cell) -> what the report says, for each cell that killed the kernel at top level
    deaths = 0
    with tempfile.TemporaryDirectory(prefix="tinyattn-grade-") as tmp:
        env = _private_folder(pathlib.Path(tmp))
        work = pathlib.Path(tmp) / "work"
        nbformat.write(nb, work / "submission.ipynb")  # its private copy
        first_run = True
        while len(results) < len(names) and not stop.is_set():
            if deaths > MAX_RESTARTS:
                failure = f"the kernel died {deaths} times (the grader restarts it at most " \
                          f"{MAX_RESTARTS} times)"
                notes.append(f"grading stopped: {failure}")
                for name in names:
                    results.setdefault(name, Result(name, "error", 0.0, f"not graded: {failure}"))
                break
            died = False
            client = nbclient.NotebookClient(
                nbformat.v4.new_notebook(), timeout_func=lambda cell: timeout, kernel_name=kernel_name,
                allow_errors=True, interrupt_on_timeout=True,
                error_on_timeout={"ename": "CellTimeoutError", "evalue": _stopped(timeout), "traceback": []},
                on_cell_executed=_give_up_on_a_deaf_kernel())
            client.reset_execution_trackers()

            def execute(cell):
                cell = nbformat.from_dict(json.loads(json.dumps(cell)))
                if stop.is_set():
                    raise _Interrupted
                client.nb.cells.append(cell)
                client.execute_cell(cell, len(client.nb.cells) - 1)
                return cell

            def run_cells():
                """Every student cell but those that killed the kernel, {id: executed cell}; None
                (and the cell recorded in ``killed``) if one kills it now."""
                nonlocal died
                ran = {}
                for c in student:
                    if id(c) in killed:
                        continue
                    try:
                        ran[id(c)] = execute(c)
                    except nbclient.exceptions.DeadKernelError:
                        died = True
                        killed[id(c)] = _killed_by(f"cell {number[id(c)]} ({_first_line(c)})")
                        notes.append(f"the notebook's own code: {killed[id(c)]}")
                        for name in _exercises_of(c, names):
                            results.setdefault(name, Result(name, "error", 0.0, killed[id(c)]))
                        return None
                return ran

            def ask(arguments, name):
                nonlocal died
                try:
                    cell = execute(_calling_cell(nbformat, name, arguments))
                except nbclient.exceptions.DeadKernelError:
                    died = True
                    raise _Stopped(Result(name, "error", 0.0, f"the kernel died while {name} ran (os._exit, "
                                                              f"a crash, or out of memory); it was restarted "
                                                              f"for the other exercises")) from None
                errs = _errors(cell)
                if any(e.get("ename") in TIMED_OUT for e in errs):
                    raise _Stopped(Result(name, "timeout", 0.0,
                                          f"{_stopped(timeout)}: {name} did not return (an infinite loop?)"))
                reply = _reply(cell)
                if reply is None:
                    what = f"raised {errs[0].get('ename')}: {errs[0].get('evalue')}" if errs else "gave no answer"
                    raise _Stopped(Result(name, "error", 0.0, f"the calling cell {what}"))
                return reply

            try:
                with client.setup_kernel(cwd=str(work), env=env):
                    active.add(client)
                    execute(_setup_cell(nbformat))
                    ran = run_cells()
                    if ran is not None and first_run:
                        errors = [error for c in student for error in (
                            [killed[id(c)]] if id(c) in killed else
                            [_what_happened(f"cell {number[id(c)]} ({_first_line(c)})", e, timeout)
                             for e in _errors(ran[id(c)])])][:3]
                        notes += [f"the notebook's own code: {e}" for e in errors if e.endswith(_stopped(timeout))]
                        printed = sum(_printed(r) for r in ran.values())
                        if printed > PRINT_LIMIT:
                            notes.append(f"the notebook printed {printed:,} characters (not shown)")
                        first_run = False
                    for name in names if ran is not None else []:
                        if name in results:
                            continue
                        results[name] = _with_errors(judge(name, functools.partial(_safe_ask, ask, name)), errors)
                        if died:
                            break
            except _Interrupted:
                break
            except Exception as e:  # a kernel that would not start, died in the setup cell, or is deaf
                if stop.is_set():
                    break
                if not died:
                    failure = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                    notes.insert(0, f"execution stopped: {failure}")
                    for name in names:
                        results.setdefault(name, Result(name, "error", 0.0, f"not graded: {failure}"))
            finally:
                active.discard(client)
            deaths += died
    if stop.is_set():
        raise _Interrupted
    return [results[n] for n in names], notes


def _safe_ask(ask, name: str, arguments: str) -> dict:
    """``ask``, with a reply that is not a dict of the expected fields turned into an error."""
    reply = ask(arguments, name)
    if "missing" not in reply and not {"name", "calls", "printed", "keys", "after"} <= set(reply):
        raise _Stopped(Result(name, "error", 0.0, "the kernel's answer is not in the expected form"))
    return reply


def _with_errors(res: Result, errors: list) -> Result:
    if res.status == "missing" and errors:
        res.output += "; " + errors[0]
    return res


def _read(path: pathlib.Path):
    """The notebook at ``path``, or the exception reading it raised."""
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except Exception as e:
        return e


def _grade_read(path, nb, timeout: float, kernel_name: str = "python3", stop=None, active=None) -> Submission:
    start = time.perf_counter()
    if isinstance(nb, Exception):
        return Submission(path, [Result(n, "error", 0.0, f"cannot read {path.name}: {nb}") for n in EXERCISES],
                          [f"{path} is not a readable notebook: {type(nb).__name__}: {nb}"],
                          time.perf_counter() - start)
    names = posed_exercises(nb)
    results, notes = _run(nb, names, timeout, kernel_name, stop or threading.Event(),
                          active if active is not None else set())
    flagged = [r.exercise for r in results if r.status == "flagged"]
    if flagged:
        notes.insert(0, f"FLAGGED (calls tinyattn's own implementation): {', '.join(flagged)}")
    return Submission(path, results, notes, time.perf_counter() - start)


def grade_notebook(path, timeout: float = 60.0, kernel_name: str = "python3") -> Submission:
    """Execute one submission from a private copy in a fresh kernel and grade every exercise it poses."""
    path = pathlib.Path(path)
    return _grade_read(path, _read(path), check_timeout(timeout), kernel_name)


def find_submissions(paths) -> list:
    """The notebooks named, with every .ipynb directly inside a named folder (sorted)."""
    found = []
    for p in map(pathlib.Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.glob("*.ipynb") if q.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such notebook or folder: {p}")
    return found


def table(sub: Submission) -> str:
    """A plain-text table of one submission: exercise, points, result, likely cause."""
    width = max([len("exercise")] + [len(r.exercise) for r in sub.results])
    lines = [f"{sub.path.name}: {sub.score:g} / {sub.max_score:g}  ({sub.seconds:.1f} s)"]
    lines += [f"  {'exercise':<{width}}  points  {'result':<13}  likely cause"]
    for r in sub.results:
        points = f"{r.score:g} / {r.max_score:g}"
        lines.append(f"  {r.exercise:<{width}}  {points:<6}  {r.status:<13}  {r.cause()}".rstrip())
    lines += [f"  note: {n}" for n in sub.notes]
    return "\n".join(lines)


def summary(subs: list) -> str:
    """One row per student: submission, score, and the exercises flagged."""
    width = max([len("submission")] + [len(s.path.name) for s in subs])
    lines = [f"{'submission':<{width}}  score    flagged"]
    for s in subs:
        flagged = ", ".join(r.exercise for r in s.results if r.status == "flagged")
        lines.append(f"{s.path.name:<{width}}  {f'{s.score:g} / {s.max_score:g}':<7}  {flagged}".rstrip())
    return "\n".join(lines)


def to_json(subs: list, several: bool | None = None) -> dict:
    """One submission: Gradescope's results.json; several: {"submissions": [...]}."""
    if not (len(subs) > 1 if several is None else several):
        return subs[0].gradescope()
    return {"submissions": [{"submission": s.path.name, "max_score": s.max_score, **s.gradescope()}
                            for s in subs]}


def _kill(client) -> None:
    """Kill the kernel process of an nbclient client (to stop a running cell at once)."""
    process = getattr(getattr(getattr(client, "km", None), "provisioner", None), "process", None)
    with contextlib.suppress(Exception):
        process.kill()


def _write(json_path, subs: list, several: bool) -> None:
    if json_path and subs:
        pathlib.Path(json_path).write_text(json.dumps(to_json(subs, several), indent=1, ensure_ascii=False)
                                           + "\n", encoding="utf-8")


def grade(paths, json_path=None, timeout: float = 60.0, jobs: int = 1, out=None) -> list:
    """Grade every submission in ``paths`` (notebooks or folders), ``jobs`` kernels at a time;
    print each table in order as soon as it is ready, then a summary; write ``json_path`` if
    given. Returns the Submissions. On Ctrl-C: stop the kernels, write what was graded, and
    raise KeyboardInterrupt."""
    out = out or sys.stdout
    timeout = check_timeout(timeout)
    if json_path:
        check_json_path(json_path)
    found = find_submissions(paths)
    notebooks = [(path, _read(path)) for path in found]  # all read before any kernel starts
    stop, active, subs, futures = threading.Event(), set(), [], []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        futures = [pool.submit(_grade_read, path, nb, timeout, "python3", stop, active) for path, nb in notebooks]
        for future in futures:
            subs.append(future.result())
            print(table(subs[-1]) + "\n", file=out, flush=True)
    except KeyboardInterrupt:
        stop.set()
        for client in list(active):
            _kill(client)
        pool.shutdown(wait=True, cancel_futures=True)
        subs += [f.result() for f in futures[len(subs):] if f.done() and not f.cancelled() and not f.exception()]
        print(f"interrupted: {len(subs)} of {len(found)} submissions graded", file=sys.stderr, flush=True)
        _write(json_path, subs, len(found) > 1)
        raise
    pool.shutdown(wait=True)
    if len(subs) > 1:
        print(summary(subs), file=out)
    _write(json_path, subs, len(found) > 1)
    return subs
