"""BERT's tokenizer: basic tokenization, then WordPiece sub-words, from a ``vocab.txt``.

It reproduces Hugging Face's ``BertTokenizer`` (checked id for id on a list of tricky strings
by the tests). Text goes through two stages:

1. basic tokenization: drop control characters and U+FFFD, turn every whitespace into a
   space, put spaces around CJK ideographs, split on whitespace; for an uncased model lower-case
   each word and strip its accents (NFD, then drop the combining marks); split every
   punctuation character off as its own token.
2. WordPiece: each word becomes the longest vocabulary entry that starts it, then the longest
   ``##``-continuation of the rest, and so on; a word with no such split, or longer than 100
   characters, becomes ``[UNK]``.

Then ``[CLS] ... [SEP]`` around every sequence, ``[PAD]`` to the longest in the batch, and an
attention mask (1 = a real token, 0 = padding).
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata

import numpy as np

__all__ = ["BertTokenizer", "basic_tokenize", "wordpiece", "load_vocab"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SPECIAL_PATTERN = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")
# CJK Unified Ideographs and their extensions and compatibility blocks (not kana or hangul)
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
# decode's clean-up: these punctuation tokens join the word before them. (Hugging Face's
# WordPiece decoder applies its contraction rules, " n't" and the like, to one token at a time,
# where they can never match, so only these four act.)
CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","))
# The four character tests below run once per character of every text; their answers are
# remembered (for up to 65,536 distinct characters): 8.9 -> 5.7 ms for 64 sentences of ~32 tokens.
remember = functools.lru_cache(maxsize=1 << 16)


@remember
def is_whitespace(ch: str) -> bool:
    """Space, tab, newline, carriage return, or any Unicode space separator (category Zs)."""
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


@remember
def is_control(ch: str) -> bool:
    """A control/format/unassigned character (category C*), except tab, newline and return."""
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


@remember
def is_punctuation(ch: str) -> bool:
    """Every non-alphanumeric printable ASCII character (so ``$``, ``^``, ``+`` too), or category P*."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


@remember
def is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return cp >= 0x3400 and any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def strip_accents(word: str) -> str:
    """Decompose (NFD) and drop the combining marks (category Mn): "café" -> "cafe"."""
    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


def split_punctuation(word: str) -> list:
    """"don't!" -> ["don", "'", "t", "!"]: every punctuation character is a token of its own."""
    pieces, current = [], ""
    for ch in word:
        if is_punctuation(ch):
            pieces += [current, ch] if current else [ch]
            current = ""
        else:
            current += ch
    return pieces + [current] if current else pieces


def basic_tokenize(text: str, lowercase: bool = True, accents: bool | None = None,
                   chinese_chars: bool = True) -> list:
    """Stage 1: clean, split on whitespace and punctuation; lower-case and strip accents.

    ``accents=None`` strips them exactly when ``lowercase`` is on (BERT's default).
    """
    cleaned = []
    for ch in text:
        if ch == "\0" or ch == "\ufffd" or is_control(ch):
            continue
        if is_whitespace(ch):
            cleaned.append(" ")
        elif chinese_chars and is_cjk(ch):
            cleaned.append(f" {ch} ")
        else:
            cleaned.append(ch)
    text = unicodedata.normalize("NFC", "".join(cleaned))
    strip = lowercase if accents is None else accents
    tokens = []
    for word in text.split():
        if lowercase:
            word = word.lower()
        if strip:
            word = strip_accents(word)
        tokens += split_punctuation(word)
    return [t for t in tokens if t]


def wordpiece(word: str, vocab: dict, unk: str = "[UNK]", max_chars: int = 100) -> list:
    """Stage 2: greedy longest-match-first sub-words: "unaffable" -> ["un", "##aff", "##able"]."""
    if len(word) > max_chars:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return [unk]  # no vocabulary entry starts here: the whole word is unknown
        pieces.append(piece)
        start = end
    return pieces


