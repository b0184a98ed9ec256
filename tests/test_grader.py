"""The grader, run once from the command line on a folder of submissions made from the committed
notebooks: the solved ones (notebooks/exercises/solutions/) score full marks, the untouched one
scores 0 with "not attempted", an infinite loop is stopped at the timeout while the rest is still
graded, a call of tinyattn's own implementation is flagged, and a broken notebook is reported
exercise by exercise."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tinyattn.exercises import grader

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXERCISES = ROOT / "notebooks" / "exercises"
SOLVED = sorted((EXERCISES / "solutions").glob("0*.ipynb"))
TIMEOUT = 8  # seconds per cell: generous for a loaded machine, short for the looping submission


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
    """Grade a folder of eight submissions with the CLI, three at a time: (stdout, json)."""
    folder = tmp_path_factory.mktemp("submissions")
    solved_01 = nbformat.read(SOLVED[0], as_version=4)
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
    results = folder / "results.json"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "tinyattn.exercises", "grade", str(folder),
                           "--json", str(results), "--timeout", str(TIMEOUT), "--jobs", "3"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(results.read_text(encoding="utf-8"))


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
        "frank_loops_at_top_level.ipynb"])
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
    assert f"the notebook's own code: cell " in sub["output"] and f"(while True:) {stopped}" in sub["output"]
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
    assert grader.posed_exercises(untagged) == ["online_softmax"]
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
