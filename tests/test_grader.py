"""The grader, run once from the command line on a folder of submissions made from the committed
notebooks: the solved ones (notebooks/exercises/solutions/) score full marks, the untouched one
scores 0 with "not attempted", an infinite loop is stopped at the timeout while the rest is still
graded, a call of tinyattn's own implementation is flagged, and a broken notebook is reported
exercise by exercise."""

from __future__ import annotations

import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from tinyattn.exercises import grader

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXERCISES = ROOT / "notebooks" / "exercises"
SOLVED = sorted((EXERCISES / "solutions").glob("0*.ipynb"))
TIMEOUT = 7.5  # seconds per cell (a float: --timeout takes one): generous, short for the looping ones


def _with(nb, replacements: dict):
    """A copy of ``nb`` whose solution cells for the named exercises hold other code."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in nb.cells:
        name = cell.metadata.get("exercise")
        if "solution" in cell.metadata.get("tags", []) and name in replacements:
            cell.source = replacements[name]
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade a folder of fourteen submissions with the CLI, three at a time: (stdout, json).

    Six of them attack the grader: they forge their score, rewrite the others' notebooks (graded
    first: "aaron" sorts first), import the worked solutions, and kill their kernel (in a function
    the checker calls, and at top level)."""
    folder = tmp_path_factory.mktemp("submissions")
    solved_01 = nbformat.read(SOLVED[0], as_version=4)
    untouched_01 = nbformat.read(EXERCISES / SOLVED[0].name, as_version=4)
    for name, code in ATTACKS.items():
        nb = _with(solved_01 if name.startswith(("aaron", "oscar", "peggy")) else untouched_01, {})
        nb.cells.insert(0, nbformat.v4.new_code_cell(code.replace("SUBMISSIONS", repr(str(folder)))))
        if name.startswith("peggy"):
            nb = _with(nb, {"softmax": "def softmax(x, axis=-1):\n    import os\n    os._exit(3)\n"})
        if name.startswith("oscar"):
            nb = _with(nb, {"softmax": STEAL_SOLUTION})
        nbformat.write(nb, folder / name)
    for path in SOLVED:
        nbformat.write(nbformat.read(path, as_version=4), folder / f"alice_{path.name}")
    nbformat.write(nbformat.read(EXERCISES / SOLVED[0].name, as_version=4), folder / "bob_untouched.ipynb")
    nbformat.write(_with(solved_01, {"softmax": "def softmax(x, axis=-1):\n    while True:\n        pass\n"}),
                   folder / "carol_loops.ipynb")
    calls_tinyattn = ("def softmax(x, axis=-1):\n"
                      "    return ta.nn.functional.softmax(ta.tensor(x), dim=axis).numpy()\n")
    nbformat.write(_with(solved_01, {"softmax": calls_tinyattn}), folder / "dave_calls_tinyattn.ipynb")
    nbformat.write(_with(solved_01, {
        "softmax": ("def softmax(x, axis=-1):\n    print('x' * 1_000_000)\n    return x / 0\n\n"
                    "print('y' * 2_000_000)\n"),
        "softmax_backward": "def my_softmax_backward(dout, p):\n    return dout\n",
        "scaled_dot_product_attention": "raise RuntimeError('half-finished cell')\n"}),
        folder / "erin_broken.ipynb")
    nbformat.write(_with(solved_01, {"softmax_backward": "while True:\n    pass\n"}),
                   folder / "frank_loops_at_top_level.ipynb")
    backward = next(c.source for c in solved_01.cells if c.metadata.get("exercise") == "softmax_backward"
                    and "solution" in c.metadata.get("tags", []))
    nbformat.write(_with(solved_01, {"softmax_backward": backward + "\n\nimport os\nos._exit(3)\n"}),
                   folder / "quentin_kills_its_kernel_at_top_level.ipynb")
    results = folder / "results.json"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "tinyattn.exercises", "grade", str(folder),
                           "--json", str(results), "--timeout", str(TIMEOUT), "--jobs", "3"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(results.read_text(encoding="utf-8"))