def load_vocab(path) -> dict:
    """token -> id from a ``vocab.txt`` (one token per line, id = line number)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vocabulary file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    vocab = {t: i for i, t in enumerate(tokens)}
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ValueError(f"{path}: the vocabulary has no {', '.join(missing)} token(s), which "
                         f"BERT's tokenizer needs; is this a BERT vocab.txt?")
    return vocab


class BertTokenizer:
    """Text -> token ids for a BERT model, as Hugging Face's ``BertTokenizer``.

    ``tokenizer(["a sentence", ...])`` -> dict of int64 arrays ``input_ids``,
    ``attention_mask`` and ``token_type_ids``, each (N, L), L the longest sequence (or
    ``max_length`` with ``truncation=True``).
    """

    def __init__(self, vocab: dict, lowercase: bool = True, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True, model_max_length: int = 512):
        self.vocab = dict(vocab)
        missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise ValueError(f"the vocabulary has no {', '.join(missing)} token(s)")
        self.ids_to_tokens = {i: t for t, i in self.vocab.items()}
        self.lowercase, self.strip_accents = lowercase, strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.model_max_length = model_max_length
        self.pad_token_id, self.unk_token_id, self.cls_token_id, self.sep_token_id, \
            self.mask_token_id = (self.vocab[t] for t in SPECIAL_TOKENS)

    @classmethod
    def from_file(cls, path, **options) -> "BertTokenizer":
        """A tokenizer from a ``vocab.txt``; options as in the constructor."""
        return cls(load_vocab(path), **options)

    def __len__(self) -> int:
        return len(self.vocab)

    def tokenize(self, text: str) -> list:
        """Text -> WordPiece tokens (strings), without [CLS]/[SEP]. Special tokens in the text
        (e.g. "[MASK]") stay whole."""
        tokens = []
        for part, special in self._split_special(text):
            if special:
                tokens.append(part)
                continue
            for word in basic_tokenize(part, self.lowercase, self.strip_accents,
                                       self.tokenize_chinese_chars):
                tokens += wordpiece(word, self.vocab)
        return tokens

    @staticmethod
    def _split_special(text: str) -> list:
        """[(piece, is_special)]: the text cut at the special tokens written in it."""
        parts = SPECIAL_PATTERN.split(text)  # odd positions hold the special tokens
        return [(part, i % 2 == 1) for i, part in enumerate(parts)]

    def convert_tokens_to_ids(self, tokens: list) -> list:
        return [self.vocab.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids) -> list:
        return [self.ids_to_tokens[int(i)] for i in ids]

    def encode(self, text: str, max_length: int | None = None, truncation: bool = False) -> list:
        """One text -> ids ``[CLS] ... [SEP]``; with ``truncation``, at most ``max_length`` ids."""
        ids = self.convert_tokens_to_ids(self.tokenize(text))
        if truncation:
            limit = self.model_max_length if max_length is None else max_length
            if limit < 2:
                raise ValueError(f"max_length {limit} leaves no room for [CLS] and [SEP]")
            ids = ids[:limit - 2]
        return [self.cls_token_id] + ids + [self.sep_token_id]

    def __call__(self, texts, max_length: int | None = None, truncation: bool = False) -> dict:
        """Texts -> padded int64 arrays ``input_ids``, ``attention_mask``, ``token_type_ids`` (N, L)."""
        if isinstance(texts, str):
            texts = [texts]
        seqs = [self.encode(t, max_length, truncation) for t in texts]
        L = max((len(s) for s in seqs), default=2)
        ids = np.full((len(seqs), L), self.pad_token_id, dtype=np.int64)  # (N, L)
        mask = np.zeros((len(seqs), L), dtype=np.int64)  # (N, L)
        for n, s in enumerate(seqs):
            ids[n, :len(s)] = s
            mask[n, :len(s)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = True) -> str:
        """Ids -> text: tokens joined by spaces, "##" continuations glued to their word, and
        (as Hugging Face does by default) the space before ``. ? ! ,`` removed:
        "hello , world !" -> "hello, world!"."""
        special = {self.vocab[t] for t in SPECIAL_TOKENS}
        tokens = self.convert_ids_to_tokens(i for i in ids if not (skip_special_tokens and int(i) in special))
        text = " ".join(tokens).replace(" ##", "").strip()
        if clean_up_tokenization_spaces:
            for before, after in CLEAN_UP:
                text = text.replace(before, after)
        return text
