"""The language-model tasks: addition written as text with held-out problems, and induction
sequences whose second half repeats the first."""

from __future__ import annotations

import numpy as np
import pytest

from tinyattn import data


def test_add_sequences_spell_the_problem_and_its_sum():
    seqs = data.add_sequences([357, 7, 999, 0], [486, 45, 999, 0])
    assert seqs.shape == (4, 12) and seqs.dtype == np.int64
    assert [data.add_text(s) for s in seqs] == ["357+486=0843", "007+045=0052", "999+999=1998",
                                                "000+000=0000"]
    np.testing.assert_array_equal(data.parse_add("357+486=0843"), seqs[0])


def test_add_answer_digits_equal_the_sum_for_random_operands():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 1000, 500), rng.integers(0, 1000, 500)
    seqs = data.add_sequences(a, b)
    answer = seqs[:, 8:] @ np.array([1000, 100, 10, 1])
    np.testing.assert_array_equal(answer, a + b)
    np.testing.assert_array_equal(seqs[:, :3] @ np.array([100, 10, 1]), a)


@pytest.mark.parametrize("a,b,message", [([1000], [1], r"operands must lie in \[0, 1000\), got values from 1 to 1000"),
                                         ([-1], [1], "from -1 to 1"),
                                         ([[1]], [[1]], "must be 1-D")])
def test_add_sequences_reject_bad_operands(a, b, message):
    with pytest.raises(ValueError, match=message):
        data.add_sequences(a, b)


def test_parse_add_names_unknown_characters():
    with pytest.raises(ValueError, match=r"\['x'\] are not in the add vocabulary 0123456789\+="):
        data.parse_add("3x+1=")


def test_held_out_problems_are_distinct_and_never_sampled_in_either_order():
    split = data.make_add_split(3000, seed=0)
    a = split.test[:, :3] @ np.array([100, 10, 1])
    b = split.test[:, 4:7] @ np.array([100, 10, 1])
    pairs = {(min(x, y), max(x, y)) for x, y in zip(a, b)}
    assert len(pairs) == 3000 == split.held_out.sum()
    ta, tb = data.sample_add_pairs(60000, np.random.default_rng(1), split.held_out)
    drawn = set(zip(np.minimum(ta, tb).tolist(), np.maximum(ta, tb).tolist()))
    assert not drawn & pairs
    assert len(drawn) > 55000  # still spread over the whole problem space
    free_a, free_b = data.sample_add_pairs(60000, np.random.default_rng(1))
    assert {(min(x, y), max(x, y)) for x, y in zip(free_a, free_b)} & pairs  # the filter did the work


def test_add_split_is_deterministic_per_seed():
    np.testing.assert_array_equal(data.make_add_split(50, 4).test, data.make_add_split(50, 4).test)
    assert not np.array_equal(data.make_add_split(50, 4).test, data.make_add_split(50, 5).test)


def test_induction_sequences_copy_a_run_of_distinct_tokens_from_a_random_start():
    seqs, offset = data.induction_sequences(500, np.random.default_rng(0))
    assert seqs.shape == (500, 25) and offset.shape == (500,)
    assert data.INDUCTION_BOS == 16 and np.all(seqs[:, 0] == 16)
    assert set(offset.tolist()) == {10, 11, 12, 13, 14}
    for row, o in zip(seqs, offset):
        assert len(set(row[1:15])) == 14  # the first part: distinct tokens
        np.testing.assert_array_equal(row[15:], row[15 - o:25 - o])  # the copy, o positions later
    counts = np.bincount(seqs[:, 1:15].reshape(-1), minlength=16) / (500 * 14)
    np.testing.assert_allclose(counts, 1 / 16, atol=0.01)  # every token equally likely


def test_the_repeat_positions_are_where_the_next_token_follows_an_earlier_copy():
    seqs, offset = data.induction_sequences(50, np.random.default_rng(2))
    first, repeat = data.induction_positions()
    np.testing.assert_array_equal(np.flatnonzero(first), np.arange(14))
    np.testing.assert_array_equal(np.flatnonzero(repeat), np.arange(15, 24))
    for row, o in zip(seqs, offset):
        for t in np.flatnonzero(repeat):
            earlier = np.flatnonzero(row[:t] == row[t])  # the previous occurrence of the current token
            assert len(earlier) == 1 and earlier[0] == t - o and row[earlier[0] + 1] == row[t + 1]
        for t in np.flatnonzero(first):
            assert row[t + 1] not in row[:t + 1]  # nothing earlier announces the next token
    starts = seqs[:, 15]  # the token at t = 14's target: where the copy starts varies
    assert len({int(np.flatnonzero(r[:15] == s)[0]) for r, s in zip(seqs, starts)}) == 5


def test_induction_test_set_is_distinct_and_seeded():
    test, offset = data.make_induction_test(200, seed=0)
    assert len(np.unique(test, axis=0)) == 200 and offset.shape == (200,)
    again, _ = data.make_induction_test(200, seed=0)
    np.testing.assert_array_equal(test, again)
