"""`python -m tinyattn.figures` writes every listed figure, deterministically; and the figures of
the engine and attention galleries show what their descriptions claim."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tinyattn import examples  # noqa: E402
from tinyattn.gallery import attention, engine  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_figures(*args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "tinyattn.figures", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


@pytest.fixture(scope="module")
def listed() -> list:
    out = run_figures("--list")
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    assert len(names) == len(set(names)) and names, out.stdout
    return names


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, listed):
    out_dir = tmp_path_factory.mktemp("figures")
    result = run_figures("--out", str(out_dir))
    assert result.returncode == 0, result.stderr
    return out_dir, result.stdout


def test_list_holds_the_engine_and_attention_figures(listed):
    for name in ("computation_graph", "gradcheck_errors", "score_matrix", "head_grid", "masks",
                 "positional_encoding"):
        assert name in listed


def test_every_listed_figure_is_written_as_a_png_with_a_progress_line(listed, full_run):
    out_dir, stdout = full_run
    # figures of the pretrained model are skipped, with a note, when it is not on disk
    # and the screenshot of the interactive view when no Chromium is installed
    skipped = re.findall(r"^\[\d+/\d+\] (\S+): skipped: (?:model not available|no Chromium)", stdout, re.M)
    assert all(name.startswith("pretrained_") for name in skipped), skipped
    written = {n: ".html" if n.endswith("_view") else ".png" for n in listed if n not in skipped}
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(n + ext for n, ext in written.items()), \
        "exactly the listed figures, and no temporary files left behind"
    for i, name in enumerate(listed, 1):
        if name in skipped:
            continue
        data = (out_dir / f"{name}{written[name]}").read_bytes()
        if written[name] == ".html":
            assert data.startswith(b"<!DOCTYPE html>") and b"<script src" not in data, f"{name}.html"
        else:
            assert data.startswith(PNG_MAGIC) and len(data) > 1000, f"{name}.png is not a real PNG"
        line = re.escape(f"[{i}/{len(listed)}] {out_dir / name}{written[name]}")
        assert re.search(rf"^{line}\s+\(\d+\.\ds\)$", stdout, re.M), f"no progress line for {name}"
    assert f"{len(written)} figure(s) written to {out_dir}/" in stdout


def test_only_writes_just_the_named_figures_and_they_are_byte_identical(listed, full_run, tmp_path):
    out_dir, _ = full_run
    chosen = listed[:2]
    result = run_figures("--out", str(tmp_path), "--only", *chosen)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.png" for n in chosen)
    assert len(result.stdout.splitlines()) == len(chosen) + 1
    for name in chosen:
        assert (tmp_path / f"{name}.png").read_bytes() == (out_dir / f"{name}.png").read_bytes(), \
            f"{name}.png differs between two runs: the figure is not deterministic"


def test_only_with_an_unknown_name_fails_clearly(tmp_path):
    result = run_figures("--out", str(tmp_path), "--only", "score_matrix", "no_such_figure")
    assert result.returncode != 0
    assert "unknown figure(s): no_such_figure" in result.stderr
    assert "--list" in result.stderr
    assert not any(tmp_path.iterdir()), "nothing is written when a name is unknown"


# ----------------------------------------------------------------------------------------------
# what the engine figures show
# ----------------------------------------------------------------------------------------------

def test_gradcheck_table_agrees_for_every_op_and_catches_the_deliberate_bug():
    rows = engine.gradcheck_table()
    ops = [(name, err) for group, name, err in rows if group != "a deliberate bug"]
    bugs = [err for group, _, err in rows if group == "a deliberate bug"]
    assert len(ops) >= 35
    worst = max(ops, key=lambda r: r[1])
    assert worst[1] < 1e-7, f"{worst[0]}: autograd and finite differences differ by {worst[1]:.2e}"
    assert min(err for _, err in ops) > 0.0, "finite differences always carry some round-off"
    assert len(bugs) == 1 and bugs[0] > 0.1, "the wrong tanh backward must stand out"


def test_engine_figures_draw_their_data():
    fig = engine.gradcheck_errors()
    bars = fig.axes[0].patches
    rows = engine.gradcheck_table()
    assert len(bars) == len(rows)
    assert [b.get_width() for b in bars] == pytest.approx([err for _, _, err in rows], rel=1e-6)
    labels = {t.get_text() for t in engine.computation_graph().axes[0].texts}
    assert {"x\n(4, 3)", "w\n(3,)", "b\nscalar", "y = tanh\n(4,)", "L = div\nscalar"} <= labels
    plt.close("all")


# ----------------------------------------------------------------------------------------------
# what the attention figures show
# ----------------------------------------------------------------------------------------------

def softmax_rows(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_toy_attention_is_the_softmax_of_the_relation_scores():
    tokens, weights = examples.toy_attention()
    kinds = [examples.KINDS.index(examples.KIND_OF[t]) for t in tokens]
    r = examples.relation_matrix()
    expected = softmax_rows(r[np.ix_(kinds, kinds)])  # score(i, j) = R[kind i, kind j]
    np.testing.assert_allclose(weights, expected, rtol=1e-6, atol=1e-9)
    best = {tokens[i]: tokens[j] for i, j in enumerate(weights.argmax(axis=1))}
    assert (best["it"], best["on"], best["mat"], best["sat"]) == ("cat", "mat", "on", "cat")


def test_hand_set_heads_each_implement_their_relation():
    mha, x = examples.hand_set_heads()
    _, w = mha(x[None], x[None], x[None], average_attn_weights=False)
    w = w.data[0]  # (4, T, T)
    T = len(examples.SENTENCE)
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-12)
    one_of_t = np.exp(6.0) / (np.exp(6.0) + T - 1)  # a score of 6 for one key, 0 for the others
    previous = [0] + list(range(T - 1))
    np.testing.assert_allclose(w[0][np.arange(T), previous], one_of_t, rtol=1e-9)
    np.testing.assert_allclose(w[1], examples.toy_attention()[1], rtol=1e-9, atol=1e-12)
    nouns = [i for i, t in enumerate(examples.SENTENCE) if t in ("cat", "mat")]
    np.testing.assert_allclose(w[2][:, nouns], np.exp(6.0) / (2 * np.exp(6.0) + T - 2), rtol=1e-9)
    np.testing.assert_allclose(w[3][:, 0], one_of_t, rtol=1e-9)


def test_head_grid_and_masks_figures_draw_the_expected_matrices():
    fig = attention.head_grid()
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 8 and len(fig.axes) == 9
    assert [t.get_text() for t in panels[0].get_xticklabels()] == examples.SENTENCE
    img = np.ma.getdata(panels[3].images[0].get_array())
    T = len(examples.SENTENCE)
    np.testing.assert_allclose(img[:, 0], np.exp(6.0) / (np.exp(6.0) + T - 1), rtol=1e-6)
    untrained = np.ma.getdata(panels[4].images[0].get_array())
    assert np.abs(untrained - 1.0 / T).max() < 0.05, "the random-init row is almost uniform"

    fig = attention.masks()
    L = len(attention.MASK_TOKENS)
    causal = np.tril(np.ones((L, L), dtype=np.int8))
    padding = np.tile([1, 1, 1, 1, 0, 0], (L, 1)).astype(np.int8)
    drawn = [np.ma.getdata(ax.images[0].get_array()) for ax in fig.axes]
    for got, want in zip(drawn, [causal, padding, causal * padding]):
        np.testing.assert_array_equal(got, want)
    assert len(drawn) == 3
    plt.close("all")


# ----------------------------------------------------------------------------------------------
# the pretrained-model figures: skipped with a note when the model is not on disk
# ----------------------------------------------------------------------------------------------

def test_pretrained_figures_are_skipped_with_a_note_when_the_model_is_missing(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", TINYATTN_CACHE=str(tmp_path / "empty-cache"))
    result = subprocess.run([sys.executable, "-c", "import sys, tinyattn.pretrained as p; "
                             "p._installed_folder = lambda: None; "
                             "from tinyattn.figures import main; sys.exit(main(sys.argv[1:]))",
                             "--out", str(tmp_path / "out"), "--only", "pretrained_entropy", "masks"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\[1/2\] pretrained_entropy: skipped: model not available: all-MiniLM-L6-v2 "
                     r"is not on disk", result.stdout, re.M), result.stdout
    assert "1 figure(s) written" in result.stdout and "1 skipped (pretrained_entropy)" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["masks.png"]
