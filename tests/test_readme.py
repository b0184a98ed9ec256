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
