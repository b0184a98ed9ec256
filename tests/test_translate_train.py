"""``python -m tinyattn.train --task translate`` and the committed translator checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tinyattn as ta
from tinyattn import data, train
from tinyattn.models import alignment_score, cross_attention_maps


@pytest.fixture(scope="module")
def committed():
    ta.set_num_threads(1)
    model, config, log = train.load_translator()
    _, _, test = data.date_splits(config.n_train, config.n_val, config.n_test, config.seed)
    return model, config, log, test


def test_cli_last_line_is_json_and_the_checkpoint_round_trips(tmp_path, capsys):
    path = tmp_path / "ckpt" / "translate.npz"
    assert train.main(["--task", "translate", "--steps", "3", "--log-every", "1", "--save", str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert sum(line.startswith("step ") for line in lines) == 3 and "val exact" in lines[1]
    result = json.loads(lines[-1])
    assert result["task"] == "translate" and result["steps"] == 3 and 0 <= result["test_exact_match"] <= 1
    log = json.loads((tmp_path / "ckpt" / "translate.json").read_text())
    assert log["result"]["test_exact_match"] == result["test_exact_match"]
    assert [h["step"] for h in log["history"]] == [1, 2, 3]
    model, config, reloaded_log = train.load_translator(path)
    assert config.steps == 3 and reloaded_log == log
    _, _, test = data.date_splits(config.n_train, config.n_val, config.n_test, config.seed)
    assert train.translate_exact_match(model, test) == result["test_exact_match"]


def test_loading_a_foreign_npz_names_the_problem(tmp_path):
    path = tmp_path / "weights.npz"
    ta.save({"w": np.zeros(3)}, path)
    with pytest.raises(KeyError, match="__config__"):
        train.load_translator(path)


def test_committed_checkpoint_is_small_float32_package_data(committed):
    path = train.checkpoint_path("translate")
    assert path.is_file() and path.parent.name == "checkpoints" and path.parent.parent.name == "tinyattn"
    size = len(path.read_bytes())
    assert size < 1_000_000, f"{size} bytes"
    model, _, log, _ = committed
    assert all(p.dtype == np.float32 for p in model.parameters())
    assert log["config"]["seed"] == 0


def test_committed_checkpoint_translates_held_out_dates(committed):
    model, _, log, test = committed
    predictions = train.translate_predictions(model, test)
    exact = np.mean([p == t for p, t in zip(predictions, test.targets)])
    assert exact == pytest.approx(log["result"]["test_exact_match"], abs=2e-3)
    assert exact >= 0.95
    assert model.translate(["sunday, the 29th of november 2026", "29 nov 26", "november twenty-ninth, 2026",
                            "11/29/2026"]) == ["2026-11-29"] * 4


def test_alignment_score_by_hand():
    split = data.date_splits(10, 10, 4, seed=1)[2]
    S = split.src.shape[1]
    known = np.zeros((1, 4, 1, 11, S))  # (layers, N, H, 11, S)
    for i in range(4):
        a = data.alignment_matrix(split, i)
        known[0, i, 0, :10, :a.shape[1]] = a
    assert alignment_score(known, split.spans)[0, 0] == pytest.approx(1.0)
    uniform = np.full((1, 4, 1, 11, S), 1.0 / S)
    widths = (split.spans[..., 1] - split.spans[..., 0])  # (4, 10)
    expected = widths[widths > 0].mean() / S
    assert alignment_score(uniform, split.spans)[0, 0] == pytest.approx(expected)


def test_trained_cross_attention_follows_the_known_alignment(committed):
    """The decoder's cross-attention puts far more weight on each output character's source span
    than a uniform row over the source would."""
    model, _, _, test = committed
    n = 200
    src = test.src[:n, :int((test.src[:n] != data.PAD).sum(1).max())]
    maps = cross_attention_maps(model, src, test.tgt[:n])  # (layers, n, H, 11, S)
    lengths = (src != data.PAD).sum(1)  # (n,)
    widths = test.spans[:n, :, 1] - test.spans[:n, :, 0]  # (n, 10)
    uniform = (widths / lengths[:, None])[widths > 0].mean()
    best = alignment_score(maps, test.spans[:n]).mean(axis=1).max()
    print(f"alignment score of the best layer {best:.3f}, uniform rows {uniform:.3f}")
    assert best > uniform + 0.3
