"""The README's Python examples run as printed, and say what they claim."""

from __future__ import annotations

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_shows_the_set_up_commands():
    text = README.read_text(encoding="utf-8")
    for command in ("pip install -r requirements.txt", "python -m tinyattn.figures", "pytest"):
        assert command in text


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, capsys):
    exec(compile(BLOCKS[index], f"README block {index}", "exec"), {})
    printed = capsys.readouterr().out
    losses = [float(m) for m in re.findall(r"loss ([0-9.]+)", printed)]
    if losses:  # the taste example: "from 0.51 to below 1e-3 within 200 steps" (printed every 100)
        assert abs(losses[0] - 0.51) < 0.01 and losses[2] < 1e-3 and losses[-1] < 1e-3, printed
    if "check_softmax" in BLOCKS[index]:  # the homework example: the printed hint names the cause
        assert printed.startswith("not yet: check_softmax") and "subtract the row max" in printed


def test_readme_has_the_taste_example():
    assert any("loss.backward()" in b and "opt.step()" in b for b in BLOCKS)


def test_readme_training_table_equals_the_committed_training_logs():
    """One source of truth: every row of the README's training table is the JSON log of the
    committed checkpoint (accuracy to 3 decimals, steps, wall time to 0.1 s)."""
    import json
    from importlib import resources

    text = README.read_text(encoding="utf-8")
    table = text.split("| task | held-out accuracy | steps | wall time |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| (\w+) \| ([0-9.]+) \| (\d+) \| ([0-9.]+) s \|$", table, re.M)
    logs = sorted(p.name[:-5] for p in (resources.files("tinyattn") / "checkpoints").iterdir()
                  if p.name.endswith(".json"))
    assert sorted(r[0] for r in rows) == logs, f"README rows {rows} vs logs {logs}"
    for task, accuracy, steps, seconds in rows:
        log = json.loads((resources.files("tinyattn") / "checkpoints" / f"{task}.json").read_text())
        result = log["result"]
        assert accuracy == f"{result['test_accuracy']:.3f}", (task, accuracy, result["test_accuracy"])
        assert int(steps) == result["steps"], (task, steps, result["steps"])
        assert seconds == f"{result['seconds']:.1f}", (task, seconds, result["seconds"])
