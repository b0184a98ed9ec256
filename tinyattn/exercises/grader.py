"""Grade homework notebooks: every checker, run on each student's own functions, in a fresh kernel.

    python -m tinyattn.exercises grade SUBMISSION.ipynb [MORE.ipynb | FOLDER ...]
                                       [--json results.json] [--timeout 60] [--jobs 1]

Each submission is executed top to bottom in a fresh Jupyter kernel (nbclient), without its
"check" cells; then, in the same kernel, one grading cell per exercise the notebook poses calls
the checker on the student's function of that name. Every cell — the student's and the
grader's — has ``timeout`` seconds: a cell that loops forever is interrupted and the next one
runs, so one broken exercise never stops the grading of the others (nor one broken notebook that
of the next). ``--jobs N`` grades N submissions at a time, each in its own kernel. The results,
one per exercise:

    passed          full points
    failed          0, with the checker's message and likely cause
    not attempted   0: the stub still raises NotImplementedError
    missing         0: no function of that name (a cell that raised is named)
    timeout         0: the check did not finish within ``timeout`` seconds (after three cells
                    in a row time out, the kernel is stopped and the rest reported "error")
    flagged         0: the function calls tinyattn's own implementation instead of computing
                    the result in NumPy (the calls are named)
    error           0: the kernel died, or the check could not run

Every exercise is worth ``POINTS`` (1) point. ``--json`` writes, for one submission, the shape
Gradescope's autograder reads::

    {"score": 2.0, "output": "...", "tests": [{"name": "softmax", "score": 1.0,
                                              "max_score": 1.0, "output": "passed: ..."}, ...]}

and for several submissions (or a folder) one such object per student, with its file name::

    {"submissions": [{"submission": "alice.ipynb", "score": ..., "max_score": ...,
                      "output": ..., "tests": [...]}, ...]}

The grader runs the students' code with the instructor's permissions: it is a convenience, not a
sandbox. A submission determined to cheat can, for instance, replace the checkers in its kernel.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import io
import json
import os
import pathlib
import re
import sys
import time

from . import checkers

EXERCISES = {name.removeprefix("check_"): getattr(checkers, name) for name in checkers.__all__}
POINTS = 1.0
MIME = "application/vnd.tinyattn.grade+json"
PRINT_LIMIT = 100_000  # characters a function may print while checked before the report says so
CAUSE_WIDTH = 100
DEAF_AFTER = 3  # cells in a row that time out before the grader stops the kernel

_PACKAGE = os.path.realpath(pathlib.Path(checkers.__file__).parents[1]) + os.sep
_EXERCISES_DIR = os.path.realpath(pathlib.Path(checkers.__file__).parent) + os.sep


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
# inside the student's kernel
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
def _library_file(filename: str) -> bool:
    """True for a source file of tinyattn outside tinyattn.exercises (symlinks resolved)."""
    path = os.path.realpath(filename)
    return path.startswith(_PACKAGE) and not path.startswith(_EXERCISES_DIR)


def _in_library(frame) -> bool:
    return _library_file(frame.f_code.co_filename)


def _watched(fn, calls: list, printed: _Counter):
    """``fn`` wrapped so that each call records the tinyattn functions it calls directly
    (outside tinyattn.exercises) and counts, without showing, what it prints."""

    def profile(frame, event, arg):
        if event == "call" and _in_library(frame) and not (frame.f_back and _in_library(frame.f_back)):
            calls.append(f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_name}")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous = sys.getprofile()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            sys.setprofile(profile)
            try:
                return fn(*args, **kwargs)
            finally:
                sys.setprofile(previous)

    return wrapper


def evaluate(name: str, namespace: dict) -> dict:
    """Run the checker of exercise ``name`` on ``namespace[name]``, the student's function;
    the Result as a dict."""
    def result(status, output=""):
        return dataclasses.asdict(Result(name, status, POINTS if status == "passed" else 0.0, output))

    fn = namespace.get(name)
    if fn is None:
        similar = [k for k, v in namespace.items() if callable(v) and name in k and k != name]
        return result("missing", f"no function named {name} is defined"
                                 + (f" (found {', '.join(similar)})" if similar else ""))
    if not callable(fn):
        return result("missing", f"{name} is a {type(fn).__name__}, not a function")
    calls: list = []
    printed = _Counter()
    passed_line = io.StringIO()
    with contextlib.redirect_stdout(passed_line):
        try:
            EXERCISES[name](_watched(fn, calls, printed))
            status, message = "passed", passed_line.getvalue().strip().split("passed: ", 1)[-1]
        except AssertionError as e:
            message = str(e).removeprefix(f"check_{name}: ")
            status = "failed"
            if "is not written yet" in message:
                status, message = "not attempted", "the stub still raises NotImplementedError"
        except Exception as e:  # the checker itself could not run on what the function returned
            status, message = "error", f"the check raised {type(e).__name__}: {e}"
    notes = []
    if calls:
        used = list(dict.fromkeys(calls))
        flag = (f"calls tinyattn's own implementation ({', '.join(used[:3])}"
                f"{', …' if len(used) > 3 else ''}) instead of writing it in NumPy")
        if status == "passed":
            status, message = "flagged", flag
        else:
            notes.append(flag)
    if printed.chars > PRINT_LIMIT:
        notes.append(f"printed {printed.chars:,} characters while being checked (not shown)")
    return result(status, "; ".join(([message] if message else []) + notes))


def report(name: str, namespace: dict) -> None:
    """Grade exercise ``name`` on ``namespace[name]`` and hand the result to the grader.

    This is what each grading cell runs in the student's kernel."""
    from IPython.display import display  # only ever called inside a Jupyter kernel

    display({MIME: evaluate(name, namespace)}, raw=True)


