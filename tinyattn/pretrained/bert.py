"""BERT from tinyattn's own modules, with weights from a Hugging Face folder.

A BERT encoder is exactly what ``nn.TransformerEncoder`` of post-norm layers computes, so
this file only adds the input embeddings and the renaming of weights:

    x = LayerNorm(word_emb[ids] + position_emb[0..L-1] + token_type_emb[types])   # (N, L, E)
    x = TransformerEncoder(TransformerEncoderLayer(E, H, F, activation="gelu",
                           layer_norm_eps=1e-12, batch_first=True), num_layers)(x, mask)

Hugging Face names (``encoder.layer.3.attention.self.query.weight``, ...) are mapped to the
encoder's PyTorch-style keys (``encoder.layers.3.self_attn.in_proj_weight`` rows 0:E, ...) by
``hf_to_tinyattn``. ``encode`` pools sentence embeddings as sentence-transformers does.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from dataclasses import dataclass, fields

import numpy as np

from .. import autograd as ag
from .. import nn
from ..nn import functional as F

__all__ = ["BertConfig", "BertEmbeddings", "BertModel", "hf_to_tinyattn", "mean_pool", "read_json_object",
           "check_fields", "check_against_weights", "expected_shapes"]

ACTIVATIONS = {  # config.json hidden_act -> the encoder layer's activation
    "gelu": "gelu",
    "relu": "relu",
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}
ARCHITECTURES = {"BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification"}


@dataclass
class BertConfig:
    """The fields of a Hugging Face BERT ``config.json`` that the model needs."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    @classmethod
    def from_file(cls, path) -> "BertConfig":
        """Read ``config.json``; an architecture other than an absolute-position BERT is an error.

        The five sizes (``SIZES``) must be present; every field read is checked for its type and
        range, and any mistake is a ValueError naming the file, the key and the value.
        """
        path = os.fspath(path)
        raw = read_json_object(path)
        check_fields(path, raw, {"architectures": (_names, "a list of names such as [\"BertModel\"]")})
        arch = raw.get("architectures") or ["BertModel"]
        if raw.get("model_type") != "bert" or not set(arch) <= ARCHITECTURES:
            raise ValueError(f"{path}: model_type {raw.get('model_type')!r} with architectures {arch} "
                             f"is not supported; tinyattn.pretrained loads BERT models "
                             f"(model_type 'bert', one of {sorted(ARCHITECTURES)})")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: position_embedding_type {raw['position_embedding_type']!r} is not "
                             f"supported; only 'absolute' is")
        act = raw.get("hidden_act", "gelu")
        if not isinstance(act, str) or act not in ACTIVATIONS:
            raise ValueError(f"{path}: hidden_act {act!r:.80} is not supported; "
                             f"expected one of {sorted(ACTIVATIONS)}")
        missing = [key for key in SIZES if key not in raw]
        if missing:
            raise ValueError(f"{path}: has no {missing[0]!r}; a BERT config.json states its sizes "
                             f"({', '.join(SIZES)})")
        check_fields(path, raw, CONFIG_FIELDS)
        config = cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
        check_fields(path, raw, {"pad_token_id": (
            lambda v: v is None or (_int(v) and 0 <= v < config.vocab_size),
            f"an int in [0, {config.vocab_size}) or null")})
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"{path}: hidden_size {config.hidden_size} is not divisible by "
                             f"num_attention_heads {config.num_attention_heads}")
        return config


def check_against_weights(config: BertConfig, weights: dict, config_path, weights_path) -> None:
    """Hold config.json's sizes against the weights' shapes (Hugging Face names) before a model is built.

    Otherwise a config.json that asks for more than the file holds (``vocab_size: 10**9``) is
    allocated first and refused only by ``load_state_dict``. Raises ValueError naming both files.
    """
    w = {k.removeprefix("bert."): v for k, v in weights.items()}
    layers = {int(m.group(1)) for k in w if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}
    where = f"{config_path} and {weights_path} disagree"
    if len(layers) != config.num_hidden_layers:
        raise ValueError(f"{where}: the config asks for {config.num_hidden_layers} layers, the weights "
                         f"hold {len(layers)}")
    for name, shape in expected_shapes(config).items():
        if name in w and tuple(w[name].shape) != shape:
            raise ValueError(f"{where}: {name} should have shape {shape} for the config, but has "
                             f"{tuple(w[name].shape)}")


