"""A newcomer's fresh machine: the README's set-up, and CI doing exactly that set-up.

A brand-new venv ships an old setuptools without ``bdist_wheel`` (Python 3.10, 3.11) or no setuptools
at all (3.12+). The wheel test builds tinyattn with ``--no-build-isolation`` (nothing downloaded while
testing), so ``requirements.txt`` itself must bring a setuptools that builds wheels; and ``.ci/run``
must not upgrade pip or setuptools before the README's install command, or CI would be green where a
newcomer is red.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pathlib
import re
import shlex

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_setup() -> list[str]:
    """The commands of the README's set-up block, comments stripped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Set-up and the three commands", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def _ci_commands() -> list[list[str]]:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [shlex.split(line, comments=True) for line in lines if shlex.split(line, comments=True)]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def test_the_readme_promises_the_three_commands():
    assert _readme_setup() == ["pip install -r requirements.txt", "python -m tinyattn.figures", "pytest"]


def test_requirements_bring_a_setuptools_that_builds_wheels_without_network():
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    (pin,) = [line for line in lines if re.match(r"setuptools\b", line)]
    floor = re.fullmatch(r"setuptools>=([\d.]+)", pin)
    assert floor and _version(floor.group(1)) >= (70, 1), f"{pin!r}: bdist_wheel is in setuptools only from 70.1"
    installed = importlib.metadata.version("setuptools")
    assert _version(installed) >= _version(floor.group(1)), installed
    assert importlib.util.find_spec("setuptools.command.bdist_wheel") is not None


def test_ci_installs_the_requirements_first_into_the_venv_it_shipped_and_runs_the_readmes_test_command():
    commands = _ci_commands()
    venv = next(i for i, c in enumerate(commands) if c[:3] == ["python3", "-m", "venv"])
    installs = [(i, c) for i, c in enumerate(commands) if i > venv and "install" in c
                and (c[0] in ("pip", "pip3") or c[1:3] == ["-m", "pip"])]
    first_index, first = installs[0]
    assert [w for w in first if not w.startswith("--quiet") and w != "-q"] == ["pip", "install", "-r",
                                                                                "requirements.txt"], first
    assert not any(w in ("--upgrade", "-U") for c in commands[:first_index + 1] for w in c), \
        "CI must not upgrade pip or setuptools before the README's install command"
    assert commands[-1] == [_readme_setup()[-1]], f"CI's last command {commands[-1]} is not the README's"
