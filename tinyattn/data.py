"""Toy tasks whose ideal attention pattern is known in advance: reverse, sort, associative recall.

Every example is one token sequence for an encoder: the given tokens, a separator ``=``, then one
blank slot ``?`` per answer token. The model reads its answers off the slots, so a slot's
attention row shows where the model looks for that answer::

    reverse  3 1 4 1 5 9 2 6 = ? ? ? ? ? ? ? ?    answers 6 2 9 5 1 4 1 3
    sort     3 1 4 1 5 9 2 6 = ? ? ? ? ? ? ? ?    answers 1 1 2 3 4 5 6 9
    recall   c7 a2 f0 e7 b5 h3 a = ?              answer  2   (the value paired with key a)

In ``recall`` each key-value pair is one token (``a2`` = key ``a``, value ``2``), followed by a
query key. Written as two tokens per pair, the task needs two attention hops that only pay off
together (bind each value to its key, then match the query); in our runs a model of this size
stayed on a loss plateau (accuracy about 0.34) for 15,000 steps. One token per pair leaves one
hop, matching the query against the pairs' keys, and trains in a few hundred steps.

The ideal attention of the slot for answer i (``ideal_attention``), over the whole sequence:

- ``reverse``: answer i is input token T−1−i, so slot i looks at position T−1−i: the
  anti-diagonal of the (slots × inputs) block. A pattern of positions only, the same for every
  example.
- ``sort``: answer i is the i-th smallest input, so slot i looks at the position(s) holding that
  value (uniformly over equal values): a permutation matrix that changes with every example.
- ``recall``: the answer is the value inside the pair whose key equals the query, so the slot
  looks at that pair: found by content (its key matches the query), not by position.

The vocabulary is shared by all tasks (digits, key letters, key-value pairs, ``=`` and ``?``),
so one model architecture serves all three. Train and test sets are disjoint: no test sequence
appears in the training set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "VOCAB", "SEP", "SLOT", "TASKS", "TaskSpec", "Split", "task_spec", "generate", "make_splits",
    "ideal_attention", "decode",
]

DIGITS = tuple(str(i) for i in range(10))
KEYS = tuple("abcdefghij")
PAIRS = tuple(k + v for k in KEYS for v in DIGITS)  # "a0" ... "j9": id 20 + 10·key + value
VOCAB = DIGITS + KEYS + PAIRS + ("=", "?")
_FIRST_KEY = VOCAB.index("a")
_FIRST_PAIR = VOCAB.index("a0")
SEP = VOCAB.index("=")
SLOT = VOCAB.index("?")
TASKS = ("reverse", "sort", "recall")


@dataclass(frozen=True)
class TaskSpec:
    """The shape of one task's sequences: ``input_len`` given tokens, ``=``, ``answer_len`` slots."""

    name: str
    input_len: int
    answer_len: int

    @property
    def seq_len(self) -> int:
        return self.input_len + 1 + self.answer_len

    @property
    def answer_positions(self) -> np.ndarray:
        """Indices of the answer slots in the sequence, (answer_len,)."""
        return np.arange(self.input_len + 1, self.seq_len)


_SPECS = {
    "reverse": TaskSpec("reverse", input_len=8, answer_len=8),
    "sort": TaskSpec("sort", input_len=8, answer_len=8),
    "recall": TaskSpec("recall", input_len=6 + 1, answer_len=1),  # 6 key-value pairs, a query
}
RECALL_PAIRS = 6


@dataclass(frozen=True)
class Split:
    """A set of examples: ``tokens`` (N, seq_len) model inputs, ``answers`` (N, answer_len)."""

    task: str
    tokens: np.ndarray
    answers: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)


def task_spec(task: str) -> TaskSpec:
    """The TaskSpec of ``task`` (one of TASKS)."""
    if task not in _SPECS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return _SPECS[task]