def expected_shapes(config: BertConfig) -> dict:
    """Hugging Face weight name -> the shape ``config`` gives it (the pooler and heads left out)."""
    E, F_ = config.hidden_size, config.intermediate_size
    shapes = {"embeddings.word_embeddings.weight": (config.vocab_size, E),
              "embeddings.position_embeddings.weight": (config.max_position_embeddings, E),
              "embeddings.token_type_embeddings.weight": (config.type_vocab_size, E),
              "embeddings.LayerNorm.weight": (E,), "embeddings.LayerNorm.bias": (E,)}
    per_layer = {"attention.output.dense.weight": (E, E), "attention.output.dense.bias": (E,),
                 "attention.output.LayerNorm.weight": (E,), "attention.output.LayerNorm.bias": (E,),
                 "intermediate.dense.weight": (F_, E), "intermediate.dense.bias": (F_,),
                 "output.dense.weight": (E, F_), "output.dense.bias": (E,),
                 "output.LayerNorm.weight": (E,), "output.LayerNorm.bias": (E,)}
    for p in ("query", "key", "value"):
        per_layer[f"attention.self.{p}.weight"], per_layer[f"attention.self.{p}.bias"] = (E, E), (E,)
    for i in range(config.num_hidden_layers):
        shapes.update({f"encoder.layer.{i}.{name}": shape for name, shape in per_layer.items()})
    return shapes


def _int(v) -> bool:
    return type(v) is int


def _number(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _names(v) -> bool:
    return v is None or (isinstance(v, list) and all(isinstance(a, str) for a in v))


SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
POSITIVE_INT = (lambda v: _int(v) and v >= 1, "an int >= 1")
CONFIG_FIELDS = {  # config.json key -> (is it valid?, what was expected)
    **{key: POSITIVE_INT for key in SIZES + ("max_position_embeddings", "type_vocab_size")},
    "hidden_dropout_prob": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "layer_norm_eps": (lambda v: _number(v) and v > 0, "a number > 0"),
}


def read_json_object(path) -> dict:
    """The object in a JSON file; a ValueError naming the file if it is not UTF-8 JSON or not an object."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not valid UTF-8 text ({err.reason} at byte {err.start})") from None
    except (ValueError, RecursionError) as err:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw


def check_fields(path, raw: dict, specs: dict) -> None:
    """Check ``raw[key]`` with ``specs[key] = (predicate, expected)`` for the keys present."""
    for key, (valid, expected) in specs.items():
        if key in raw and not valid(raw[key]):
            raise ValueError(f"{path}: {key} {raw[key]!r:.80}; expected {expected}")


class BertEmbeddings(nn.Module):
    """ids (N, L), token types (N, L) -> LayerNorm(word + position + token-type embeddings) (N, L, E)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        E = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, E)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, E)
        self.LayerNorm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        L, max_len = input_ids.shape[1], self.position_embeddings.num_embeddings
        if L > max_len:
            raise ValueError(f"a sequence of {L} tokens is longer than max_position_embeddings = "
                             f"{max_len}; truncate it (tokenizer(..., truncation=True, max_length={max_len}))")
        x = self.word_embeddings(input_ids)  # (N, L, E)
        x = x + self.position_embeddings(np.arange(L))  # (N, L, E) + (L, E)
        x = x + self.token_type_embeddings(token_type_ids)  # (N, L, E)
        return self.dropout(self.LayerNorm(x))


