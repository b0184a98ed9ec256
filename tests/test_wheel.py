"""The package stands alone: built as a wheel and installed outside the repository, its CLIs work.

Nothing in ``tinyattn/`` may read files by walking up from ``__file__`` into the repository; the
trained checkpoints and measurements the figures need are package data. The wheel is installed
with ``pip install --target`` into a temporary folder and run with ``python -S`` (no site
processing, so the repository's editable install is invisible) from another temporary folder,
with NumPy and matplotlib found where the current interpreter has them.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import matplotlib
import numpy

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_wheel_installed_elsewhere_runs_figures_and_train(tmp_path):
    dist, target, work = tmp_path / "dist", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    # the build backend is requirements.txt's setuptools, already installed: nothing is downloaded
    run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(dist),
         "-q"])
    wheels = list(dist.glob("tinyattn-*.whl"))
    assert len(wheels) == 1, wheels
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheels[0]), "-q"])
    assert (target / "tinyattn" / "checkpoints" / "reverse.npz").exists(), "checkpoints are package data"
    assert (target / "tinyattn" / "measurements" / "efficient.json").exists()
    assert (target / "tinyattn" / "measurements" / "minilm_reference.npz").exists(), "notebook 10 reads it"
    web = target / "tinyattn" / "web"
    assert sorted(p.name for p in web.iterdir()) == ["attention_view.css", "attention_view.js"], \
        "the interactive views' script and style are package data"

    deps = {str(pathlib.Path(m.__file__).resolve().parents[1]) for m in (numpy, matplotlib)}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), *sorted(deps)]), MPLBACKEND="Agg",
               OPENBLAS_NUM_THREADS="1")
    python = [sys.executable, "-S"]
    where = run([*python, "-c", "import tinyattn; print(tinyattn.__file__)"], cwd=work, env=env).stdout
    assert pathlib.Path(where.strip()).is_relative_to(target), f"imported {where.strip()}, not the wheel"

    listed = run([*python, "-m", "tinyattn.figures", "--list"], cwd=work, env=env).stdout
    assert "masks" in listed and "efficient_scaling" in listed and "trained_attention_reverse" in listed
    out = work / "figs"
    run([*python, "-m", "tinyattn.figures", "--only", "masks", "training_curves", "efficient_scaling",
         "sentence_head_view", "--out", str(out)], cwd=work, env=env)
    for name in ("masks", "training_curves", "efficient_scaling"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    page = (out / "sentence_head_view.html").read_text(encoding="utf-8")
    for asset in ("attention_view.js", "attention_view.css"):  # inlined from the installed package data
        assert (web / asset).read_text(encoding="utf-8") in page, f"{asset} is not inlined in the page"
    trained = run([*python, "-m", "tinyattn.train", "--task", "reverse", "--steps", "20", "--log-every", "10"],
                  cwd=work, env=env).stdout
    assert '"task": "reverse"' in trained.strip().splitlines()[-1] and '"steps": 20' in trained
