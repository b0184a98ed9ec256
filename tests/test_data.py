"""The toy tasks: answers checked by plain Python, disjoint splits, determinism, ideal patterns."""

import numpy as np
import pytest

from tinyattn import data

DIGITS = [str(i) for i in range(10)]
LETTERS = list("abcdefghij")
PAIR_TOKENS = [k + v for k in LETTERS for v in DIGITS]


def _strings(split, i):
    """(given tokens, answer strings) of example i, decoded without the code under test."""
    vocab = DIGITS + LETTERS + PAIR_TOKENS + ["=", "?"]
    seq = [vocab[t] for t in split.tokens[i]]
    cut = seq.index("=")
    assert seq[cut + 1:] == ["?"] * len(split.answers[i])
    return seq[:cut], [vocab[t] for t in split.answers[i]]


@pytest.fixture(scope="module")
def splits():
    return {task: data.make_splits(task, 600, 200, seed=3) for task in data.TASKS}


def test_reverse_answers_are_the_input_backwards(splits):
    for split in splits["reverse"]:
        for i in range(len(split)):
            given, answer = _strings(split, i)
            assert len(given) == 8 and all(t in DIGITS for t in given)
            assert answer == list(reversed(given))


def test_sort_answers_are_the_input_sorted(splits):
    for split in splits["sort"]:
        for i in range(len(split)):
            given, answer = _strings(split, i)
            assert answer == sorted(given, key=int)


def test_recall_answer_is_the_value_paired_with_the_query(splits):
    for split in splits["recall"]:
        for i in range(len(split)):
            given, answer = _strings(split, i)
            *pairs, query = given
            assert len(pairs) == 6 and all(len(p) == 2 for p in pairs)
            keys, values = [p[0] for p in pairs], [p[1] for p in pairs]
            assert len(set(keys)) == 6 and query in keys
            assert all(k in LETTERS for k in keys) and all(v in DIGITS for v in values)
            assert answer == [dict(zip(keys, values))[query]]


def test_every_answer_value_and_query_key_occurs(splits):
    """Over 800 examples each digit is an answer and each pair is asked about (no dead class)."""
    rev, srt, rec = (np.concatenate([s.answers for s in splits[t]]) for t in data.TASKS)
    for answers in (rev, srt, rec):
        assert set(answers.ravel().tolist()) == set(range(10))
    tokens = np.concatenate([s.tokens for s in splits["recall"]])
    vocab = DIGITS + LETTERS + PAIR_TOKENS
    asked = [[vocab[t][0] for t in row[:6]].index(vocab[row[6]]) for row in tokens]
    assert set(asked) == set(range(6))


def test_train_and_test_are_disjoint_and_test_has_no_repeats():
    for task in data.TASKS:
        train, test = data.make_splits(task, 3000, 500, seed=0)
        train_rows = {tuple(r) for r in train.tokens.tolist()}
        test_rows = [tuple(r) for r in test.tokens.tolist()]
        assert len(train) == 3000 and len(test) == 500
        assert len(set(test_rows)) == 500
        assert train_rows.isdisjoint(test_rows)


def test_disjointness_holds_when_collisions_are_likely(monkeypatch):
    """Shrink the task to 2 digits so that most drawn training rows collide with the test set."""
    monkeypatch.setitem(data._SPECS, "reverse", data.TaskSpec("reverse", 2, 2))
    train, test = data.make_splits("reverse", 200, 60, seed=1)
    test_rows = {tuple(r) for r in test.tokens.tolist()}
    assert len(test_rows) == 60
    assert not any(tuple(r) in test_rows for r in train.tokens.tolist())


def test_too_small_a_task_raises(monkeypatch):
    monkeypatch.setitem(data._SPECS, "reverse", data.TaskSpec("reverse", 1, 1))
    with pytest.raises(RuntimeError, match="distinct"):
        data.make_splits("reverse", 5, 20, seed=0)


def test_splits_are_deterministic_per_seed():
    a_train, a_test = data.make_splits("sort", 100, 50, seed=7)
    b_train, b_test = data.make_splits("sort", 100, 50, seed=7)
    c_train, _ = data.make_splits("sort", 100, 50, seed=8)
    assert np.array_equal(a_train.tokens, b_train.tokens) and np.array_equal(a_test.answers, b_test.answers)
    assert not np.array_equal(a_train.tokens, c_train.tokens)


def test_layout_and_answer_positions():
    for task, given, slots in (("reverse", 8, 8), ("sort", 8, 8), ("recall", 7, 1)):
        spec = data.task_spec(task)
        assert spec.seq_len == given + 1 + slots
        assert spec.answer_positions.tolist() == list(range(given + 1, given + 1 + slots))
    with pytest.raises(ValueError, match="unknown task 'copy'"):
        data.task_spec("copy")
    with pytest.raises(ValueError, match="positive"):
        data.make_splits("sort", 0, 10)


def test_ideal_attention_reverse_is_the_anti_diagonal(splits):
    tokens = splits["reverse"][1].tokens[:5]
    ideal = data.ideal_attention("reverse", tokens)
    expected = np.zeros((8, 17))
    for i in range(8):
        expected[i, 7 - i] = 1.0
    assert ideal.shape == (5, 8, 17)
    assert np.array_equal(ideal, np.broadcast_to(expected, ideal.shape))


def test_ideal_attention_sort_looks_at_the_answer_value(splits):
    split = splits["sort"][1]
    ideal = data.ideal_attention("sort", split.tokens)
    assert np.allclose(ideal.sum(axis=-1), 1.0)
    for n in range(len(split)):
        given = split.tokens[n, :8]
        for i in range(8):
            where = [j for j in range(8) if given[j] == split.answers[n, i]]
            assert np.allclose(ideal[n, i, where], 1.0 / len(where))
            assert np.isclose(ideal[n, i].sum(), ideal[n, i, where].sum())


def test_ideal_attention_recall_is_the_matching_pair(splits):
    split = splits["recall"][1]
    ideal = data.ideal_attention("recall", split.tokens)
    assert ideal.shape == (len(split), 1, 9)
    for n in range(len(split)):
        given, answer = _strings(split, n)
        looked = np.flatnonzero(ideal[n, 0]).tolist()
        assert len(looked) == 1 and ideal[n, 0, looked[0]] == 1.0
        assert given[looked[0]] == given[6] + answer[0]
    with pytest.raises(ValueError, match=r"expected \(N, 9\)"):
        data.ideal_attention("recall", split.tokens[:, :-1])


def test_decode():
    assert data.decode([3, 10, 19, 20, 47, 119, 120, 121]) == ["3", "a", "j", "a0", "c7", "j9", "=", "?"]
