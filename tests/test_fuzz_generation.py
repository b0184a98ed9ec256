"""Property-based fuzzing of the generation arguments (hypothesis), beside tests/test_fuzz.py.

GPT.generate, Translator.greedy_decode and beam_search get random mixes of valid and invalid
arguments (ints, floats, NaN, inf, strings, None, bools). A valid call returns the prompt followed
by in-vocabulary tokens, the same tokens for the same seed, argmax tokens at temperature 0 and
leaves the training flag as it was; an invalid one raises ValueError/TypeError naming the argument.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyattn as ta
import tinyattn.data as data
from tinyattn.models import GPT, Translator

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
WEIRD = st.sampled_from([None, "2", True, float("nan"), float("inf"), -float("inf"), 2.5, -1, 0, [1]])


def is_int(v, low=None, high=None) -> bool:
    return (not isinstance(v, bool) and isinstance(v, numbers.Integral)
            and (low is None or v >= low) and (high is None or v <= high))


def is_real(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, numbers.Real)


@pytest.fixture(scope="module")
def gpt():
    ta.manual_seed(0)
    return GPT(vocab_size=7, block_size=12, d_model=8, num_heads=2, num_layers=1)


@FUZZ
@given(n=st.one_of(st.integers(-2, 8), WEIRD),
       temperature=st.one_of(st.floats(0, 3), st.sampled_from([1e-300, 0.0]), WEIRD),
       top_k=st.one_of(st.none(), st.integers(-1, 9), WEIRD),
       top_p=st.one_of(st.none(), st.floats(-0.5, 1.5), WEIRD),
       training=st.booleans(), seed=st.integers(0, 3))
def test_generate_arguments(gpt, n, temperature, top_k, top_p, training, seed):
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    valid = (is_int(n, 0, 12 - 3) and is_real(temperature) and temperature >= 0
             and (top_k is None or (is_real(top_k) and math.isfinite(top_k) and top_k >= 1
                                    and int(top_k) == top_k))
             and (top_p is None or (is_real(top_p) and 0 < top_p <= 1)))
    gpt.train(training)
    call = dict(max_new_tokens=n, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    if not valid:
        with pytest.raises((ValueError, TypeError)) as err:
            gpt.generate(prompt, **call)
        assert any(name in str(err.value) for name in ("max_new_tokens", "temperature", "top_k", "top_p",
                                                       "positions")), str(err.value)
        return
    out = gpt.generate(prompt, **call)
    assert gpt.training is training
    assert out.shape == (2, 3 + n) and (out[:, :3] == prompt).all() and out.min() >= 0 and out.max() < 7
    np.testing.assert_array_equal(out, gpt.generate(prompt, **call))  # the seed fixes the tokens
    if temperature == 0 or (top_k == 1):
        np.testing.assert_array_equal(out, gpt.generate(prompt, n, temperature=0))


@pytest.fixture(scope="module")
def translator():
    ta.manual_seed(0)
    return Translator(d_model=8, nhead=2, dim_feedforward=16, num_encoder_layers=1, num_decoder_layers=1)


@FUZZ
@given(max_len=st.one_of(st.integers(-1, 6), WEIRD), beam=st.one_of(st.integers(-1, 3), WEIRD),
       penalty=st.one_of(st.floats(-2, 2), WEIRD), training=st.booleans())
def test_decoding_arguments(translator, max_len, beam, penalty, training):
    src = data.encode_source(["1999-12-31", "2001-02-03"])
    translator.train(training)
    ok_len, ok_beam = is_int(max_len, 1, translator.max_len), is_int(beam, 1)
    ok_penalty = is_real(penalty) and math.isfinite(penalty)
    if ok_len:
        tokens, logits = translator.greedy_decode(src, max_len=max_len)
        assert tokens.shape == (2, max_len) and logits.shape[1] <= max_len
    else:
        with pytest.raises((ValueError, TypeError), match="max_len"):
            translator.greedy_decode(src, max_len=max_len)
    if ok_len and ok_beam and ok_penalty:
        tokens, scores = translator.beam_search(src, beam, penalty, max_len=max_len)
        assert tokens.shape == (2, max_len) and np.isfinite(scores).all()
        if beam == 1:  # beam size 1 is greedy decoding
            np.testing.assert_array_equal(tokens, translator.greedy_decode(src, max_len=max_len)[0])
    else:
        with pytest.raises((ValueError, TypeError), match="max_len|beam_size|length_penalty"):
            translator.beam_search(src, beam, penalty, max_len=max_len)
    assert translator.training is training