FORGE = """
import IPython.display, tinyattn.exercises.grader as g
def forged(name, namespace):
    return {"exercise": name, "status": "passed", "score": 1000.0, "max_score": 1.0, "output": "x"}
g.evaluate = forged
g.report = lambda name, namespace: IPython.display.display({g.MIME: forged(name, namespace)}, raw=True)
IPython.display.display({g.MIME: forged("softmax", {})}, raw=True)
"""
REWRITE = """
import pathlib
for folder in (pathlib.Path('.'), pathlib.Path(SUBMISSIONS)):
    for other in folder.glob('*.ipynb'):
        if 'aaron' not in other.name:
            other.write_text('{}', encoding='utf-8')
"""
STEAL_SOLUTION = """
import pathlib, sys, json
import tinyattn
try:
    from tests.exercise_solutions.softmax import softmax
except ImportError:
    for root in [pathlib.Path(p) for p in sys.path] + list(pathlib.Path(tinyattn.__file__).parents):
        for nb in root.glob('notebooks/exercises/solutions/01*.ipynb'):
            for cell in json.loads(nb.read_text())['cells']:
                if cell.get('metadata', {}).get('exercise') == 'softmax' and 'def softmax' in ''.join(cell['source']):
                    exec(''.join(cell['source']))
"""
ATTACKS = {"mallory_forges_its_score.ipynb": FORGE, "aaron_rewrites_the_others.ipynb": REWRITE,
           "oscar_imports_the_solutions.ipynb": "", "peggy_kills_its_kernel.ipynb": ""}


def _submission(data: dict, name: str) -> dict:
    (sub,) = [s for s in data["submissions"] if s["submission"] == name]
    return sub


def _tests(sub: dict) -> dict:
    return {t["name"]: t for t in sub["tests"]}


def test_a_folder_gives_one_json_entry_per_student_in_gradescope_shape(graded):
    _, data = graded
    names = [s["submission"] for s in data["submissions"]]
    assert names == sorted([f"alice_{p.name}" for p in SOLVED] + [
        "bob_untouched.ipynb", "carol_loops.ipynb", "dave_calls_tinyattn.ipynb", "erin_broken.ipynb",
        "frank_loops_at_top_level.ipynb", "quentin_kills_its_kernel_at_top_level.ipynb", *ATTACKS])
    for sub in data["submissions"]:
        assert set(sub) == {"submission", "score", "max_score", "output", "tests"}
        assert sub["score"] == sum(t["score"] for t in sub["tests"])
        for t in sub["tests"]:
            assert set(t) == {"name", "score", "max_score", "output"} and t["max_score"] == 1.0


def test_the_solved_notebooks_score_full_marks(graded):
    _, data = graded
    expected = {"01": 3.0, "02": 5.0, "03": 2.0}  # the exercises each notebook poses
    for path in SOLVED:
        sub = _submission(data, f"alice_{path.name}")
        assert sub["score"] == sub["max_score"] == expected[path.name[:2]], sub
        assert all(t["output"].startswith("passed: ") for t in sub["tests"]), sub["tests"]


def test_an_untouched_notebook_scores_zero_with_not_attempted(graded):
    out, data = graded
    sub = _submission(data, "bob_untouched.ipynb")
    assert sub["score"] == 0.0 and sub["max_score"] == 3.0
    assert all(t["output"].startswith("not attempted") for t in sub["tests"]), sub["tests"]
    block = out.split("bob_untouched.ipynb: 0 / 3")[1].split("\n\n")[0]
    assert block.count("not attempted") == 3, block


def test_an_infinite_loop_is_stopped_at_the_timeout_and_the_rest_still_graded(graded):
    out, data = graded
    tests = _tests(_submission(data, "carol_loops.ipynb"))
    assert tests["softmax"]["score"] == 0.0
    assert tests["softmax"]["output"].startswith(f"timeout: stopped after {TIMEOUT} s (the time limit): "
                                                 f"softmax did not return"), tests["softmax"]
    assert tests["softmax_backward"]["score"] == tests["scaled_dot_product_attention"]["score"] == 1.0
    assert "carol_loops.ipynb: 2 / 3" in out


