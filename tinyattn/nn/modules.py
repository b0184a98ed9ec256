"""Modules with PyTorch's names, constructor signatures, defaults, initialization and
state_dict keys, so that a ``torch.nn`` state_dict (as NumPy arrays) loads unchanged."""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import os
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from ..autograd import DEFAULT_DTYPE, Tensor
from . import functional as F
from . import init

__all__ = [
    "Parameter", "Module", "Linear", "LayerNorm", "Embedding", "Dropout", "ReLU", "GELU",
    "Identity", "Sequential", "ModuleList", "MultiheadAttention", "TransformerEncoderLayer",
    "TransformerEncoder", "TransformerDecoderLayer", "TransformerDecoder", "Transformer",
    "CrossEntropyLoss", "PositionalEncoding", "LearnedPositionalEncoding",
    "record_attention", "AttentionRecord", "causal_mask", "sinusoidal_table", "merge_masks",
]


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable (requires_grad=True by default)."""

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


def _empty(*shape, dtype=None) -> Parameter:
    return Parameter(np.zeros(shape, dtype or DEFAULT_DTYPE))


# ----------------------------------------------------------------------------------------------
# Module
# ----------------------------------------------------------------------------------------------

class Module:
    """Base class: registers Parameters, sub-Modules and buffers assigned as attributes."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"call Module.__init__() before assigning {name!r}")
        for registry in (self._parameters, self._modules, self._buffers):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_parameter(self, name: str, param) -> None:
        """Register ``param`` (a Parameter, or None for an absent one such as a disabled bias)."""
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """A non-trainable tensor of the module (in state_dict unless ``persistent=False``)."""
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)
        object.__setattr__(self, name, tensor)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- traversal -------------------------------------------------------------------------
    def named_modules(self, prefix: str = ""):
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{n}" if name else n, m) for n, m in module._modules.items() if m is not None]
            stack.extend(reversed(children))

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return ((n, m) for n, m in self._modules.items() if m is not None)

    def children(self):
        return (m for _, m in self.named_children())

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_name, module in modules:
            for name, p in module._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self, recurse: bool = True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self):
        for mod_name, module in self.named_modules():
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{mod_name}.{name}" if mod_name else name), b

    # -- modes and gradients ---------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def requires_grad_(self, flag: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(flag)
        return self

    def apply(self, fn) -> "Module":
        for m in list(self.modules())[::-1]:
            fn(m)
        return self

    def to(self, dtype) -> "Module":
        """Cast every floating parameter and buffer to ``dtype`` in place."""
        for t in list(self.parameters()) + [b for _, b in self.named_buffers()]:
            if np.issubdtype(t.dtype, np.floating):
                t.data = t.data.astype(dtype)
                t.grad = None if t.grad is None else t.grad.astype(dtype)
        return self

    def double(self) -> "Module":
        return self.to(np.float64)

    def float(self) -> "Module":
        return self.to(np.float32)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- state -----------------------------------------------------------------------------
    def _state_entries(self):
        for mod_name, module in self.named_modules():
            pre = f"{mod_name}." if mod_name else ""
            for name, p in module._parameters.items():
                if p is not None:
                    yield pre + name, p
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent:
                    yield pre + name, b

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """name -> a copy of the array, in PyTorch's key order (own params, buffers, children)."""
        return OrderedDict((name, t.data.copy()) for name, t in self._state_entries())

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy arrays (or tensors, or anything with ``.numpy()``) into the parameters.

        Values are cast to each parameter's dtype. With ``strict``, missing, unexpected or
        mis-shaped keys raise a ``KeyError``/``ValueError`` listing them by name; a value that is
        not a real numeric array is a ``TypeError``. Every entry is checked before any is copied,
        so a failed load leaves the module unchanged. Returns ``(missing_keys, unexpected_keys)``.
        """
        if not isinstance(state_dict, Mapping):
            is_path = isinstance(state_dict, (str, os.PathLike))
            hint = "; to read a file, pass ta.load(path)" if is_path else ""
            raise TypeError(f"load_state_dict expects a dict of name -> array (such as "
                            f"module.state_dict()), got {type(state_dict).__name__}{hint}")
        own = OrderedDict(self._state_entries())
        arrays = {k: _to_numpy(k, v) for k, v in state_dict.items()}  # every entry checked first
        missing = [k for k in own if k not in arrays]
        unexpected = [k for k in arrays if k not in own]
        mismatched = [f"{k}: checkpoint {arrays[k].shape} vs model {own[k].shape}"
                      for k in own if k in arrays and arrays[k].shape != own[k].shape]
        if mismatched:
            raise ValueError("load_state_dict: shape mismatch for " + "; ".join(mismatched))
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for k, t in own.items():
            if k in arrays:
                t.data[...] = arrays[k].astype(t.dtype, copy=False)
        return missing, unexpected

    # -- repr ------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, module in self._modules.items():
            body = repr(module).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        head = f"{type(self).__name__}(" + (f"{extra}" if extra else "")
        return head + "\n" + "\n".join(lines) + "\n)"


def _check_positive(cls, minimum: int = 1, **sizes) -> None:
    """A ValueError naming the first size that is not an int >= minimum (or a TypeError)."""
    what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    for name, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"{cls.__name__}: {name} must be {what}, got {n!r}")
        if n < minimum:
            raise ValueError(f"{cls.__name__}: {name} must be {what}, got {n}")


def _to_numpy(name: str, value) -> np.ndarray:
    """``value`` as a real numeric ndarray, or a TypeError naming the state_dict entry."""
    if isinstance(value, Tensor):
        arr = value.data
    elif hasattr(value, "detach"):  # a torch.Tensor
        arr = value.detach().cpu().numpy()
    else:
        arr = np.asarray(value)
    if arr.dtype.kind == "c":
        raise TypeError(f"load_state_dict: {name!r} is complex ({arr.dtype}); parameters are real")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"load_state_dict: {name!r} is not a numeric array (dtype {arr.dtype})")
    return arr


# ----------------------------------------------------------------------------------------------
# basic layers
# ----------------------------------------------------------------------------------------------

class Linear(Module):
    """y = x Wᵀ + b. x (..., in_features) -> (..., out_features).

    weight (out_features, in_features) and bias (out_features,) ~ U(−1/√in, 1/√in).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=None):
        super().__init__()
        _check_positive(Linear, 0, in_features=in_features, out_features=out_features)  # 0: as PyTorch
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty(out_features, in_features, dtype=dtype)
        self.register_parameter("bias", _empty(out_features, dtype=dtype) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class LayerNorm(Module):
    """Normalize over the last dims given by ``normalized_shape``; weight ones, bias zeros."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, dtype=None):
        super().__init__()
        shape = F.check_normalized_shape(normalized_shape, "LayerNorm")
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        weight = Parameter(np.ones(shape, dtype or DEFAULT_DTYPE)) if elementwise_affine else None
        self.register_parameter("weight", weight)
        bias_p = Parameter(np.zeros(shape, dtype or DEFAULT_DTYPE)) if elementwise_affine and bias else None
        self.register_parameter("bias", bias_p)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class Embedding(Module):
    """A lookup table: integer indices (...) -> rows of weight (..., embedding_dim); N(0, 1) init."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, dtype=None):
        super().__init__()
        _check_positive(Embedding, 0, num_embeddings=num_embeddings, embedding_dim=embedding_dim)
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(f"padding_idx {padding_idx} is out of range for {num_embeddings} embeddings")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = None if padding_idx is None else padding_idx % num_embeddings
        self.weight = _empty(num_embeddings, embedding_dim, dtype=dtype)
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class Dropout(Module):
    """Inverted dropout with probability ``p``, active only in training mode."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        F.check_probability(p)
        self.p = p

    def forward(self, input):
        return F.dropout(input, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ReLU(Module):
    def forward(self, input):
        return F.relu(input)


class GELU(Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Identity(Module):
    def forward(self, input):
        return input


class _Container(Module):
    """Indexing, length and iteration over the registered sub-modules."""

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(_Container):
    """Modules applied in order; keys "0", "1", ... (or the names of an OrderedDict)."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                setattr(self, name, m)
        else:
            for i, m in enumerate(modules):
                setattr(self, str(i), m)

    def forward(self, input):
        for m in self._modules.values():
            input = m(input)
        return input


class ModuleList(_Container):
    """A list of modules registered under the keys "0", "1", ..."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> "ModuleList":
        setattr(self, str(len(self._modules)), module)
        return self


# ----------------------------------------------------------------------------------------------
# recording attention weights
# ----------------------------------------------------------------------------------------------

class AttentionRecord:
    """What ``record_attention`` collected: one (N, H, L, S) array per attention call, in order.

    ``weights``: list of ndarrays; ``names``: the qualified module name of each call (e.g.
    ``"layers.0.self_attn"``) when a model was given, else ``"attention{i}"``.
    """

    def __init__(self, model=None):
        self.weights, self.names = [], []
        self._names = None if model is None else {
            id(m): n for n, m in model.named_modules() if isinstance(m, MultiheadAttention)
        }

    def wants(self, module) -> bool:
        return self._names is None or id(module) in self._names

    def add(self, module, weights: np.ndarray) -> None:
        name = f"attention{len(self.weights)}" if self._names is None else self._names[id(module)]
        self.names.append(name)
        self.weights.append(weights)

    def stack(self) -> np.ndarray:
        """All recorded weights as one (calls, N, H, L, S) array (they must share a shape)."""
        return np.stack(self.weights)


_RECORDERS: list = []


@contextlib.contextmanager
def record_attention(model=None):
    """Record the per-head attention weights of every ``MultiheadAttention`` call inside.

    ``TransformerEncoderLayer`` calls attention with ``need_weights=False`` (as PyTorch does),
    so its weights are otherwise out of reach. Usage::

        with ta.nn.record_attention(model) as rec:
            model(x)
        rec.weights[i]   # (N, H, L, S) of the i-th attention call, batch-first, after dropout
        rec.names[i]     # e.g. "layers.0.self_attn"

    With ``model`` given, only attention modules inside it are recorded. The weights are
    copies, detached from the graph; recording does not change any output or gradient.
    """
    record = AttentionRecord(model)
    _RECORDERS.append(record)
    try:
        yield record
    finally:
        _RECORDERS.remove(record)


# ----------------------------------------------------------------------------------------------
# multi-head attention
# ----------------------------------------------------------------------------------------------

def _mask_array(mask, name: str) -> np.ndarray:
    arr = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
    if arr.dtype != np.bool_ and not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must be bool (True = may NOT attend) or float (added to the "
                        f"scores), got dtype {arr.dtype}")
    return arr


def merge_masks(attn_mask, key_padding_mask, N: int, H: int, L: int, S: int, dtype):
    """PyTorch's MHA masks -> one SDPA mask (bool True = may attend, or float additive).

    attn_mask (L, S) or (N·H, L, S), key_padding_mask (N, S); bool True means "may NOT attend".
    Returns None or a (1 or N, 1 or H, L, S) array.
    """
    parts = []
    if attn_mask is not None:
        m = _mask_array(attn_mask, "attn_mask")
        if m.shape == (L, S):
            m = m.reshape(1, 1, L, S)
        elif m.shape == (N * H, L, S):
            m = m.reshape(N, H, L, S)  # batch-major: index n·H + h
        else:
            raise ValueError(f"attn_mask has shape {m.shape}; expected (L, S) = ({L}, {S}) or "
                             f"(N·num_heads, L, S) = ({N * H}, {L}, {S})")
        parts.append(m)
    if key_padding_mask is not None:
        m = _mask_array(key_padding_mask, "key_padding_mask")
        if m.shape != (N, S):
            raise ValueError(f"key_padding_mask has shape {m.shape}; expected (N, S) = ({N}, {S})")
        parts.append(m.reshape(N, 1, 1, S))
    if not parts:
        return None
    if all(p.dtype == np.bool_ for p in parts):
        allowed = ~parts[0]
        for p in parts[1:]:
            allowed = allowed & ~p
        return allowed
    total = None
    for p in parts:
        add = np.where(p, -np.inf, 0.0).astype(dtype) if p.dtype == np.bool_ else p.astype(dtype)
        total = add if total is None else total + add
    return total


class MultiheadAttention(Module):
    """Multi-head attention as ``torch.nn.MultiheadAttention``.

    query (L, N, E) [or (N, L, E) with batch_first, or (L, E) unbatched], key (S, N, kdim),
    value (S, N, vdim) -> (output like query, weights (N, L, S) averaged over heads, or
    (N, H, L, S) with ``average_attn_weights=False``, or None with ``need_weights=False``).

    Per head h: head_h = softmax(Q_h K_hᵀ / √head_dim + mask) V_h with Q = query W_qᵀ + b_q etc.
    (row convention), and output = concat(head_1 … head_H) W_oᵀ + b_o.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim=None, vdim=None,
                 batch_first: bool = False, dtype=None):
        super().__init__()
        _check_positive(MultiheadAttention, embed_dim=embed_dim, num_heads=num_heads)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        for flag, name in ((add_bias_kv, "add_bias_kv"), (add_zero_attn, "add_zero_attn")):
            if flag:
                raise ValueError(f"{name}=True is not supported by tinyattn (it is not needed "
                                 f"for the tutorials); construct with {name}=False")
        F.check_probability(dropout)
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.head_dim = embed_dim // num_heads
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.batch_first = batch_first
        E = embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = _empty(3 * E, E, dtype=dtype)  # rows: W_q, W_k, W_v
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = _empty(E, E, dtype=dtype)
            self.k_proj_weight = _empty(E, self.kdim, dtype=dtype)
            self.v_proj_weight = _empty(E, self.vdim, dtype=dtype)
            self.register_parameter("in_proj_weight", None)
        self.register_parameter("in_proj_bias", _empty(3 * E, dtype=dtype) if bias else None)
        self.out_proj = Linear(E, E, bias=bias, dtype=dtype)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"

    def projection_weights(self):
        """(W_q, W_k, W_v) as tensors in the graph: slices of in_proj_weight when packed."""
        if self._qkv_same_embed_dim:
            E = self.embed_dim
            w = self.in_proj_weight
            return w[:E], w[E:2 * E], w[2 * E:]
        return self.q_proj_weight, self.k_proj_weight, self.v_proj_weight

    def projection_biases(self):
        if self.in_proj_bias is None:
            return None, None, None
        E, b = self.embed_dim, self.in_proj_bias
        return b[:E], b[E:2 * E], b[2 * E:]

    def _check_inputs(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        if query.ndim not in (2, 3):
            raise ValueError(f"query must be 2-D (L, E) or 3-D, got shape {query.shape}")
        for name, t, dim in (("query", query, self.embed_dim), ("key", key, self.kdim),
                             ("value", value, self.vdim)):
            if t.ndim != query.ndim:
                raise ValueError(f"{name} has shape {t.shape} but query has shape {query.shape}: "
                                 f"all must be batched (3-D) or all unbatched (2-D)")
            if t.shape[-1] != dim:
                raise ValueError(f"{name} has shape {t.shape} but this module expects {name} "
                                 f"dim {dim}; expected (..., {dim})")
        if key.shape[:-1] != value.shape[:-1]:
            raise ValueError(f"key has shape {key.shape} and value has shape {value.shape}: their "
                             f"sequence lengths and batch sizes must match")

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True,
                attn_mask=None, average_attn_weights: bool = True, is_causal: bool = False):
        query, key, value = (F.check_float(t, name, "MultiheadAttention")
                             for t, name in ((query, "query"), (key, "key"), (value, "value")))
        self._check_inputs(query, key, value)
        if is_causal and attn_mask is None:
            raise ValueError("is_causal=True is a hint that attn_mask is the causal mask (as in "
                             "PyTorch); pass the mask too, e.g. ta.nn.causal_mask(L)")
        unbatched = query.ndim == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = _mask_array(key_padding_mask, "key_padding_mask")[None]
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        # now sequence-first: query (L, N, E), key (S, N, kdim), value (S, N, vdim)
        L, N, E = query.shape
        S, H, D = key.shape[0], self.num_heads, self.head_dim
        if key.shape[1] != N:
            raise ValueError(f"query has batch size {N} but key has batch size {key.shape[1]}")
        mask = merge_masks(attn_mask, key_padding_mask, N, H, L, S, query.dtype)

        W_q, W_k, W_v = self.projection_weights()
        b_q, b_k, b_v = self.projection_biases()
        q = F.linear(query.transpose(0, 1), W_q, b_q)  # (N, L, E)
        k = F.linear(key.transpose(0, 1), W_k, b_k)  # (N, S, E)
        v = F.linear(value.transpose(0, 1), W_v, b_v)  # (N, S, E)
        q = q.reshape(N, L, H, D).transpose(1, 2)  # (N, H, L, D)
        k = k.reshape(N, S, H, D).transpose(1, 2)  # (N, H, S, D)
        v = v.reshape(N, S, H, D).transpose(1, 2)  # (N, H, S, D)
        p = self.dropout if self.training else 0.0
        recorders = [r for r in _RECORDERS if r.wants(self)]
        if need_weights:  # step by step: the weights (N, H, L, S) are returned, in the graph
            heads, weights = F.attention_by_primitives(q, k, v, mask, dropout_p=p)  # (N, H, L, D)
        elif recorders:  # fused, and the weights are copied out for the recorder
            heads, weights = F.scaled_dot_product_attention(q, k, v, mask, p, return_weights=True)
        else:  # fused: the weights are never materialized
            heads, weights = F.scaled_dot_product_attention(q, k, v, mask, p), None  # (N, H, L, D)
        for r in recorders:
            r.add(self, weights.data.copy())
        out = heads.transpose(1, 2).reshape(N, L, E)  # (N, L, E): heads concatenated
        out = self.out_proj(out)  # (N, L, E)
        if unbatched:
            out = out.squeeze(0)  # (L, E)
        elif not self.batch_first:
            out = out.transpose(0, 1)  # (L, N, E)
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(dim=1)  # (N, L, S)
        return out, weights.squeeze(0) if unbatched else weights


