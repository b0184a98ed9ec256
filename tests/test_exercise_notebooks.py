"""The homework notebooks: committed with empty stubs, executed, every check printing "not yet";
and with the reference solutions pasted into the stubs, every check prints its "passed" line."""

from __future__ import annotations

import asyncio
import json
import pathlib

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
    assert sorted(posed) == sorted(name.removeprefix("check_") for name in ex.__all__)
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