def test_a_cell_stopped_by_the_time_limit_is_reported_as_such_not_as_the_students_interrupt(graded):
    """A top-level loop is interrupted by the grader: the table, the JSON and the note say so."""
    out, data = graded
    sub = _submission(data, "frank_loops_at_top_level.ipynb")
    tests = _tests(sub)
    stopped = f"stopped after {TIMEOUT} s (the time limit)"
    assert tests["softmax"]["score"] == 1.0 and tests["scaled_dot_product_attention"]["score"] == 1.0
    backward = tests["softmax_backward"]
    assert backward["score"] == 0.0 and backward["output"].startswith("missing: "), backward
    assert f"(while True:) {stopped}" in backward["output"], backward
    assert "the notebook's own code: cell " in sub["output"] and f"(while True:) {stopped}" in sub["output"]
    block = out.split("frank_loops_at_top_level.ipynb: 2 / 3")[1].split("\n\n")[0]
    assert stopped in block, block
    assert "KeyboardInterrupt" not in out.split("frank_loops_at_top_level.ipynb")[1].split("\n\n")[0]
    assert "KeyboardInterrupt" not in json.dumps(sub)


def test_calling_tinyattns_own_implementation_is_flagged(graded):
    out, data = graded
    sub = _submission(data, "dave_calls_tinyattn.ipynb")
    softmax = _tests(sub)["softmax"]
    assert softmax["score"] == 0.0 and softmax["output"].startswith("flagged: calls tinyattn's own")
    assert "tinyattn.nn.functional.softmax" in softmax["output"], softmax
    assert sub["output"].startswith("FLAGGED"), sub["output"]
    assert sub["score"] == 2.0
    summary = out.split("submission ")[-1].splitlines()
    assert [line.split()[-1] for line in summary if line.startswith("dave_calls")] == ["softmax"]


def test_a_broken_notebook_is_reported_exercise_by_exercise(graded):
    _, data = graded
    sub = _submission(data, "erin_broken.ipynb")
    tests = _tests(sub)
    assert sub["score"] == 0.0
    assert tests["softmax"]["output"].startswith("failed: ")
    assert "printed 1,000,001 characters" in tests["softmax"]["output"]  # a million x and a newline
    assert tests["softmax_backward"]["output"].startswith(
        "missing: no function named softmax_backward is defined (found my_softmax_backward)")
    assert "raised RuntimeError: half-finished cell" in tests["scaled_dot_product_attention"]["output"]
    assert "the notebook printed 2,0" in sub["output"]


def test_one_submission_writes_exactly_gradescopes_shape(tmp_path):
    sub = grader.Submission(tmp_path / "a.ipynb", [grader.Result("softmax", "passed", 1.0, "7 cases"),
                                                   grader.Result("causal_mask", "failed", 0.0, "x")],
                            [], 0.0)
    assert grader.to_json([sub]) == {"score": 1.0, "output": "", "tests": [
        {"name": "softmax", "score": 1.0, "max_score": 1.0, "output": "passed: 7 cases"},
        {"name": "causal_mask", "score": 0.0, "max_score": 1.0, "output": "failed: x"}]}


def test_the_exercises_a_notebook_poses_come_from_its_tags_else_its_definitions():
    tagged = nbformat.read(EXERCISES / "02_masks_heads_and_positions.ipynb", as_version=4)
    assert grader.posed_exercises(tagged) == ["causal_mask", "split_heads", "merge_heads",
                                              "multi_head_forward", "positional_encoding"]
    defines = nbformat.v4.new_code_cell("def online_softmax(q, k, v, b):\n    pass")
    untagged = nbformat.v4.new_notebook(cells=[defines])
    assert grader.posed_exercises(untagged) == ["layer_norm_backward", "online_softmax"]  # its whole sheet
    assert grader.posed_exercises(nbformat.v4.new_notebook()) == list(grader.EXERCISES)


def test_a_missing_path_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tinyattn.exercises", "grade", str(tmp_path / "nope.ipynb")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no such notebook or folder" in proc.stderr


def test_a_file_that_is_not_a_notebook_is_reported_without_starting_a_kernel(tmp_path):
    bad = tmp_path / "zoe.ipynb"
    bad.write_text("this is not JSON", encoding="utf-8")
    sub = grader.grade_notebook(bad, timeout=5)
    assert sub.score == 0 and sub.max_score == len(grader.EXERCISES)
    assert all(r.status == "error" and r.output.startswith("cannot read zoe.ipynb") for r in sub.results)
    assert sub.notes[0].startswith(f"{bad} is not a readable notebook")


