"""Training a GPT for real, in miniature, and the committed add and induction checkpoints."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tinyattn import data
from tinyattn.train import (LMConfig, add_exact_match, build_gpt, induction_scores, load_gpt,
                            load_lm_log, lm_checkpoint_path, main, next_token_losses, train_lm)

SMALL_ADD = dict(steps=60, d_model=32, num_heads=2, warmup=10, log_every=20, n_test=200)
SMALL_INDUCTION = dict(steps=40, d_model=16, log_every=20, probe_every=20, n_test=50)


def test_induction_scores_of_hand_built_attention_patterns():
    T, offset = 24, np.array([10, 14])
    prev = np.zeros((T, T))
    prev[0, 0] = 1
    prev[np.arange(1, T), np.arange(T - 1)] = 1  # every position looks one back
    induction = np.zeros((2, T, T))
    induction[:, :, 0] = 1
    r = np.arange(15, T)  # the copy's positions that predict a copied token
    for b, o in enumerate(offset):
        induction[b, r, 0] = 0
        induction[b, r, r - o + 1] = 1  # look right after the current token's earlier occurrence
    maps = np.stack([np.stack([prev, prev]), induction])[:, :, None]  # (layers=2, B=2, H=1, T, T)
    p, i = induction_scores(maps, offset)
    np.testing.assert_allclose(p, [[1.0], [1 / 23]])  # of rows 1..23 only row 1 (-> key 0) looks back
    np.testing.assert_allclose(i, [[0.0], [1.0]])
    uniform = np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]
    p, i = induction_scores(np.broadcast_to(uniform, (1, 2, 1, T, T)), offset)
    np.testing.assert_allclose(p, [[np.mean(1 / np.arange(2, T + 1))]])
    np.testing.assert_allclose(i, [[np.mean(1 / (r + 1))]])


def test_next_token_losses_score_token_t_plus_1_at_position_t():
    model = build_gpt(LMConfig(task="induction", d_model=16))
    seqs, _ = data.induction_sequences(3, np.random.default_rng(0))
    losses, logits = next_token_losses(model, seqs)
    assert losses.shape == (3, data.INDUCTION_SEQ_LEN - 1)
    z = logits.data.astype(np.float64)
    logp = z - z.max(-1, keepdims=True) - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
    want = -np.take_along_axis(logp, seqs[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(losses.data, want, rtol=1e-5)


@pytest.fixture(scope="module")
def short_add():
    return train_lm(LMConfig(task="add", **SMALL_ADD), log=lambda line: None)


def test_short_add_training_lowers_the_loss(short_add):
    model, result, history = short_add
    assert [h["step"] for h in history] == [20, 40, 60]
    assert history[0]["loss"] > 1.8  # near ln(10) = 2.3 on the answer digits at first
    assert history[-1]["loss"] < history[0]["loss"] - 0.2
    assert result["task"] == "add" and result["n_test"] == 200 and result["params"] == model.num_params()
    assert 0.0 <= result["test_exact_match"] <= 1.0


def test_add_exact_match_needs_every_digit():
    model = build_gpt(LMConfig(task="add", d_model=16, num_heads=2))
    seqs = data.add_sequences([1, 2], [3, 4])
    got = model.generate(seqs[:, :8], 4, temperature=0)
    want = (got[:, 8:] == seqs[:, 8:]).all(1)
    np.testing.assert_array_equal(add_exact_match(model, seqs), want)


def test_short_induction_run_logs_per_step_losses_and_per_head_scores():
    _, result, history = train_lm(LMConfig(task="induction", **SMALL_INDUCTION), log=lambda line: None)
    curve, probes = history["curve"], history["probes"]
    assert curve["step"] == list(range(1, 41))
    assert len(curve["loss_first"]) == len(curve["loss_repeat"]) == 40
    assert abs(curve["loss_first"][0] - math.log(16)) < 0.3  # an untrained model is at chance
    assert [p["step"] for p in probes] == [0, 20, 40]
    assert np.array(probes[0]["induction"]).shape == (2, 2)  # (layers, heads)
    assert result["chance_loss"] == pytest.approx(math.log(16))
    assert set(result) >= {"in_context_accuracy", "test_loss_first", "test_loss_repeat", "params"}


def test_cli_saves_a_checkpoint_that_reloads_and_ends_with_json(tmp_path, capsys):
    path = tmp_path / "ind.npz"
    assert main(["--task", "induction", "--steps", "5", "--save", str(path)]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["task"] == "induction" and last["steps"] == 5 and last["checkpoint"] == str(path)
    log = json.loads((tmp_path / "ind.json").read_text())
    assert log["result"]["in_context_accuracy"] == last["in_context_accuracy"]
    model, config = load_gpt(path)
    assert config.steps == 5 and config.d_model == 64
    assert acc_on_repeat(model, config)[0] == pytest.approx(log["result"]["in_context_accuracy"], abs=1e-6)


def test_unknown_language_model_task_is_named():
    with pytest.raises(ValueError, match="unknown language-model task 'sort'"):
        LMConfig(task="sort")
    with pytest.raises(ValueError, match="expected one of add, induction"):
        lm_checkpoint_path("sort")


# ------------------------------------------------------------------------------------------------
# the committed checkpoints (package data)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", data.LM_TASKS)
def test_committed_checkpoints_are_small_float32_package_data(task):
    path = lm_checkpoint_path(task)
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert path.stat().st_size < 1_000_000
    with np.load(str(path), allow_pickle=False) as z:
        assert {z[k].dtype for k in z.files if k != "__config__"} == {np.dtype(np.float32)}


def test_committed_adder_gets_the_held_out_sums_right():
    model, config = load_gpt(lm_checkpoint_path("add"))
    log = load_lm_log("add")
    split = data.make_add_split(config.n_test, config.seed)
    exact = add_exact_match(model, split.test).mean()
    assert exact >= 0.99
    assert exact == pytest.approx(log["result"]["test_exact_match"], abs=1e-9)


def acc_on_repeat(model, config):
    """(in-context accuracy, per-position losses (n, 24), first mask, repeat mask) on the test rows."""
    test, _ = data.make_induction_test(config.n_test, config.seed)
    losses, logits = next_token_losses(model, test)
    first, repeat = data.induction_positions()
    return np.mean((logits.data.argmax(-1) == test[:, 1:])[:, repeat]), losses.data, first, repeat


def test_committed_induction_model_copies_in_context():
    model, config = load_gpt(lm_checkpoint_path("induction"))
    log = load_lm_log("induction")
    acc, losses, first, repeat = acc_on_repeat(model, config)
    assert acc >= 0.9 and acc == pytest.approx(log["result"]["in_context_accuracy"], abs=1e-9)
    assert losses[:, repeat].mean() < 0.15 * math.log(16)  # far below chance
    assert losses[:, first].mean() > 2.0  # the first part stays unpredictable
    assert len(log["history"]["curve"]["loss_repeat"]) == config.steps
