"""The Translator: cached decoding equals recomputation, beam search equals exhaustive search
when wide enough, and clear errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import tinyattn as ta
from tinyattn import data
from tinyattn.models import Translator

RNG = np.random.default_rng(1414)


def sources(n=6):
    """A padded batch of real date sources of different lengths."""
    _, _, test = data.date_splits(10, 10, n, seed=2)
    return test.src


@pytest.fixture(scope="module")
def random_model():
    ta.manual_seed(3)
    return Translator(d_model=16, nhead=2, dim_feedforward=32).double().eval()


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("tie_weights", [False, True])
def test_cached_greedy_equals_recomputing_the_prefix(norm_first, tie_weights):
    ta.manual_seed(4)
    model = Translator(d_model=16, nhead=2, dim_feedforward=32, tie_weights=tie_weights).double()
    for layer in model.transformer.decoder.layers:
        layer.norm_first = norm_first
    src = sources()
    cached, cached_logits = model.greedy_decode(src)
    plain, plain_logits = model.greedy_decode(src, use_cache=False)
    np.testing.assert_array_equal(cached, plain)
    T = cached_logits.shape[1]
    assert cached_logits.shape == plain_logits.shape == (len(src), T, len(data.TGT_VOCAB)) and T >= 2
    assert cached.shape == (len(src), 11) and np.all(cached[:, T:] == data.PAD)
    np.testing.assert_allclose(cached_logits, plain_logits, rtol=0, atol=1e-9)
    # and both equal the teacher-forced forward on the decoded tokens, where a row is still alive
    tgt_in = np.concatenate([np.full((len(src), 1), data.BOS), cached[:, :T - 1]], axis=1)  # (N, T)
    forward = model(src, tgt_in).data  # (N, T, V)
    alive = np.concatenate([np.ones((len(src), 1), bool), np.cumsum(cached[:, :T - 1] == data.EOS, 1) == 0], 1)
    np.testing.assert_allclose(cached_logits[alive], forward[alive], rtol=0, atol=1e-9)


def test_cached_beam_search_equals_recomputing(random_model):
    src = sources()
    for k, lp in ((3, 0.0), (5, 1.0)):
        a, sa = random_model.beam_search(src, k, lp)
        b, sb = random_model.beam_search(src, k, lp, use_cache=False)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(sa, sb, rtol=0, atol=1e-9)


def test_beam_size_one_is_greedy(random_model):
    src = sources(10)
    greedy, _ = random_model.greedy_decode(src)
    beam, _ = random_model.beam_search(src, 1)
    np.testing.assert_array_equal(beam, greedy)


def exhaustive(model, src, max_len, length_penalty):
    """Score every output over {EOS, a, b} of at most max_len tokens (ending at EOS, or cut at
    max_len) with one teacher-forced forward each; return the best (tokens, score) per source."""
    symbols = [data.EOS, 3, 4]
    outputs = []
    for n in range(1, max_len + 1):
        for seq in itertools.product(symbols, repeat=n):
            if data.EOS not in seq[:-1] and (seq[-1] == data.EOS or n == max_len):
                outputs.append(list(seq))
    best = []
    for i in range(len(src)):
        scored = []
        for seq in outputs:
            tgt_in = np.array([[data.BOS] + seq[:-1]])
            logits = model(src[i:i + 1], tgt_in).data[0]  # (n, V)
            logits[:, [data.PAD, data.BOS]] = -np.inf
            logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
            total = sum(logp[t, s] for t, s in enumerate(seq))
            scored.append((total / len(seq) ** length_penalty, seq))
        best.append(max(scored, key=lambda x: x[0]))
    return best


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_equals_exhaustive_search_and_narrow_beams_never_beat_it(length_penalty):
    """Target vocabulary PAD, BOS, EOS, a, b and outputs of at most 3 tokens: 3 + 9 + 27 outputs.
    A beam of 27 keeps every prefix, so it must find the exhaustive optimum."""
    ta.manual_seed(8)  # a model where beams of 1 and 2 miss the optimum for both penalties
    model = Translator(tgt_vocab_size=5, d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                       dim_feedforward=16).double().eval()
    for p in model.head.parameters():
        p.data *= 4.0  # a peakier distribution, so that greedy choices can be wrong
    src = sources(8)
    best = exhaustive(model, src, 3, length_penalty)
    tokens, scores = model.beam_search(src, 27, length_penalty, max_len=3)
    for i, (score, seq) in enumerate(best):
        assert tokens[i, :len(seq)].tolist() == seq
        assert np.all(tokens[i, len(seq):] == data.PAD)
        assert scores[i] == pytest.approx(score, abs=1e-9)
    worse = 0
    for k in (1, 2, 3, 5):
        _, narrow = model.beam_search(src, k, length_penalty, max_len=3)
        assert np.all(narrow <= scores + 1e-9)
        worse += int(np.sum(narrow < scores - 1e-6))
    assert worse > 0, "no narrow beam ever missed the optimum: the test would not see a broken search"


def test_record_attention_sees_cross_attention(random_model):
    src = sources(3)
    tgt_in = data.encode_target(["2026-11-29"] * 3)[:, :-1]  # (3, 11)
    with ta.nn.record_attention(random_model) as rec:
        random_model(src, tgt_in)
    cross = [w for n, w in zip(rec.names, rec.weights) if n.endswith("multihead_attn")]
    assert [n for n in rec.names if "decoder" in n] == [
        "transformer.decoder.layers.0.self_attn", "transformer.decoder.layers.0.multihead_attn",
        "transformer.decoder.layers.1.self_attn", "transformer.decoder.layers.1.multihead_attn"]
    assert cross[0].shape == (3, 2, 11, src.shape[1])
    for w in cross:
        assert np.all(w[src[:, None, None, :].repeat(11, 2).repeat(2, 1) == data.PAD] == 0)


def test_clear_errors(random_model):
    with pytest.raises(ValueError, match=r"tgt has 70 positions but the positional table has max_len 64"):
        random_model(sources(2), np.ones((2, 70), np.int64))
    with pytest.raises(ValueError, match=r"src has shape \(5,\)"):
        random_model.encode(np.ones(5, np.int64))
    with pytest.raises(ValueError, match=r"holds ids in \[0, 99\]; expected \[0, 14\)"):
        random_model(sources(2), np.array([[0, 99]]))
    memory, _ = random_model.encode(sources(2))
    with pytest.raises(ValueError, match=r"memory has shape \(2, \d+, 8\) .* d_model is 16"):
        random_model.transformer.decoder(ta.zeros(2, 3, 16, dtype=np.float64), ta.zeros(2, memory.shape[1], 8, dtype=np.float64))
    with pytest.raises(ValueError, match=r"unknown source characters \['#', 'Z'\]"):
        random_model.translate(["29 nov 26", "Z#"])
    with pytest.raises(ValueError, match="beam_size must be at least 1"):
        random_model.beam_search(sources(2), 0)