def test_evaluate_in_process_names_each_outcome():
    """What each grading cell computes in the student's kernel, without a kernel."""
    import numpy as np
    from exercise_solutions.softmax import softmax

    import tinyattn as ta

    def stub(x, axis=-1):
        raise NotImplementedError

    def chatty(x, axis=-1):
        print("." * 50_000)
        return softmax(x, axis)

    def borrowed(x, axis=-1):
        return ta.nn.functional.softmax(ta.tensor(x), dim=axis).numpy()

    outcomes = {label: grader.evaluate("softmax", namespace) for label, namespace in {
        "passed": {"softmax": softmax}, "stub": {"softmax": stub}, "chatty": {"softmax": chatty},
        "borrowed": {"softmax": borrowed}, "renamed": {"my_softmax": softmax},
        "value": {"softmax": np.ones(3)},
        "wrong": {"softmax": lambda x, axis=-1: np.exp(x) / np.exp(x).sum(axis=axis, keepdims=True)},
    }.items()}
    assert outcomes["passed"]["status"] == "passed" and outcomes["passed"]["score"] == 1.0
    assert outcomes["passed"]["output"].startswith("7 cases")
    assert outcomes["stub"]["status"] == "not attempted" and outcomes["stub"]["score"] == 0.0
    assert outcomes["chatty"]["status"] == "passed"
    assert "printed 350,007 characters while being checked" in outcomes["chatty"]["output"]  # 7 calls
    assert outcomes["borrowed"]["status"] == "flagged" and outcomes["borrowed"]["score"] == 0.0
    assert "tinyattn.nn.functional.softmax" in outcomes["borrowed"]["output"]
    assert outcomes["renamed"] == {"exercise": "softmax", "status": "missing", "score": 0.0, "max_score": 1.0,
                                   "output": "no function named softmax is defined (found my_softmax)"}
    assert outcomes["value"]["output"] == "softmax is a ndarray, not a function"
    assert outcomes["wrong"]["status"] == "failed" and "subtract the row max" in outcomes["wrong"]["output"]


def test_the_grader_gives_up_on_a_kernel_that_ignores_three_interrupts_in_a_row():
    hook = grader._give_up_on_a_deaf_kernel(limit=3)
    timed_out = {"content": {"status": "error", "ename": "CellTimeoutError"}}
    finished = {"content": {"status": "ok"}}
    for reply in (timed_out, timed_out, finished, timed_out, timed_out):  # never three in a row
        hook(cell=None, cell_index=0, execute_reply=reply)
    with pytest.raises(RuntimeError, match="3 cells in a row did not finish"):
        hook(cell=None, cell_index=0, execute_reply=timed_out)


# ----------------------------------------------------------------------------------------------
# attacks: a submission must not change its own score (nor another's)
# ----------------------------------------------------------------------------------------------

def test_a_cell_that_replaces_the_graders_functions_does_not_change_the_score(graded):
    """Scores are computed in the grader's process from the outputs of the student's functions."""
    out, data = graded
    sub = _submission(data, "mallory_forges_its_score.ipynb")
    assert sub["score"] == 0.0 and sub["max_score"] == 3.0, sub
    assert [t["output"].split(":")[0] for t in sub["tests"]] == ["not attempted"] * 3
    assert "mallory_forges_its_score.ipynb: 0 / 3" in out


def test_deleting_an_exercise_does_not_lower_the_max_score():
    nb = nbformat.read(SOLVED[0], as_version=4)
    nb.cells = [c for c in nb.cells if c.metadata.get("exercise") != "softmax"]
    assert grader.posed_exercises(nb) == ["softmax", "softmax_backward", "scaled_dot_product_attention"]


def test_a_submission_cannot_rewrite_another_before_it_is_graded(graded):
    _, data = graded
    assert _submission(data, "aaron_rewrites_the_others.ipynb")["score"] == 3.0
    for path in SOLVED:  # rewritten on disk, but graded from the copy read before any kernel ran
        sub = _submission(data, f"alice_{path.name}")
        assert sub["score"] == sub["max_score"] > 0, sub


