"""Training for real, in miniature: the loss falls, accuracy beats chance, checkpoints reload,
the CLI ends with one JSON line, and a model without positions cannot tell its slots apart."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tinyattn as ta
from tinyattn import data
from tinyattn import train as train_module
from tinyattn.train import (
    Config,
    TinyEncoder,
    build_model,
    load_checkpoint,
    main,
    predict,
    save_checkpoint,
    train,
)

SMALL = dict(d_model=32, nhead=2, dim_feedforward=64, n_train=2000, n_test=200)


def _param_count(V, d, ff, layers):
    """Parameters of TinyEncoder counted from the architecture, layer by layer."""
    attention = (3 * d * d + 3 * d) + (d * d + d)  # in_proj, out_proj
    feed_forward = (d * ff + ff) + (ff * d + d)  # linear1, linear2
    norms = 2 * 2 * d  # norm1, norm2
    return V * d + layers * (attention + feed_forward + norms) + 2 * d + (d * V + V)


@pytest.fixture(scope="module")
def trained():
    config = Config(task="reverse", steps=250, log_every=50, **SMALL)
    return (config,) + train(config, log=lambda line: None)


def test_short_training_lowers_the_loss_and_beats_chance(trained):
    _, _, result, history = trained
    assert [h["step"] for h in history] == [50, 100, 150, 200, 250]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[0]["loss"] > 1.5  # starts near ln(122) = 4.8: nothing known yet
    assert result["test_accuracy"] > 0.9 and result["chance_accuracy"] == 0.1


def test_result_fields(trained):
    _, model, result, history = trained
    assert result["task"] == "reverse" and result["steps"] == 250
    assert result["params"] == _param_count(122, 32, 64, 2) == model.num_parameters()
    assert result["seconds"] >= result["train_seconds"] > 0
    assert result["final_loss"] == history[-1]["loss"]


def test_test_accuracy_is_the_fraction_of_correct_answer_tokens(trained):
    config, model, result, _ = trained
    _, test = data.make_splits("reverse", config.n_train, config.n_test, config.seed)
    model.eval()
    with ta.no_grad():
        logits = model(test.tokens).data  # (N, L, V)
    slots = logits[:, 9:17]  # the 8 answer slots after the 8 inputs and "="
    expected = np.mean(slots.argmax(axis=-1) == test.tokens[:, 7::-1])
    assert result["test_accuracy"] == pytest.approx(expected, abs=0)


def test_training_is_deterministic_per_seed():
    runs = [train(Config(task="sort", steps=6, log_every=2, seed=s, **SMALL), log=lambda line: None)
            for s in (5, 5, 6)]
    (m1, _, h1), (m2, _, h2), (m3, _, _) = runs
    assert h1 == [dict(h, seconds=h1[i]["seconds"]) for i, h in enumerate(h2)]
    for (name, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert np.array_equal(a, b), name
    assert not np.array_equal(m1.state_dict()["head.weight"], m3.state_dict()["head.weight"])


def test_checkpoint_round_trip_gives_identical_predictions(trained, tmp_path):
    config, model, _, _ = trained
    path = tmp_path / "reverse.npz"
    save_checkpoint(model, config, path)
    loaded, loaded_config = load_checkpoint(path)
    assert loaded_config == config
    _, test = data.make_splits("reverse", config.n_train, config.n_test, config.seed)
    model.eval()
    with ta.no_grad():
        assert np.array_equal(model(test.tokens).data, loaded(test.tokens).data)
    assert np.array_equal(predict(model, test.tokens, "reverse"), predict(loaded, test.tokens, "reverse"))
    with np.load(path, allow_pickle=False) as stored:
        assert set(stored.files) == set(model.state_dict()) | {"__config__"}


def test_loading_a_foreign_npz_names_the_problem(tmp_path):
    path = tmp_path / "weights.npz"
    ta.save(build_model(Config(**SMALL)).state_dict(), path)
    with pytest.raises(KeyError, match="__config__"):
        load_checkpoint(path)


def test_answer_slots_get_zero_attention(trained):
    config, model, _, _ = trained
    _, test = data.make_splits("reverse", config.n_train, config.n_test, config.seed)
    with ta.no_grad(), ta.nn.record_attention(model) as rec:
        model.eval()(test.tokens[:4])
    assert rec.names == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
    for w in rec.weights:
        assert w.shape == (4, 2, 17, 17)
        assert np.all(w[..., 9:] == 0.0)
        assert np.allclose(w.sum(axis=-1), 1.0, atol=1e-5)


def test_without_positions_every_slot_gives_the_same_answer():
    """No positional encoding: the slots are identical tokens, so attention (permutation
    equivariant) gives them identical outputs, and the given tokens' order is invisible."""
    ta.manual_seed(0)
    model = TinyEncoder(len(data.VOCAB), 32, 2, 2, 64, positional=False).eval()
    _, test = data.make_splits("reverse", 10, 50, seed=0)
    tokens = test.tokens
    shuffled = tokens.copy()
    shuffled[:, :8] = tokens[:, np.random.default_rng(0).permutation(8)]
    with ta.no_grad():
        slots = model(tokens).data[:, 9:]  # (N, 8, V)
        slots_shuffled = model(shuffled).data[:, 9:]
    assert np.allclose(slots, slots[:, :1], atol=1e-5)
    assert np.allclose(slots, slots_shuffled, atol=1e-5)