def causal_mask(L: int, S=None) -> np.ndarray:
    """The (L, S) bool mask in MultiheadAttention polarity: True above the diagonal = may NOT attend.

    Equal to ``torch.nn.Transformer.generate_square_subsequent_mask(L) == -inf`` for S = L.
    """
    S = L if S is None else S
    for name, n in (("L", L), ("S", S)):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"causal_mask: {name} must be an int >= 0, got {n!r}")
    return np.triu(np.ones((L, S), dtype=bool), k=1)


# ----------------------------------------------------------------------------------------------
# the Transformer encoder
# ----------------------------------------------------------------------------------------------

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _activation(activation):
    """'relu' / 'gelu' / a callable -> the callable (as the Transformer layers accept it)."""
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation should be 'relu' or 'gelu' (or a callable), not {activation!r}")
        return _ACTIVATIONS[activation]
    if not callable(activation):
        raise ValueError(f"activation should be 'relu', 'gelu' or a callable, got {activation!r}")
    return activation


def _feed_forward(layer, x):
    """FF(x) = linear2(dropout(activation(linear1(x)))), shared by the encoder and decoder layers."""
    return layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))  # (..., E) via (..., F)


class TransformerEncoderLayer(Module):
    """Self-attention and a feed-forward block, each with a residual connection and LayerNorm.

    src (S, N, E) [(N, S, E) with batch_first, or (S, E) unbatched] -> same shape.
    post-norm (default): x = norm1(x + SA(x)); x = norm2(x + FF(x)).
    pre-norm (norm_first=True): x = x + SA(norm1(x)); x = x + FF(norm2(x)).
    FF(x) = linear2(dropout(activation(linear1(x)))).
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, dtype=None):
        super().__init__()
        _check_positive(TransformerEncoderLayer, d_model=d_model, nhead=nhead)
        _check_positive(TransformerEncoderLayer, 0, dim_feedforward=dim_feedforward)  # 0: as PyTorch
        activation = _activation(activation)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = activation

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal: bool = False):
        x = F.check_tensor(src, "src")
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(_feed_forward(self, x))


class TransformerEncoder(Module):
    """``num_layers`` deep copies of ``encoder_layer`` applied in order, then ``norm`` if given.

    The copies start with identical weights, exactly as in PyTorch (a known surprise).
    ``enable_nested_tensor`` and ``mask_check`` (PyTorch's fast-path switches) are accepted for
    compatibility and ignored; ``is_causal`` is passed on to the layers as a hint, as in PyTorch.
    """

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm=None,
                 enable_nested_tensor: bool = True, mask_check: bool = True):
        super().__init__()
        _check_positive(TransformerEncoder, num_layers=num_layers)
        self.layers = ModuleList(copy.deepcopy(encoder_layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        x = F.check_tensor(src, "src")
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                      is_causal=bool(is_causal))
        return self.norm(x) if self.norm is not None else x


# ----------------------------------------------------------------------------------------------
# the Transformer decoder and the full encoder-decoder
# ----------------------------------------------------------------------------------------------

class TransformerDecoderLayer(Module):
    """Masked self-attention, cross-attention to the encoder's memory, and a feed-forward block.

    tgt (T, N, E) [(N, T, E) with batch_first, or (T, E) unbatched] and memory (S, N, E)
    [(N, S, E), or (S, E)] -> same shape as tgt.
    post-norm (default): x = norm1(x + SA(x)); x = norm2(x + CA(x, memory)); x = norm3(x + FF(x)).
    pre-norm (norm_first=True): x = x + SA(norm1(x)); x = x + CA(norm2(x), memory);
    x = x + FF(norm3(x)). CA takes its queries from x and its keys and values from memory.
    Masks as in ``MultiheadAttention``: bool True = may NOT attend, float = added to the scores;
    tgt_mask (T, T) or (N·nhead, T, T), memory_mask (T, S) or (N·nhead, T, S), key padding
    masks (N, T) and (N, S).
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, dtype=None):
        super().__init__()
        _check_positive(TransformerDecoderLayer, d_model=d_model, nhead=nhead)
        _check_positive(TransformerDecoderLayer, 0, dim_feedforward=dim_feedforward)  # 0: as PyTorch
        activation = _activation(activation)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, dtype=dtype)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                 batch_first=batch_first, dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        self.activation = activation

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal: bool = False,
                memory_is_causal: bool = False):
        x, memory = F.check_tensor(tgt, "tgt"), F.check_tensor(memory, "memory")
        E = self.self_attn.embed_dim
        if memory.shape[-1] != E or memory.ndim != x.ndim:
            raise ValueError(f"memory has shape {memory.shape} but tgt has shape {x.shape} and "
                             f"d_model is {E}; expected memory of the same rank as tgt, (..., {E})")
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask, memory_key_padding_mask,
                                    memory_is_causal)
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
            x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask,
                                               memory_is_causal))
            x = self.norm3(x + self._ff_block(x))
        return x

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)

    def _mha_block(self, x, memory, attn_mask, key_padding_mask, is_causal):
        x = self.multihead_attn(x, memory, memory, attn_mask=attn_mask,
                                key_padding_mask=key_padding_mask, need_weights=False,
                                is_causal=is_causal)[0]
        return self.dropout2(x)

    def _ff_block(self, x):
        return self.dropout3(_feed_forward(self, x))