class BertModel(nn.Module):
    """A BERT encoder: ``forward(input_ids, attention_mask)`` -> last hidden states (N, L, E).

    With ``output_attentions=True`` it returns ``(hidden, attentions)``, attentions the
    per-layer per-head weights (num_layers, N, H, L, L). ``encode(sentences)`` needs a
    tokenizer (``load`` attaches one as ``model.tokenizer``).
    """

    def __init__(self, config: BertConfig, tokenizer=None):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        layer = nn.TransformerEncoderLayer(
            config.hidden_size, config.num_attention_heads, config.intermediate_size,
            dropout=config.hidden_dropout_prob, activation=ACTIVATIONS[config.hidden_act],
            layer_norm_eps=config.layer_norm_eps, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.num_hidden_layers, enable_nested_tensor=False)
        self.tokenizer = tokenizer  # a plain attribute: not a Module, not in the state_dict
        self.max_seq_length = config.max_position_embeddings  # encode() truncates to this

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_attentions: bool = False):
        """input_ids (N, L) int -> hidden states (N, L, E) [, attentions (layers, N, H, L, L)].

        attention_mask (N, L): 1 for a real token, 0 for padding (Hugging Face's convention).
        """
        ids = np.asarray(input_ids.data if isinstance(input_ids, ag.Tensor) else input_ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"input_ids must be integer (N, L), got dtype {ids.dtype} shape {ids.shape}")
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids)
        padding = None
        if attention_mask is not None:
            mask = np.asarray(attention_mask)
            if mask.shape != ids.shape:
                raise ValueError(f"attention_mask has shape {mask.shape} but input_ids has {ids.shape}")
            padding = mask == 0  # (N, L) bool: True = a padding key nobody may attend to
        x = self.embeddings(ids, types)  # (N, L, E)
        if not output_attentions:
            return self.encoder(x, src_key_padding_mask=padding)
        with nn.record_attention(self) as rec:
            x = self.encoder(x, src_key_padding_mask=padding)
        return x, rec.stack()  # (N, L, E), (layers, N, H, L, L)

    def encode(self, sentences, batch_size: int = 32, normalize: bool = True) -> np.ndarray:
        """Sentence embeddings (N, E) as sentence-transformers computes them.

        Texts longest first in batches of ``batch_size`` (less padding), each truncated to
        ``max_seq_length`` tokens, hidden states averaged over the real tokens
        (``mean_pool``), then L2-normalized; returned in the input order.
        """
        if self.tokenizer is None:
            raise ValueError("encode needs a tokenizer: set model.tokenizer (load() does)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"encode: batch_size must be an int >= 1, got {batch_size!r}")
        sentences = [sentences] if isinstance(sentences, str) else list(sentences)
        order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
        out = np.zeros((len(sentences), self.config.hidden_size), self.embeddings.LayerNorm.weight.dtype)
        with ag.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = self.tokenizer([sentences[i] for i in idx], max_length=self.max_seq_length,
                                       truncation=True)
                hidden = self(batch["input_ids"], batch["attention_mask"])  # (n, L, E)
                out[idx] = mean_pool(hidden.data, batch["attention_mask"], normalize)  # (n, E)
        return out


def mean_pool(hidden: np.ndarray, attention_mask: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Average of the hidden states over real tokens: (N, L, E), (N, L) -> (N, E).

    e = Σ_t m_t h_t / max(Σ_t m_t, 1e-9), then e / max(‖e‖, 1e-12) when ``normalize``.
    """
    m = attention_mask.astype(hidden.dtype)[..., None]  # (N, L, 1)
    e = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)  # (N, E)
    if normalize:
        e = e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)  # (N, E)
    return e


# Hugging Face's per-layer names -> the encoder layer's PyTorch-style names
LAYER_NAMES = {
    "attention.output.dense.weight": "self_attn.out_proj.weight",
    "attention.output.dense.bias": "self_attn.out_proj.bias",
    "attention.output.LayerNorm.weight": "norm1.weight",
    "attention.output.LayerNorm.bias": "norm1.bias",
    "intermediate.dense.weight": "linear1.weight",
    "intermediate.dense.bias": "linear1.bias",
    "output.dense.weight": "linear2.weight",
    "output.dense.bias": "linear2.bias",
    "output.LayerNorm.weight": "norm2.weight",
    "output.LayerNorm.bias": "norm2.bias",
}
IGNORED_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids")


def hf_to_tinyattn(tensors: dict, num_layers: int, source: str = "model.safetensors") -> dict:
    """Hugging Face BERT weights -> this model's state_dict.

    Per layer i, query/key/value (E, E) stack into ``encoder.layers.i.self_attn.in_proj_weight``
    (3E, E) (rows W_q, W_k, W_v) and their biases into ``in_proj_bias`` (3E,); the rest is a
    renaming (``LAYER_NAMES``). A ``bert.`` prefix is dropped; the pooler and the pre-training
    heads are not used. A missing weight is a ``KeyError`` naming it and ``source``.
    """
    w = {k.removeprefix("bert."): v for k, v in tensors.items()}
    w = {k: v for k, v in w.items() if not k.startswith(IGNORED_PREFIXES)}

    def take(name):
        if name not in w:
            raise KeyError(f"{source} has no weight {name!r} (a BERT with {num_layers} layers needs it)")
        return w.pop(name)

    state = {f"embeddings.{n}.weight": take(f"embeddings.{n}.weight")
             for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")}
    state["embeddings.LayerNorm.weight"] = take("embeddings.LayerNorm.weight")
    state["embeddings.LayerNorm.bias"] = take("embeddings.LayerNorm.bias")
    for i in range(num_layers):
        hf, ours = f"encoder.layer.{i}.", f"encoder.layers.{i}."
        qkv = [f"{hf}attention.self.{p}" for p in ("query", "key", "value")]
        for part in (".weight", ".bias"):
            shapes = [tuple(w[p + part].shape) for p in qkv if p + part in w]
            if len(set(shapes)) > 1:
                raise ValueError(f"{source}: layer {i}'s query, key and value{part} have shapes {shapes}; "
                                 f"they stack into one projection, so they must be equal")
        state[ours + "self_attn.in_proj_weight"] = np.concatenate([take(p + ".weight") for p in qkv])  # (3E, E)
        state[ours + "self_attn.in_proj_bias"] = np.concatenate([take(p + ".bias") for p in qkv])  # (3E,)
        for theirs, mine in LAYER_NAMES.items():
            state[ours + mine] = take(hf + theirs)
    if w:
        raise KeyError(f"{source} has weights a {num_layers}-layer BERT does not use: {sorted(w)[:5]}")
    return state