# ----------------------------------------------------------------------------------------------
# the grader: execute, collect, report
# ----------------------------------------------------------------------------------------------

def _tags(cell) -> list:
    return cell.get("metadata", {}).get("tags", [])


def posed_exercises(nb) -> list:
    """The exercises a notebook poses: its cells tagged "solution", else every exercise whose
    function it defines, else all of them (then each is reported missing)."""
    tagged = [c.metadata["exercise"] for c in nb.cells
              if "solution" in _tags(c) and c.get("metadata", {}).get("exercise") in EXERCISES]
    if tagged:
        return list(dict.fromkeys(tagged))
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    defined = [name for name in EXERCISES if re.search(rf"^\s*def\s+{name}\s*\(", source, re.M)]
    return defined or list(EXERCISES)


def _grading_cell(nbformat, name: str):
    return nbformat.v4.new_code_cell(
        f"import tinyattn.exercises.grader as _tinyattn_grader\n"
        f"_tinyattn_grader.report({name!r}, globals())",
        metadata={"tinyattn_grade": name})


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


def _collect(cell, name: str, timeout: float, student_errors: list, failure: str | None) -> Result:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "display_data" and MIME in out.get("data", {}):
            data = out["data"][MIME]
            data = json.loads(data) if isinstance(data, str) else data
            res = Result(**data)
            if res.status == "missing" and student_errors:
                res.output += "; " + student_errors[0]
            return res
    errors = _errors(cell)
    if any(e.get("ename") in TIMED_OUT for e in errors):
        return Result(name, "timeout", 0.0, f"{_stopped(timeout)}: {name} did not return (an infinite loop?)")
    if errors:
        return Result(name, "error", 0.0, f"the grading cell raised {errors[0].get('ename')}: "
                                          f"{errors[0].get('evalue')}")
    return Result(name, "error", 0.0, f"not graded: {failure or 'the grading cell produced no result'}")


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


def grade_notebook(path, timeout: float = 60.0, kernel_name: str = "python3") -> Submission:
    """Execute one submission in a fresh kernel and grade every exercise it poses."""
    import nbclient
    import nbformat

    path = pathlib.Path(path)
    start = time.perf_counter()
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:
        names = list(EXERCISES)
        return Submission(path, [Result(n, "error", 0.0, f"cannot read {path.name}: {e}") for n in names],
                          [f"{path} is not a readable notebook: {type(e).__name__}: {e}"],
                          time.perf_counter() - start)
    names = posed_exercises(nb)
    number = {id(c): i + 1 for i, c in enumerate(nb.cells)}  # as the student's notebook counts
    cells = [c for c in nb.cells if "check" not in _tags(c)]
    for c in cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    graders = [_grading_cell(nbformat, n) for n in names]
    nb.cells = cells + graders
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name=kernel_name, allow_errors=True, interrupt_on_timeout=True,
        error_on_timeout={"ename": "CellTimeoutError", "evalue": f"stopped after {timeout:g} s",
                          "traceback": []},
        on_cell_executed=_give_up_on_a_deaf_kernel(),
        resources={"metadata": {"path": str(path.parent.resolve())}})
    failure = None
    try:
        client.execute()
    except Exception as e:  # a dead kernel or one that would not start: grade what ran
        failure = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    notes = [f"execution stopped: {failure}"] if failure else []
    student = [c for c in cells if c.cell_type == "code"]
    errors = [_what_happened(f"cell {number[id(c)]} ({_first_line(c)})", e, timeout)
              for c in student for e in _errors(c)][:3]
    notes += [f"the notebook's own code: {e}" for e in errors if e.endswith(_stopped(timeout))]
    printed = sum(_printed(c) for c in student)
    if printed > PRINT_LIMIT:
        notes.append(f"the notebook printed {printed:,} characters (not shown)")
    results = [_collect(g, n, timeout, errors, failure) for g, n in zip(graders, names, strict=True)]
    flagged = [r.exercise for r in results if r.status == "flagged"]
    if flagged:
        notes.insert(0, f"FLAGGED (calls tinyattn's own implementation): {', '.join(flagged)}")
    return Submission(path, results, notes, time.perf_counter() - start)


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


def to_json(subs: list) -> dict:
    """One submission: Gradescope's results.json; several: {"submissions": [...]}."""
    if len(subs) == 1:
        return subs[0].gradescope()
    return {"submissions": [{"submission": s.path.name, "max_score": s.max_score, **s.gradescope()}
                            for s in subs]}


def grade(paths, json_path=None, timeout: float = 60.0, jobs: int = 1, out=None) -> list:
    """Grade every submission in ``paths`` (notebooks or folders), ``jobs`` kernels at a time;
    print each table in order as soon as it is ready, then a summary; write ``json_path`` if
    given. Returns the Submissions."""
    out = out or sys.stdout
    subs = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(grade_notebook, path, timeout) for path in find_submissions(paths)]
        for future in futures:
            subs.append(future.result())
            print(table(subs[-1]) + "\n", file=out, flush=True)
    if len(subs) > 1:
        print(summary(subs), file=out)
    if json_path:
        pathlib.Path(json_path).write_text(json.dumps(to_json(subs), indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    return subs