class TransformerDecoder(Module):
    """``num_layers`` deep copies of ``decoder_layer`` applied in order, then ``norm`` if given.

    tgt (T, N, E) and memory (S, N, E) (batch-first or unbatched as the layer says) -> like tgt.
    Every layer attends to the same ``memory``. ``tgt_is_causal`` is passed on as a hint (the
    mask itself does the masking), as in the encoder. The copies start identical.
    """

    def __init__(self, decoder_layer: TransformerDecoderLayer, num_layers: int, norm=None):
        super().__init__()
        _check_positive(TransformerDecoder, num_layers=num_layers)
        self.layers = ModuleList(copy.deepcopy(decoder_layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal: bool = False):
        x = F.check_tensor(tgt, "tgt")
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=bool(tgt_is_causal), memory_is_causal=memory_is_causal)
        return self.norm(x) if self.norm is not None else x


class Transformer(Module):
    """The encoder-decoder of Vaswani et al. (2017), as ``torch.nn.Transformer``.

    src (S, N, E), tgt (T, N, E) [(N, S, E), (N, T, E) with batch_first; (S, E), (T, E)
    unbatched] -> (T, N, E) like tgt. memory = encoder(src); output = decoder(tgt, memory).
    Both stacks end with a LayerNorm (``encoder.norm``, ``decoder.norm``), and every weight
    matrix is re-initialized with ``xavier_uniform_``, as in PyTorch. Masks as in
    ``TransformerDecoderLayer``; src_mask (S, S), tgt_mask (T, T), memory_mask (T, S).
    """

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation="relu", custom_encoder=None, custom_decoder=None,
                 layer_norm_eps: float = 1e-5, batch_first: bool = False, norm_first: bool = False,
                 bias: bool = True, dtype=None):
        super().__init__()
        layer_args = (d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                      batch_first, norm_first, bias, dtype)
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            self.encoder = TransformerEncoder(
                TransformerEncoderLayer(*layer_args), num_encoder_layers,
                LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype))
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            self.decoder = TransformerDecoder(
                TransformerDecoderLayer(*layer_args), num_decoder_layers,
                LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype))
        self._reset_parameters()
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.ndim > 1:
                init.xavier_uniform_(p)

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal: bool = False):
        src, tgt = F.check_tensor(src, "src"), F.check_tensor(tgt, "tgt")
        batch_axis = 0 if self.batch_first else 1
        if src.ndim == 3 and (tgt.ndim != 3 or src.shape[batch_axis] != tgt.shape[batch_axis]):
            raise ValueError(f"src has shape {src.shape} and tgt has shape {tgt.shape}: their batch "
                             f"sizes (axis {batch_axis}, batch_first={self.batch_first}) must be equal")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise ValueError(f"src has shape {src.shape} and tgt has shape {tgt.shape}; both must "
                             f"end in d_model = {self.d_model}")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask,
                              is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask,
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz: int, device=None, dtype=None) -> np.ndarray:
        """The (sz, sz) float causal mask: −inf above the diagonal (may not attend), 0 elsewhere.

        ``device`` is accepted for PyTorch's signature; tinyattn runs on the CPU only.
        """
        if device not in (None, "cpu"):
            raise ValueError(f"tinyattn runs on the CPU; got device={device!r}")
        return np.triu(np.full((sz, sz), -np.inf, dtype or DEFAULT_DTYPE), k=1)


