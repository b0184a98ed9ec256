"""BERT's tokenizer: basic tokenization, then WordPiece sub-words, from a ``vocab.txt``.

It reproduces Hugging Face's BERT tokenizer as ``AutoTokenizer`` loads it (the fast, Rust
``BertTokenizerFast``, which sentence-transformers uses; the Python ``BertTokenizer`` of
transformers gives the same ids on every code point): the tests check it id for id on every
code point alone and inside a word, and on random mixed-script strings. Text goes through two stages:

1. basic tokenization (``normalize``, then splitting): drop control characters and U+FFFD, turn
   every space character into a space, put spaces around CJK ideographs; for an uncased model
   strip accents (NFD, then drop the non-spacing marks) and lower-case character by character;
   split on spaces and split every punctuation character off as its own token. Which characters
   are which comes from Hugging Face's own (older) Unicode tables, in ``bert_unicode.json``.
2. WordPiece: each word becomes the longest vocabulary entry that starts it, then the longest
   ``##``-continuation of the rest, and so on; a word with no such split, or longer than 100
   characters, becomes ``[UNK]``.

Then ``[CLS] ... [SEP]`` around every sequence, ``[PAD]`` to the longest in the batch, and an
attention mask (1 = a real token, 0 = padding).
"""

from __future__ import annotations

import bisect
import functools
import importlib.resources
import json
import os
import re
import unicodedata

import numpy as np

__all__ = ["BertTokenizer", "basic_tokenize", "normalize", "wordpiece", "load_vocab", "char_class"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SPECIAL_PATTERN = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")
# decode's clean-up: these punctuation tokens join the word before them. (Hugging Face's
# WordPiece decoder applies its contraction rules, " n't" and the like, to one token at a time,
# where they can never match, so only these four act.)
CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","))
# Which characters are controls, spaces, CJK ideographs, non-spacing marks or punctuation, as Hugging
# Face's tokenizer sees them: its Unicode tables are older than Python's unicodedata (a code point
# assigned since is an ordinary letter to it, so it becomes [UNK]; U+166D is punctuation to it, U+1734
# a non-spacing mark), so the classes are ranges measured from its components
# (tests/fixtures/make_bert_unicode_tables.py), not unicodedata categories.
UNICODE_TABLES = importlib.resources.files("tinyattn") / "measurements" / "bert_unicode.json"
CLASSES = ("removed", "space", "cjk", "mark", "punctuation")
# Each character's class is looked up once and remembered (for up to 65,536 distinct characters).
remember = functools.lru_cache(maxsize=1 << 16)


@functools.lru_cache(maxsize=None)
def unicode_tables() -> dict:
    """"bounds" and "classes": code points bounds[i] .. bounds[i + 1] − 1 have class classes[i]
    ("" for an ordinary character); "lowercase": the characters whose lower case Hugging Face
    writes differently from Python's str.lower."""
    raw = json.loads(UNICODE_TABLES.read_text(encoding="utf-8"))
    edges = sorted((first, last + 1, name) for name in CLASSES for first, last in raw[name])
    bounds, classes = [0], [""]
    for first, end, name in edges:  # the classes do not overlap: each range is one class
        if first < bounds[-1]:
            raise ValueError(f"{UNICODE_TABLES}: the {name} range at U+{first:04X} overlaps another")
        bounds += [first, end]
        classes += [name, ""]
    return {"bounds": bounds, "classes": classes,
            "lowercase": {chr(int(c)): low for c, low in raw["lowercase"].items()}}


@remember
def char_class(ch: str) -> str:
    """One of "removed", "space", "cjk", "mark", "punctuation", or "" for any other character.

    A lone surrogate (U+D800..U+DFFF, which no UTF-8 text holds) is "removed".
    """
    cp = ord(ch)
    if 0xD800 <= cp < 0xE000:
        return "removed"
    tables = unicode_tables()
    return tables["classes"][bisect.bisect_right(tables["bounds"], cp) - 1]


def is_whitespace(ch: str) -> bool:
    """A character that cleaning turns into a space (space, tab, newline, the Unicode spaces)."""
    return char_class(ch) == "space"


def is_control(ch: str) -> bool:
    """A character that cleaning drops (controls, formats, private use, U+0000, U+FFFD)."""
    return char_class(ch) == "removed"


def is_punctuation(ch: str) -> bool:
    """Every non-alphanumeric printable ASCII character (so ``$``, ``^``, ``+`` too), or punctuation."""
    return char_class(ch) == "punctuation"


def is_cjk(ch: str) -> bool:
    """A CJK ideograph (not kana or hangul): it becomes a word of its own."""
    return char_class(ch) == "cjk"


@remember
def lower(ch: str) -> str:
    """One character's lower case, without context (so "Σ" is always "σ", never the final "ς")."""
    return unicode_tables()["lowercase"].get(ch, ch.lower())


def strip_accents(text: str) -> str:
    """Decompose (NFD) and drop the non-spacing marks: "café" -> "cafe"."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if char_class(c) != "mark")


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


def normalize(text: str, lowercase: bool = True, accents: bool | None = None,
              chinese_chars: bool = True) -> str:
    """Stage 1a, as Hugging Face's BertNormalizer: clean, space out CJK, strip accents, lower-case.

    Drop controls (and U+0000, U+FFFD), turn every space character into " ", put spaces around
    CJK ideographs; then NFD and drop the non-spacing marks; then lower-case character by
    character. ``accents=None`` strips them exactly when ``lowercase`` is on (BERT's default).
    """
    pieces = []
    for ch in text:
        kind = char_class(ch)
        if kind == "removed":
            continue
        pieces.append(" " if kind == "space" else f" {ch} " if kind == "cjk" and chinese_chars else ch)
    text = "".join(pieces)
    if lowercase if accents is None else accents:
        text = strip_accents(text)
    if lowercase:
        text = "".join(lower(ch) for ch in text)
    return text


def basic_tokenize(text: str, lowercase: bool = True, accents: bool | None = None,
                   chinese_chars: bool = True) -> list:
    """Stage 1: ``normalize``, then split on spaces and around every punctuation character."""
    tokens = []
    for word in normalize(text, lowercase, accents, chinese_chars).split(" "):
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