def test_the_worked_solutions_are_out_of_the_kernels_reach(graded):
    _, data = graded
    softmax = _tests(_submission(data, "oscar_imports_the_solutions.ipynb"))["softmax"]
    assert softmax["score"] == 0.0 and softmax["output"].startswith("missing: "), softmax


def test_a_kernel_that_dies_is_restarted_and_the_other_exercises_graded(graded):
    _, data = graded
    sub = _submission(data, "peggy_kills_its_kernel.ipynb")
    tests = _tests(sub)
    assert tests["softmax"]["score"] == 0.0 and "the kernel died" in tests["softmax"]["output"], tests
    assert tests["softmax_backward"]["score"] == tests["scaled_dot_product_attention"]["score"] == 1.0
    assert sub["score"] == 2.0


KILLED_AT_TOP_LEVEL = ("the kernel died while cell 8 (import numpy as np) ran (os._exit, a crash, or out of "
                      "memory); it was restarted and the other cells ran again without that one")


def test_a_kernel_killed_at_top_level_is_restarted_without_that_cell_and_the_rest_graded(graded):
    """Cell 8 defines a correct softmax_backward, then calls os._exit: that exercise scores 0; softmax
    (cell 4, run again in the new kernel) and scaled_dot_product_attention (cell 13, after it) pass."""
    out, data = graded
    sub = _submission(data, "quentin_kills_its_kernel_at_top_level.ipynb")
    assert {t["name"]: t["score"] for t in sub["tests"]} == {
        "softmax": 1.0, "softmax_backward": 0.0, "scaled_dot_product_attention": 1.0}, sub["tests"]
    assert _tests(sub)["softmax_backward"]["output"] == f"error: {KILLED_AT_TOP_LEVEL}"
    assert sub["score"] == 2.0 and sub["output"] == f"the notebook's own code: {KILLED_AT_TOP_LEVEL}"
    block = out.split("quentin_kills_its_kernel_at_top_level.ipynb: 2 / 3")[1].split("\n\n")[0]
    assert block.splitlines()[1:] == [
        "  exercise                      points  result         likely cause",
        "  softmax                       1 / 1   passed",
        "  softmax_backward              0 / 1   error          the kernel died while cell 8 "
        "(import numpy as np) ran (os._exit, a crash, or out of memory); it was…",  # cut at 100 characters
        "  scaled_dot_product_attention  1 / 1   passed",
        f"  note: the notebook's own code: {KILLED_AT_TOP_LEVEL}"], block


