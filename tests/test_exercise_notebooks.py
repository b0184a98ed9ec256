"""The homework notebooks: committed with empty stubs, executed, every check printing "not yet";
and with the reference solutions pasted into the stubs, every check prints its "passed" line."""

from __future__ import annotations

import asyncio
import importlib
import json
import pathlib
import re

import pytest

import tinyattn.exercises as ex

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks" / "exercises").glob("*.ipynb"))
SOLUTIONS = pathlib.Path(__file__).resolve().parent / "exercise_solutions"


def _tagged(nb: dict, tag: str) -> list:
    return [c for c in nb["cells"] if tag in c.get("metadata", {}).get("tags", [])]


def _stdout(cell: dict) -> str:
    return "".join("".join(o["text"]) for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def _load(path: pathlib.Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_checker_is_posed_in_a_notebook_with_a_reference_solution():
    assert NOTEBOOKS, "no notebooks in notebooks/exercises/"
    posed = []
    for path in NOTEBOOKS:
        nb = _load(path)
        stubs = [c["metadata"]["exercise"] for c in _tagged(nb, "solution")]
        checks = [c["metadata"]["exercise"] for c in _tagged(nb, "check")]
        assert stubs == checks, f"{path.name}: stubs {stubs} and checks {checks} do not pair up"
        posed += stubs
    checkers = [name.removeprefix("check_") for name in ex.__all__ if name.startswith("check_")]
    assert sorted(posed) == sorted(checkers)
    assert all((SOLUTIONS / f"{name}.py").is_file() for name in posed)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_executed_with_empty_stubs_and_no_errors(path):
    nb = _load(path)
    cells = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    counts = [c.get("execution_count") for c in cells]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: not run top to bottom: {counts}"
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: holds an error output: {errors[0].get('ename')}"
    for stub in _tagged(nb, "solution"):
        assert "".join(stub["source"]).rstrip().endswith("raise NotImplementedError"), stub["source"]
    for cell in _tagged(nb, "check"):
        name = cell["metadata"]["exercise"]
        assert _stdout(cell).startswith(f"not yet: check_{name}: {name} is not written yet"), \
            f"{path.name}: the check of {name} printed {_stdout(cell)!r}"


@pytest.fixture(scope="module")
def run_with_solutions():
    """Every notebook with the reference solutions pasted into its stubs, executed concurrently
    (one kernel each): {path: (notebook, exception or None)}."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebooks = {}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if "solution" in cell.metadata.get("tags", []):
                cell.source = (SOLUTIONS / f"{cell.metadata['exercise']}.py").read_text(encoding="utf-8")
        notebooks[path] = nb

    async def execute_all():
        clients = [nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                          resources={"metadata": {"path": str(path.parent)}})
                   for path, nb in notebooks.items()]
        return await asyncio.gather(*(c.async_execute() for c in clients), return_exceptions=True)

    results = asyncio.run(execute_all())
    return {path: (nb, r if isinstance(r, BaseException) else None)
            for (path, nb), r in zip(notebooks.items(), results)}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_passes_every_check_with_the_reference_solutions(path, run_with_solutions):
    nb, error = run_with_solutions[path]
    if error is not None:
        raise error  # a CellExecutionError names the cell and the traceback
    checks = [c for c in nb.cells if "check" in c.metadata.get("tags", [])]
    assert checks
    for cell in checks:
        name = cell.metadata["exercise"]
        lines = _stdout(cell).splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"check_{name} passed: "), \
            f"{path.name}: the check of {name} printed {lines}"


# What an intro promises ("The checker calls your function on several cases — A, B, C — and
# compares ...") and the words that show a checker's passed line covers it.
PROMISES = {
    "batch sizes above 1": r"batch",
    "odd sizes": r"odd",
    "very large inputs": r"large|1e6|\| ~ 1000",
    "fully masked rows": r"fully masked rows|masked entries",
    "a single head": r"\b1 head",
    "an odd d_model": r"odd d_model",
    "a constant row": r"a constant row",
    "a partial last block": r"partial last block",
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_case_an_intro_promises_is_one_its_checkers_run(path, capsys):
    nb = _load(path)
    intro = "".join(nb["cells"][0]["source"]).replace("\n", " ")
    promised = re.search(r"several cases — (.+?) — and compares", intro).group(1).split(", ")
    summaries = []
    for name in [c["metadata"]["exercise"] for c in _tagged(nb, "check")]:
        module = importlib.import_module(f"exercise_solutions.{name}")
        assert getattr(ex, f"check_{name}")(getattr(module, name)) is True
        summaries.append(capsys.readouterr().out)
    for promise in promised:
        assert promise in PROMISES, f"{path.name} promises {promise!r}, which no test knows"
        assert re.search(PROMISES[promise], " ".join(summaries)), \
            f"{path.name} promises {promise!r} but no checker's passed line mentions it: {summaries}"


def _hints(nb: dict) -> list:
    return ["".join(c["source"]) for c in nb["cells"]
            if c["cell_type"] == "markdown" and "<summary><b>Hint" in "".join(c["source"])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_hints_climb_a_ladder_that_stops_before_the_solution(path):
    nb = _load(path)
    hints = _hints(nb)
    assert len(hints) == len(_tagged(nb, "solution"))
    solution_lines = [line.split("#")[0].replace(" ", "")
                      for name in (c["metadata"]["exercise"] for c in _tagged(nb, "solution"))
                      for line in (SOLUTIONS / f"{name}.py").read_text(encoding="utf-8").splitlines()]
    solution_lines = [line for line in solution_lines
                      if len(line) > 12 and not line.startswith(("import", "def"))]
    for cell in hints:
        numbers = [int(n) for n in re.findall(r"<b>Hint (\d+)</b>", cell)]
        assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 2, numbers
        flat = cell.replace(" ", "")
        leaked = [line for line in solution_lines if line in flat]
        assert not leaked, f"{path.name}: a hint holds the solution line(s) {leaked}"
    text = " ".join(hints)
    # the two hints that used to hand over the answer (issue 13)
    assert r"\mathrm{mean}(\hat g \circ \hat x)" not in text, "layer norm: the whole dx formula"
    assert r"\ell\, e^{m - m'}" not in text, "online softmax: the whole update"


SOLVED = sorted((ROOT / "notebooks" / "exercises" / "solutions").glob("0*.ipynb"))


def _executed_code_cells(nb: dict) -> list:
    """The non-empty code cells, after checking they ran top to bottom without an error output."""
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    assert [c.get("execution_count") for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    return code


def test_every_exercise_notebook_has_a_solved_twin():
    assert [p.name for p in SOLVED] == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", SOLVED, ids=lambda p: p.stem)
def test_solved_notebook_is_committed_executed_with_every_check_passing_and_explained(path):
    """tests/test_grader.py executes these notebooks (they score full marks); here, what is committed."""
    nb = _load(path)
    _executed_code_cells(nb)
    cells = nb["cells"]
    for i, cell in enumerate(cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if "solution" in tags:
            name = cell["metadata"]["exercise"]
            assert "".join(cell["source"]) == (SOLUTIONS / f"{name}.py").read_text(encoding="utf-8"), \
                f"{path.name}: the solution of {name} differs from tests/exercise_solutions/{name}.py"
        if "check" in tags:
            name = cell["metadata"]["exercise"]
            lines = _stdout(cell).splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"check_{name} passed: "), lines
            why = "".join(cells[i + 1]["source"])
            assert why.startswith("**Why it works.**") and len(why) > 150, why


TUTORIAL_SOLUTIONS = sorted((ROOT / "notebooks" / "exercises" / "solutions").glob("tutorial_*.ipynb"))
GOING_FURTHER = ROOT / "notebooks" / "exercises" / "solutions" / "going_further.ipynb"
WORKED = [*TUTORIAL_SOLUTIONS, GOING_FURTHER]
TUTORIALS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _flat(text: str) -> str:
    return " ".join(text.split())


def _tutorial_exercises(path: pathlib.Path, heading: str = "## Exercises") -> list:
    """The numbered exercises at the end of a notebook, under ``heading``, as flattened text."""
    nb = _load(path)
    last = next(c for c in reversed(nb["cells"])
                if c["cell_type"] == "markdown" and heading in "".join(c["source"]))
    body = "".join(last["source"]).split(heading, 1)[1]
    return [_flat(item) for item in re.split(r"\n\d+\. ", "\n" + body.strip())[1:]]


def _quotes(text: str, quote: str) -> bool:
    """True if ``quote`` is the start of ``text``, with "…" standing for elided words."""
    parts = [_flat(p) for p in _flat(quote).rstrip(".").split("…")]
    if not text.startswith(parts[0]):
        return False
    at = len(parts[0])
    for part in parts[1:]:
        at = text.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


def test_every_tutorial_exercise_has_a_worked_solution_that_quotes_it():
    headings = {}
    for path in TUTORIAL_SOLUTIONS:
        for cell in _load(path)["cells"]:
            for number, quote in re.findall(r'^### (\d\d\.\d+) "(.+?)"\s*$', "".join(cell["source"]), re.M):
                headings[number] = quote
    assert TUTORIALS
    for path in TUTORIALS:
        exercises = _tutorial_exercises(path)
        assert exercises, f"{path.name}: no exercises found"
        for i, text in enumerate(exercises, start=1):
            number = f"{path.name[:2]}.{i}"
            assert number in headings, f"{path.name} exercise {i} ({text[:50]}…) has no worked solution"
            assert _quotes(text, headings[number]), \
                f"solution {number} quotes {headings[number]!r}, but the exercise reads {text[:120]!r}"
        assert not [n for n in headings if n.startswith(path.name[:2] + ".") and int(n[3:]) > len(exercises)]


def test_every_going_further_exercise_has_a_worked_solution_that_quotes_it():
    headings = dict(re.findall(r'^### (\d\.\d+) "(.+?)"\s*$',
                               "\n".join("".join(c["source"]) for c in _load(GOING_FURTHER)["cells"]), re.M))
    expected = set()
    for path in NOTEBOOKS:
        for i, text in enumerate(_tutorial_exercises(path, "## Going further"), start=1):
            number = f"{int(path.name[:2])}.{i}"
            expected.add(number)
            assert number in headings, f"{path.name}, going further {i} ({text[:50]}…): no worked solution"
            assert _quotes(text, headings[number]), (number, headings[number], text[:120])
    assert set(headings) == expected


@pytest.mark.parametrize("path", WORKED, ids=lambda p: p.stem)
def test_tutorial_solutions_are_committed_executed_without_errors(path):
    code = _executed_code_cells(_load(path))
    assert all(c.get("outputs") for c in code[1:]), f"{path.name}: a solution cell has no output"


# solutions that need the pretrained model on disk (an optional, downloaded input), as in
# tests/test_notebooks.py, or the Shakespeare corpus (likewise; CI fetches both)
NEEDS_PRETRAINED = {"tutorial_10"}
NEEDS_CORPUS = {"tutorial_12"}


def _execute_concurrently(paths: list) -> None:
    """Execute the notebooks concurrently (one kernel each); raise the first error (a
    CellExecutionError names the cell and the traceback)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebooks = {path: nbformat.read(path, as_version=4) for path in paths}

    async def execute_all():
        clients = [nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                          resources={"metadata": {"path": str(path.parent)}})
                   for path, nb in notebooks.items()]
        return await asyncio.gather(*(c.async_execute() for c in clients), return_exceptions=True)

    for result in asyncio.run(execute_all()):
        if isinstance(result, BaseException):
            raise result


def test_tutorial_solutions_execute_top_to_bottom():
    """The notebooks that need no download, executed concurrently; every assert in them holds."""
    paths = [p for p in WORKED if p.stem not in NEEDS_PRETRAINED | NEEDS_CORPUS]
    assert GOING_FURTHER in paths and len(paths) >= 4
    _execute_concurrently(paths)


def _missing_download(stem: str):
    """Why the solution notebook ``stem`` cannot run here (a download it needs is absent), or None."""
    if stem in NEEDS_PRETRAINED:
        from tinyattn import pretrained

        if not pretrained.is_available():
            return (f"{pretrained.MODEL_NAME}, which is not available offline; fetch it once with "
                    f"`python -c \"import tinyattn.pretrained as p; p.load()\"`")
    if stem in NEEDS_CORPUS:
        from tinyattn import data

        if not data.shakespeare_available():
            return ("the Shakespeare corpus, which is not available offline; fetch it once with "
                    "`python -c \"import tinyattn.data as d; d.load_shakespeare()\"`")
    return None


@pytest.mark.parametrize("path", [p for p in TUTORIAL_SOLUTIONS if p.stem in NEEDS_PRETRAINED | NEEDS_CORPUS],
                         ids=lambda p: p.stem)
def test_download_tutorial_solutions_execute_top_to_bottom(path):
    missing = _missing_download(path.stem)
    if missing:
        pytest.skip(f"{path.name} needs {missing}")
    _execute_concurrently([path])
