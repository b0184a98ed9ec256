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
    if "pretrained.load()" in BLOCKS[index]:
        from tinyattn import pretrained

        if not pretrained.is_available():
            pytest.skip("all-MiniLM-L6-v2 is not on this machine: run "
                        "python -c 'import tinyattn.pretrained as p; p.load()' once (CI does)")
    exec(compile(BLOCKS[index], f"README block {index}", "exec"), {})
    printed = capsys.readouterr().out
    losses = [float(m) for m in re.findall(r"loss ([0-9.]+)", printed)]
    if losses:  # the taste example: "from 0.51 to below 1e-3 within 200 steps" (printed every 100)
        assert abs(losses[0] - 0.51) < 0.01 and losses[2] < 1e-3 and losses[-1] < 1e-3, printed
    if "check_softmax" in BLOCKS[index]:  # the homework example: the printed hint names the cause
        assert printed.startswith("not yet: check_softmax") and "subtract the row max" in printed


def test_readme_has_the_taste_example():
    assert any("loss.backward()" in b and "opt.step()" in b for b in BLOCKS)


SCORES = {"accuracy": "test_accuracy", "exact match": "test_exact_match",
          "in-context accuracy": "in_context_accuracy", "validation loss": "val_loss"}


def test_readme_training_table_equals_the_committed_training_logs():
    """One source of truth: every row of the README's training table is the JSON log of the
    committed checkpoint of that task (score to 3 decimals, steps, wall time to 0.1 s), and every
    task the CLI trains has its row."""
    import json
    from importlib import resources

    from tinyattn import data

    text = README.read_text(encoding="utf-8")
    table = text.split("| task | model | held-out score | steps | wall time |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| ([0-9.]+) ([a-z -]+?) \| (\d+) \| ([0-9.]+) s \|$", table, re.M)
    tasks = data.TASKS + data.SEQ2SEQ_TASKS + data.LM_TASKS + ("shakespeare",)
    assert sorted(r[0] for r in rows) == sorted(tasks), rows
    for task, score, measure, steps, seconds in rows:
        log = json.loads((resources.files("tinyattn") / "checkpoints" / f"{task}.json").read_text())
        result = log["result"]
        assert score == f"{result[SCORES[measure]]:.3f}", (task, score, result[SCORES[measure]])
        assert int(steps) == result["steps"], (task, steps, result["steps"])
        assert seconds == f"{result['seconds']:.1f}", (task, seconds, result["seconds"])
    path = resources.files("tinyattn") / "checkpoints" / "shakespeare.json"
    shakespeare = json.loads(path.read_text())["result"]
    assert (f"train loss {shakespeare['train_loss']:.3f}, {shakespeare['tokens_per_second']:,} tokens/s"
            in table), shakespeare