# ----------------------------------------------------------------------------------------------
# positional encodings
# ----------------------------------------------------------------------------------------------

def sinusoidal_table(max_len: int, d_model: int, dtype=None) -> np.ndarray:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d)); (max_len, d)."""
    pos = np.arange(max_len, dtype=np.float64)[:, None]  # (max_len, 1)
    freq = np.exp(np.arange(0, d_model, 2, dtype=np.float64) * (-math.log(10000.0) / d_model))
    angles = pos * freq  # (max_len, ceil(d/2))
    pe = np.zeros((max_len, d_model))
    pe[:, 0::2] = np.sin(angles)
    pe[:, 1::2] = np.cos(angles[:, : d_model // 2])
    return pe.astype(dtype or DEFAULT_DTYPE)


def _positions(x: Tensor, d_model: int, max_len: int, batch_first: bool) -> tuple:
    """(axis of the positions in x, their number T), after checking x's width and length."""
    axis = 1 if (batch_first and x.ndim == 3) else 0
    T = x.shape[axis]
    if x.shape[-1] != d_model or T > max_len:
        raise ValueError(f"input has shape {x.shape}; expected d_model {d_model} and at "
                         f"most max_len {max_len} positions")
    return axis, T


class PositionalEncoding(Module):
    """Add the fixed sinusoidal encoding of Vaswani et al. (2017), then dropout.

    x (N, T, E) with batch_first=True (default here), (T, N, E) otherwise, or (T, E) -> same.
    The table ``pe`` (max_len, d_model) is a float64 array, cast to the input's dtype when
    added; it has no parameters, so the state_dict is empty.
    """

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0,
                 batch_first: bool = True):
        super().__init__()
        _check_positive(PositionalEncoding, d_model=d_model)
        _check_positive(PositionalEncoding, 0, max_len=max_len)
        self.d_model, self.max_len, self.batch_first = d_model, max_len, batch_first
        self.dropout = Dropout(dropout)
        self.pe = sinusoidal_table(max_len, d_model, np.float64)  # (max_len, d_model)

    def forward(self, x):
        x = F.check_tensor(x)
        axis, T = _positions(x, self.d_model, self.max_len, self.batch_first)
        pe = self.pe[:T]  # (T, E)
        pe = pe[:, None, :] if axis == 0 and x.ndim == 3 else pe
        return self.dropout(x + pe.astype(x.dtype, copy=False))