def test_cli_last_line_is_json_and_saves(tmp_path, capsys):
    path = tmp_path / "ckpt" / "sort.npz"
    assert main(["--task", "sort", "--steps", "3", "--log-every", "1", "--save", str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert sum(line.startswith("step ") for line in lines) == 3
    assert "tokens/s" in lines[1]
    result = json.loads(lines[-1])
    assert result["task"] == "sort" and result["steps"] == 3
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["seconds"] > 0
    assert result["params"] == _param_count(122, 64, 128, 2)
    log = json.loads((tmp_path / "ckpt" / "sort.json").read_text())
    assert log["result"]["test_accuracy"] == result["test_accuracy"]
    assert [h["step"] for h in log["history"]] == [1, 2, 3]
    _, config = load_checkpoint(path)
    assert config.task == "sort" and config.steps == 3


def test_module_runs_as_a_script():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-m", "tinyattn.train", "--task", "recall", "--steps", "2"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["task"] == "recall" and result["steps"] == 2


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["--task", "copy"])
    with pytest.raises(SystemExit):
        main(["--task", "sort", "--steps", "0"])
    assert "--steps must be positive" in capsys.readouterr().err


def test_ideal_overlap_by_hand():
    """Two slots over four keys: a head that copies the ideal scores 1, a uniform head 1/4 per
    one-hot row and 1/2 where the ideal splits (0.5, 0.5), a head looking elsewhere 0."""
    ideal = np.array([[[1.0, 0, 0, 0], [0, 0.5, 0.5, 0]]])  # (N=1, A=2, L=4)
    maps = np.zeros((1, 1, 3, 4, 4))  # (layers, N, H, L, L); slots are rows 2 and 3
    maps[0, 0, 0, 2:] = ideal[0]
    maps[0, 0, 1, 2:] = 0.25
    maps[0, 0, 2, 2:, 3] = 1.0
    overlap = train_module.ideal_overlap(maps, ideal, np.array([2, 3]))
    assert overlap.shape == (1, 3)
    assert np.allclose(overlap, [[1.0, (0.25 + 0.5) / 2, 0.0]])


def test_attention_maps_match_a_recording(trained):
    config, model, _, _ = trained
    _, test = data.make_splits("reverse", config.n_train, config.n_test, config.seed)
    maps = train_module.attention_maps(model, test.tokens[:3])
    assert maps.shape == (2, 3, 2, 17, 17)
    x = model.positions(model.embedding(test.tokens[:3]))  # (3, 17, 32): layer 0's input
    layer = model.encoder.layers[0]
    h = layer.norm1(x).data  # pre-norm
    attn = layer.self_attn
    w_q, w_k = (w.data for w in attn.projection_weights()[:2])
    b_q, b_k = (b.data for b in attn.projection_biases()[:2])
    q = (h @ w_q.T + b_q).reshape(3, 17, 2, 16).transpose(0, 2, 1, 3)  # (3, 2, 17, 16)
    k = (h @ w_k.T + b_k).reshape(3, 17, 2, 16).transpose(0, 2, 1, 3)
    scores = q @ k.transpose(0, 1, 3, 2) / 4.0  # (3, 2, 17, 17), √16 = 4
    scores[..., 9:] = -np.inf  # the slots are masked as keys
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    assert np.allclose(maps[0], expected, atol=1e-5)


def test_checkpoint_path_is_package_data():
    path = train_module.checkpoint_path("sort")
    assert path.name == "sort.npz" and path.parent.name == "checkpoints"
    assert path.parent.parent.name == "tinyattn" and path.with_suffix(".json").exists()
    with pytest.raises(FileNotFoundError, match="no committed checkpoint named 'copy'; known: .*sort"):
        train_module.checkpoint_path("copy")