def generate(task: str, n: int, rng: np.random.Generator):
    """``n`` random examples: (inputs (n, input_len), answers (n, answer_len)), int64 token ids.

    reverse: inputs are digits (repeats allowed), answers[i] = inputs[T−1−i].
    sort: inputs are digits (repeats allowed), answers = inputs sorted ascending.
    recall: six pair tokens with distinct keys (letters) and random values (digits), then one
    of the keys as the query; the answer is the value in that key's pair.
    """
    spec = task_spec(task)
    if task in ("reverse", "sort"):
        inputs = rng.integers(0, len(DIGITS), (n, spec.input_len))  # (n, T)
        answers = inputs[:, ::-1] if task == "reverse" else np.sort(inputs, axis=1)  # (n, T)
        return inputs.astype(np.int64), np.ascontiguousarray(answers, dtype=np.int64)
    keys = np.argsort(rng.random((n, len(KEYS))), axis=1)[:, :RECALL_PAIRS]  # (n, P) distinct
    values = rng.integers(0, len(DIGITS), (n, RECALL_PAIRS))  # (n, P)
    which = rng.integers(0, RECALL_PAIRS, n)  # (n,) the pair that is asked about
    rows = np.arange(n)
    inputs = np.empty((n, spec.input_len), np.int64)  # (n, P + 1)
    inputs[:, :-1] = _FIRST_PAIR + len(DIGITS) * keys + values
    inputs[:, -1] = _FIRST_KEY + keys[rows, which]
    return inputs, values[rows, which][:, None].astype(np.int64)  # (n, 1)


def _sequences(task: str, inputs: np.ndarray) -> np.ndarray:
    """Append ``=`` and the answer slots: (n, input_len) -> (n, seq_len)."""
    spec = task_spec(task)
    n = len(inputs)
    tail = np.full((n, 1 + spec.answer_len), SLOT, np.int64)  # (n, 1 + A)
    tail[:, 0] = SEP
    return np.concatenate([inputs, tail], axis=1)  # (n, seq_len)


def make_splits(task: str, n_train: int, n_test: int, seed: int = 0):
    """Disjoint (train, test) Splits drawn with ``np.random.default_rng(seed)``.

    The test set is drawn first (duplicates removed), then training examples are drawn and any
    whose input also occurs in the test set is dropped, until ``n_train`` remain.
    """
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"n_train and n_test must be positive, got {n_train} and {n_test}")
    rng = np.random.default_rng(seed)
    test_x, test_y = _unique(task, n_test, rng, exclude=set())
    seen = {row.tobytes() for row in test_x}
    train_x, train_y = _unique(task, n_train, rng, exclude=seen, allow_repeats=True)
    return (Split(task, _sequences(task, train_x), train_y),
            Split(task, _sequences(task, test_x), test_y))


def _unique(task: str, n: int, rng: np.random.Generator, exclude: set, allow_repeats=False):
    """Draw until ``n`` examples whose inputs are not in ``exclude`` (nor repeated, unless allowed)."""
    xs, ys, count, seen = [], [], 0, set(exclude)
    for _ in range(100):
        x, y = generate(task, 2 * (n - count) + 16, rng)
        keep = []
        for i, row in enumerate(x):
            key = row.tobytes()
            if key in exclude or (not allow_repeats and key in seen):
                continue
            seen.add(key)
            keep.append(i)
            if count + len(keep) == n:
                break
        xs.append(x[keep])
        ys.append(y[keep])
        count += len(keep)
        if count == n:
            return np.concatenate(xs), np.concatenate(ys)
    raise RuntimeError(f"could not draw {n} distinct {task} examples; the task is too small")


def ideal_attention(task: str, tokens: np.ndarray) -> np.ndarray:
    """Where each answer slot should look: (N, seq_len) tokens -> (N, answer_len, seq_len).

    Each row sums to 1 and is zero outside the given inputs (see the module docstring).
    """
    spec = task_spec(task)
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] != spec.seq_len:
        raise ValueError(f"tokens has shape {tokens.shape}; expected (N, {spec.seq_len}) for {task}")
    N, T, A = len(tokens), spec.input_len, spec.answer_len
    ideal = np.zeros((N, A, spec.seq_len))  # (N, A, L)
    if task == "reverse":
        ideal[:, np.arange(A), T - 1 - np.arange(A)] = 1.0
    elif task == "sort":
        inputs = tokens[:, :T]  # (N, T)
        target = np.sort(inputs, axis=1)  # (N, T)
        hits = (inputs[:, None, :] == target[:, :, None]).astype(float)  # (N, A, T)
        ideal[:, :, :T] = hits / hits.sum(axis=2, keepdims=True)
    else:
        pair_keys = (tokens[:, :T - 1] - _FIRST_PAIR) // len(DIGITS)  # (N, P)
        query = tokens[:, T - 1] - _FIRST_KEY  # (N,)
        ideal[:, 0, :T - 1] = pair_keys == query[:, None]
    return ideal


def decode(ids) -> list:
    """Token ids -> their strings, e.g. ``[3, 10, 22]`` -> ``['3', 'a', 'a2']``."""
    return [VOCAB[int(i)] for i in np.asarray(ids).reshape(-1)]
