"""Byte-pair encoding from scratch: learn merges on a text, encode, decode (on UTF-8 bytes).

    bpe = BPE.train(text, num_merges=256)      # 256 byte tokens + 256 merged tokens
    ids = bpe.encode("Wherefore art thou?")    # fewer ids than characters
    assert bpe.decode(ids) == "Wherefore art thou?"

Training starts from the 256 byte values and repeats ``num_merges`` times: count every adjacent
pair of ids, take the most frequent (ties: the smallest pair), give it the next id and replace
every occurrence, left to right. Encoding applies the learned merges in the order they were
learned, which gives the same ids as always merging the lowest-ranked pair present (a merge only
creates pairs containing its new id, whose rank is higher). Decoding concatenates each id's
bytes. Any string round-trips, whatever its script, because the tokens are bytes: a character
never seen in training is spelled by its UTF-8 bytes. (GPT-2 also splits text into words before
merging, so no token crosses a word boundary; this is the basic version without that split.)
"""

from __future__ import annotations

import numpy as np

__all__ = ["BPE", "merge", "merge_array", "most_frequent_pair"]


def merge(ids: list, pair: tuple, new_id: int) -> list:
    """The reference: replace every occurrence of ``pair`` in ``ids``, left to right, by ``new_id``."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_array(ids: np.ndarray, pair: tuple, new_id: int) -> np.ndarray:
    """``merge`` on an int array without a Python loop (equal to it; a test holds them equal).

    A match at i overlaps the match at i − 1 when pair = (a, a) and the text holds a a a; of a
    run of overlapping matches, left to right merging keeps those at even offsets in the run.
    """
    ids = np.asarray(ids)
    if len(ids) < 2:
        return ids.copy()
    match = (ids[:-1] == pair[0]) & (ids[1:] == pair[1])  # (N − 1,)
    if not match.any():
        return ids.copy()
    if pair[0] == pair[1]:
        run_start = match & ~np.concatenate([[False], match[:-1]])  # first match of each run
        run_id = np.cumsum(run_start)  # (N − 1,)
        start_at = np.flatnonzero(run_start)  # (R,)
        offset = np.arange(len(match)) - start_at[np.maximum(run_id - 1, 0)]
        match &= offset % 2 == 0
    starts = np.flatnonzero(match)  # (M,)
    out = ids.copy()
    out[starts] = new_id
    keep = np.ones(len(ids), dtype=bool)
    keep[starts + 1] = False
    return out[keep]  # (N − M,)


def most_frequent_pair(ids: np.ndarray, vocab_size: int):
    """The most frequent adjacent pair (a, b) of ``ids`` and its count; ties go to the smallest a·V + b."""
    codes = ids[:-1].astype(np.int64) * vocab_size + ids[1:]  # (N − 1,)
    counts = np.bincount(codes, minlength=vocab_size * vocab_size)
    best = int(counts.argmax())
    return (best // vocab_size, best % vocab_size), int(counts[best])


class BPE:
    """A byte-level BPE tokenizer: ``merges`` is a list of ((a, b), new_id), in learning order."""

    def __init__(self, merges):
        self.merges = [((int(a), int(b)), int(new)) for (a, b), new in merges]
        self.vocab = [bytes([i]) for i in range(256)]  # id -> the bytes it spells
        for (a, b), new in self.merges:
            if new != len(self.vocab) or max(a, b) >= new:
                raise ValueError(f"merge ({a}, {b}) -> {new} does not extend a vocabulary of "
                                 f"{len(self.vocab)}")
            self.vocab.append(self.vocab[a] + self.vocab[b])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @classmethod
    def train(cls, text: str, num_merges: int) -> "BPE":
        """Learn ``num_merges`` merges on the UTF-8 bytes of ``text`` (stops early if no pair repeats)."""
        if isinstance(num_merges, bool) or not isinstance(num_merges, int) or num_merges < 0:
            raise ValueError(f"num_merges must be an int >= 0, got {num_merges!r}")
        ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)  # (N,)
        merges, final_size = [], 256 + num_merges
        for new in range(256, final_size):
            if len(ids) < 2:
                break
            pair, count = most_frequent_pair(ids, final_size)
            if count < 2:
                break
            merges.append((pair, new))
            ids = merge_array(ids, pair, new)
        return cls(merges)

    def encode(self, text: str) -> np.ndarray:
        """Text -> ids (n,) int64: its UTF-8 bytes, then every merge in learning order."""
        ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)  # (bytes,)
        for pair, new in self.merges:
            ids = merge_array(ids, pair, new)
        return ids

    def decode(self, ids) -> str:
        """Ids -> text: the concatenated bytes of every id, read as UTF-8."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"id {ids.min() if ids.min() < 0 else ids.max()} is outside the "
                             f"vocabulary 0..{self.vocab_size - 1}")
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")

    def token_strings(self, ids) -> list:
        """Each id's bytes as text (a partial UTF-8 character shows as U+FFFD)."""
        return [self.vocab[i].decode("utf-8", errors="replace") for i in np.asarray(ids).reshape(-1)]