class LearnedPositionalEncoding(Module):
    """Add a trained vector per position (an ``Embedding(max_len, d_model)``), then dropout."""

    def __init__(self, d_model: int, max_len: int = 512, dropout: float = 0.0,
                 batch_first: bool = True, dtype=None):
        super().__init__()
        self.d_model, self.max_len, self.batch_first = d_model, max_len, batch_first
        self.embedding = Embedding(max_len, d_model, dtype=dtype)
        self.dropout = Dropout(dropout)

    def forward(self, x):
        x = F.check_tensor(x)
        axis, T = _positions(x, self.d_model, self.max_len, self.batch_first)
        pe = self.embedding(np.arange(T))  # (T, E)
        if axis == 0 and x.ndim == 3:
            pe = pe.unsqueeze(1)  # (T, 1, E)
        return self.dropout(x + pe)


# ----------------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------------

class CrossEntropyLoss(Module):
    """``F.cross_entropy`` as a module, as ``torch.nn.CrossEntropyLoss``.

    input (N, C) or (N, C, d1, ...) logits, target (N,) or (N, d1, ...) class indices -> a scalar
    (or per-element losses with ``reduction="none"``). Targets equal to ``ignore_index`` (e.g.
    padding) add nothing to the loss nor to the mean's denominator. ``weight`` (C,) is a buffer.
    With label smoothing ε the target distribution is (1 − ε)·onehot + ε/C.
    """

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        self.register_buffer("weight", None if weight is None else F.check_tensor(weight, "weight"))
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return (f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
                f"label_smoothing={self.label_smoothing}")