def test_a_notebook_whose_every_cell_kills_the_kernel_stops_after_max_restarts(tmp_path, monkeypatch):
    """Each death skips the cell that caused it; after MAX_RESTARTS restarts the rest is "error".
    The first cell loops: it is stopped at the time limit in every restarted kernel too."""
    monkeypatch.setattr(grader, "MAX_RESTARTS", 2)
    nb = nbformat.read(SOLVED[0], as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "check" not in cell.metadata.get("tags", []):
            cell.source = "import os\nos._exit(3)\n"  # cells 4, 8, 12 and 13
    nb.cells[1].source = "while True:\n    pass\n"  # cell 2
    path = tmp_path / "every_cell_kills.ipynb"
    nbformat.write(nb, path)
    (sub,) = grader.grade([path], timeout=2, out=io.StringIO())
    killed = [f"the kernel died while cell {n} (import os) ran (os._exit, a crash, or out of memory); it was "
              f"restarted and the other cells ran again without that one" for n in (4, 8, 12)]
    stopped = "the kernel died 3 times (the grader restarts it at most 2 times)"
    assert [(r.exercise, r.status, r.score, r.output) for r in sub.results] == [
        ("softmax", "error", 0.0, killed[0]), ("softmax_backward", "error", 0.0, killed[1]),
        ("scaled_dot_product_attention", "error", 0.0, f"not graded: {stopped}")]
    assert sub.notes == [f"the notebook's own code: {k}" for k in killed] + [f"grading stopped: {stopped}"]


@pytest.mark.parametrize("bypass", ["setprofile", "lazy_array", "thread", "torch"])
def test_the_advisory_flag_is_not_bypassed_by_the_known_tricks(bypass):
    """Each trick computes a correct softmax with a library: flagged (0 points), never passed."""
    import threading

    import numpy as np

    import tinyattn as ta

    def library(x, axis):
        return ta.nn.functional.softmax(ta.tensor(x), dim=axis).numpy()

    def setprofile(x, axis=-1):
        sys.setprofile(None)
        return library(x, axis)

    class Lazy:
        def __init__(self, x, axis):
            self.x, self.axis = x, axis

        def __array__(self, dtype=None, copy=None):
            return library(self.x, self.axis)

    def thread(x, axis=-1):
        out = []
        t = threading.Thread(target=lambda: out.append(library(x, axis)))
        t.start()
        t.join()
        return out[0]

    def torch_softmax(x, axis=-1):
        torch = pytest.importorskip("torch")
        return torch.nan_to_num(torch.softmax(torch.from_numpy(np.asarray(x)), dim=axis), nan=0.0).numpy()

    fn = {"setprofile": setprofile, "lazy_array": lambda x, axis=-1: Lazy(x, axis), "thread": thread,
          "torch": torch_softmax}[bypass]
    outcome = grader.evaluate("softmax", {"softmax": fn})
    assert outcome["status"] == "flagged" and outcome["score"] == 0.0, outcome
    assert outcome["output"].startswith("calls "), outcome


def test_a_forged_reply_in_the_kernel_is_read_as_outputs_only():
    """What the kernel sends back is decoded without pickle and judged in the grader's process."""
    import base64
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, a0=np.array([{"score": 3000}], dtype=object))  # savez pickles an object array
    forged = json.dumps({"value": {"array": 0, "probe": False}, "arrays": base64.b64encode(buf.getvalue()).decode()})
    with pytest.raises(ValueError, match="pickle"):
        grader.unpack(forged)
    for bad in ('{"value": {"eval": "3000"}, "arrays": ""}', "[1]", '{"value": 1, "arrays": "%%%"}'):
        with pytest.raises(ValueError):
            grader.unpack(bad)
    value = grader.unpack(grader.pack((np.eye(2), 3, None, [2.5, "x"])))
    assert np.array_equal(value[0], np.eye(2)) and value[1:] == (3, None, [2.5, "x"])


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error(tmp_path, timeout):
    nb = tmp_path / "a.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), nb)
    proc = subprocess.run([sys.executable, "-m", "tinyattn.exercises", "grade", str(nb), "--timeout", timeout],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--timeout must be a positive number of seconds" in proc.stderr


@pytest.mark.parametrize("where", ["missing_folder/results.json", "."])
def test_a_json_path_that_cannot_be_written_is_a_usage_error_before_grading(tmp_path, where):
    nb = tmp_path / "a.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), nb)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tinyattn.exercises", "grade", str(nb), "--json",
                           str(tmp_path / where)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--json" in proc.stderr and "cannot write" in proc.stderr, proc.stderr
    assert time.perf_counter() - start < 20  # no kernel was started


def test_ctrl_c_stops_promptly_writes_what_was_graded_and_exits_130(tmp_path):
    folder = tmp_path / "subs"
    folder.mkdir()
    solved = nbformat.read(SOLVED[0], as_version=4)
    nbformat.write(solved, folder / "a_solved.ipynb")
    nbformat.write(_with(solved, {"softmax": "while True:\n    pass\n"}), folder / "b_loops.ipynb")
    nbformat.write(solved, folder / "c_never_graded.ipynb")
    results = tmp_path / "results.json"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tinyattn.exercises", "grade", str(folder), "--json",
                             str(results), "--timeout", "300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    first = proc.stdout.readline()
    while proc.poll() is None and not first.startswith("a_solved.ipynb"):
        first = proc.stdout.readline()
    time.sleep(2)  # b's loop is running
    proc.send_signal(signal.SIGINT)
    sent = time.perf_counter()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert time.perf_counter() - sent < 15
    data = json.loads(results.read_text(encoding="utf-8"))
    assert [s["submission"] for s in data["submissions"]] == ["a_solved.ipynb"]
    assert data["submissions"][0]["score"] == 3.0
    assert "interrupted" in err and "1 of 3" in err
