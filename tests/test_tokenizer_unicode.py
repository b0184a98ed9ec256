"""The BERT tokenizer against Hugging Face on every code point and on random mixed-script strings.

The reference, tests/fixtures/tokenizer_reference.npz, was written by Hugging Face's tokenizer
(tests/fixtures/make_tokenizer_reference.py; the fast tokenizer AutoTokenizer loads, which the
slow one equals on every code point): for each code point c (surrogates aside) the ids of c, of
"a" c "a" and of "a" c, in runs of consecutive code points with the same answers. Reading it needs
no transformers; the ids refer to all-MiniLM-L6-v2's vocab.txt.
"""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyattn.pretrained as pretrained
from tinyattn.pretrained import tokenizer as T

REFERENCE = pathlib.Path(__file__).parent / "fixtures" / "tokenizer_reference.npz"


@pytest.fixture(scope="module")
def tok():
    if not pretrained.is_available():
        pytest.skip("all-MiniLM-L6-v2 is not available (see tests/test_pretrained.py)")
    return pretrained.load()[1]


@pytest.fixture(scope="module")
def reference(tok):
    with np.load(REFERENCE, allow_pickle=False) as f:
        ref = dict(f)
    vocab = pathlib.Path(pretrained.model_folder()) / "vocab.txt"
    assert hashlib.sha256(vocab.read_bytes()).hexdigest() == str(ref["vocab_sha256"]), "another vocabulary"
    return ref


def answers(ref, k: int) -> tuple:
    off, flat = ref["key_offsets"][k], ref["key_flat"]
    return tuple(tuple(flat[off[j]:off[j + 1]].tolist()) for j in range(3))


def ours(tok, ch: str) -> tuple:
    texts = (ch, "a" + ch + "a", "a" + ch)
    return tuple(tuple(tok.convert_tokens_to_ids(tok.tokenize(text))) for text in texts)


def test_every_code_point_gives_hugging_faces_ids(tok, reference):
    """All 1,112,064 code points. Our ids for the three texts depend on c only through normalize(c)
    (normalize works character by character, and "a" has no accent to reorder with), and for an
    ordinary character that normalize leaves alone and no vocabulary entry contains, not even
    through that: every word holding it is [UNK]. So within each run of equal reference answers the
    code points are grouped by that signature, and the first and last of each group are tokenized
    in full."""
    in_vocab = set("".join(tok.vocab))
    starts = reference["run_starts"].tolist()
    ends = starts[1:] + [0x110000]
    wrong, checked = [], 0
    for first, end, k in zip(starts, ends, reference["run_keys"].tolist()):
        want = answers(reference, k)
        groups = {}
        for c in range(first, end):
            if 0xD800 <= c < 0xE000:
                continue
            ch = chr(c)
            n = T.normalize(ch)
            unknown = n == ch and ch not in in_vocab and T.char_class(ch) == ""
            groups.setdefault(None if unknown else n, []).append(c)
            checked += 1
        for members in groups.values():
            for c in {members[0], members[-1]}:
                got = ours(tok, chr(c))
                if got != want:
                    wrong.append((f"U+{c:04X}", len(members), got, want))
    assert checked == 0x110000 - 0x800
    assert not wrong, f"{len(wrong)} groups differ, e.g. {wrong[:5]}"


def test_what_the_reference_says_about_a_few_famous_characters(tok, reference):
    """Pinned by hand from the reference: a Cn code point is [UNK] (not dropped), uppercase final
    sigma lowercases to σ (not ς), U+2B820 (CJK Extension E) is not split off."""
    starts = reference["run_starts"]

    def at(c):
        return answers(reference, int(reference["run_keys"][np.searchsorted(starts, c, side="right") - 1]))

    unk = tok.unk_token_id
    assert at(0x0378) == ((unk,), (unk,), (unk,)) == ours(tok, "\u0378")
    assert at(0x03A3)[2] == tuple(tok.convert_tokens_to_ids(["a", "##σ"])) == ours(tok, "\u03a3")[2]
    assert at(0x2B820)[1] == (unk,) == ours(tok, "\U0002b820")[1]
    assert tok.tokenize("ΣΑΣ") == ["σ", "##α", "##σ"]


def test_char_classes_and_normalize_by_hand():
    """Without the model: NUL dropped, tab a space, ! and ~ punctuation; Ç lower-cased, accents stripped."""
    assert [T.char_class(c) for c in "\x00\t a!~é"] == ["removed", "space", "space", "", "punctuation",
                                                         "punctuation", ""]
    assert T.normalize("Ça\u0301\u200b\tx\u4e2d") == "ca x 中 "  # mark and zero-width space dropped


SCRIPTS = st.one_of(  # mixed scripts: Latin with accents, Greek, Cyrillic, Arabic, Devanagari, CJK,
    st.characters(min_codepoint=0x20, max_codepoint=0x24F),  # kana, hangul, emoji, combining
    st.characters(min_codepoint=0x370, max_codepoint=0x52F),  # marks, controls, unassigned
    st.characters(min_codepoint=0x600, max_codepoint=0x97F),
    st.characters(min_codepoint=0x3000, max_codepoint=0x9FFF),
    st.characters(min_codepoint=0xAC00, max_codepoint=0xD7AF),
    st.characters(min_codepoint=0x1F000, max_codepoint=0x1FAFF),
    st.characters(min_codepoint=0x300, max_codepoint=0x36F),
    st.characters(min_codepoint=0x0, max_codepoint=0x1F),
    st.characters(min_codepoint=0x2000, max_codepoint=0x2BFF),
    st.characters(min_codepoint=0xE0000, max_codepoint=0x10FFFF, exclude_categories=("Cs",)),
    st.sampled_from(" .,!?'-Σς"),
)


@pytest.fixture(scope="module")
def hugging_face(tok):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(pretrained.model_folder())


@settings(max_examples=200, deadline=None)
@given(text=st.lists(SCRIPTS, max_size=40).map("".join))
def test_random_mixed_script_strings_give_hugging_faces_ids(tok, hugging_face, text):
    assert tok.encode(text) == hugging_face.encode(text), f"{text!r}"
