"""Grouped-query attention and the KV cache (MHA, GQA, MQA) for token-by-token decoding.

Shazeer, "Fast Transformer Decoding: One Write-Head is All You Need" (2019) for multi-query
attention; Ainslie et al., "GQA: Training Generalized Multi-Query Transformer Models from
Multi-Head Checkpoints" (2023). H query heads share H_kv key/value heads: query head h reads
key/value head h // (H / H_kv), so the cache holds H_kv heads instead of H:

    cache bytes = 2 · layers · batch · T · H_kv · D · bytes per number.

Claims: with H_kv < H it is a different model (fewer parameters), not an approximation of MHA;
what is exact is the cache — decoding token by token with ``KVCache`` equals the full causal
forward to float64 round-off.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..nn import functional as F
from ..nn.modules import Linear, Module
from .alibi import alibi_bias
from .common import check_int
from .registry import Variant, register

__all__ = ["GroupedQueryAttention", "KVCache", "kv_cache_bytes", "POSITIONS"]

POSITIONS = (None, "rope", "alibi")  # the position schemes GroupedQueryAttention applies to its scores


def kv_cache_bytes(num_layers: int, num_kv_heads: int, head_dim: int, seq_len: int,
                   batch: int = 1, bytes_per_element: int = 2) -> int:
    """Bytes of a KV cache: 2 (K and V) · layers · batch · seq_len · kv_heads · head_dim · bytes."""
    sizes = dict(num_layers=num_layers, num_kv_heads=num_kv_heads, head_dim=head_dim, seq_len=seq_len,
                 batch=batch, bytes_per_element=bytes_per_element)
    for name, n in sizes.items():
        check_int("kv_cache_bytes", name, n, 0)
    return 2 * num_layers * batch * seq_len * num_kv_heads * head_dim * bytes_per_element


class KVCache:
    """The keys and values of past positions for one attention layer, for incremental decoding.

    ``append(k, v)`` adds k, v (B, H_kv, T, D) after the stored ones and returns all keys and
    values so far, (B, H_kv, P + T, D) each: the stored ones detached (no gradient flows into
    past steps) followed by the new ones. ``len(cache)`` is P, the number of stored positions;
    ``nbytes`` the bytes of the stored keys and values. Storage grows by doubling, so T calls
    of one token copy O(T) positions in total, not O(T²).
    """

    def __init__(self):
        self._k = self._v = None  # (B, H_kv, capacity, D) buffers
        self._len = 0

    def __len__(self) -> int:
        return self._len

    @property
    def keys(self) -> np.ndarray:
        """The stored keys (B, H_kv, P, D) (a view; empty cache: None)."""
        return None if self._k is None else self._k[:, :, :self._len]

    @property
    def values(self) -> np.ndarray:
        """The stored values (B, H_kv, P, D) (a view; empty cache: None)."""
        return None if self._v is None else self._v[:, :, :self._len]

    @property
    def nbytes(self) -> int:
        return 0 if self._k is None else self.keys.nbytes + self.values.nbytes

    def _reserve(self, k: np.ndarray, v: np.ndarray) -> None:
        """Make room for k's T more positions (first call: allocate)."""
        need = self._len + k.shape[2]
        if self._k is None:
            self._k = np.empty(k.shape[:2] + (need,) + k.shape[3:], k.dtype)  # (B, H_kv, T, D)
            self._v = np.empty(v.shape[:2] + (need,) + v.shape[3:], v.dtype)  # (B, H_kv, T, Dv)
            return
        if (k.shape[:2], k.shape[3], v.shape[3], k.dtype) != (self._k.shape[:2], self._k.shape[3],
                                                               self._v.shape[3], self._k.dtype):
            raise ValueError(f"KVCache holds keys {self.keys.shape} and values {self.values.shape} "
                             f"({self._k.dtype}); cannot append keys {k.shape} and values {v.shape} "
                             f"({k.dtype}): batch, heads, head_dim and dtype must match")
        if need > self._k.shape[2]:
            cap = max(need, 2 * self._k.shape[2])
            for name in ("_k", "_v"):
                old = getattr(self, name)
                new = np.empty(old.shape[:2] + (cap,) + old.shape[3:], old.dtype)  # (B, H_kv, cap, D)
                new[:, :, :self._len] = old[:, :, :self._len]
                setattr(self, name, new)

    def append(self, k, v):
        """Store k, v (B, H_kv, T, D); return (keys, values) of all P + T positions as Tensors.

        The returned tensors are views of the cache's storage; their gradient flows to the new
        k and v only (positions P .. P + T − 1).
        """
        k, v = F.check_tensor(k, "key"), F.check_tensor(v, "value")
        if k.ndim != 4 or v.ndim != 4 or k.shape[:3] != v.shape[:3]:
            raise ValueError(f"KVCache.append: expected key and value (B, H_kv, T, D) with equal "
                             f"B, H_kv, T; got {k.shape} and {v.shape}")
        self._reserve(k.data, v.data)
        start, self._len = self._len, self._len + k.shape[2]
        self._k[:, :, start:self._len] = k.data
        self._v[:, :, start:self._len] = v.data
        new_part = lambda g: (g[:, :, start:],)  # noqa: E731  (only the appended positions)
        keys = Tensor.from_op(self.keys, (k,), new_part, "kv_cache")  # (B, H_kv, P + T, D)
        values = Tensor.from_op(self.values, (v,), new_part, "kv_cache")  # (B, H_kv, P + T, Dv)
        return keys, values

    def __repr__(self) -> str:
        shape = None if self._k is None else self.keys.shape
        return f"KVCache(positions={self._len}, keys={shape}, nbytes={self.nbytes})"


class GroupedQueryAttention(Module):
    """Self-attention with ``num_kv_heads`` key/value heads shared by groups of query heads.

    x (B, T, E) -> (B, T, E). num_kv_heads == num_heads is multi-head attention (MHA),
    num_kv_heads == 1 multi-query attention (MQA), anything dividing num_heads in between is
    grouped-query attention (Ainslie et al. 2023). With head_dim = E / num_heads:
    Q = x W_qᵀ + b_q (B, T, H·D), K = x W_kᵀ + b_k and V = x W_vᵀ + b_v (B, T, H_kv·D);
    query head h uses key/value head h // (H / H_kv); out = concat(heads) W_oᵀ + b_o.
    Parameters: q_proj (E -> E), k_proj and v_proj (E -> H_kv·D), out_proj (E -> E).
    ``positions``: None (no position in the scores), "rope" (queries and keys rotated, D even) or
    "alibi" (bias −m_h·(i − j) on head h). Either uses the positions of the keys the cache
    returns, 0 .. S−1, and S − T .. S − 1 for the T queries (see ``efficient.sinks``).
    """

    def __init__(self, embed_dim: int, num_heads: int, num_kv_heads: int, bias: bool = True, dtype=None,
                 positions: str | None = None):
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"GroupedQueryAttention: positions {positions!r} is not one of {POSITIONS}")
        for name, n in (("embed_dim", embed_dim), ("num_heads", num_heads), ("num_kv_heads", num_kv_heads)):
            check_int("GroupedQueryAttention", name, n, 1)
        if embed_dim % num_heads:
            raise ValueError(f"GroupedQueryAttention: embed_dim {embed_dim} is not divisible by "
                             f"num_heads {num_heads}")
        if num_heads % num_kv_heads:
            raise ValueError(f"GroupedQueryAttention: num_heads {num_heads} is not a multiple of "
                             f"num_kv_heads {num_kv_heads}; each key/value head serves a group of "
                             f"equal size")
        self.embed_dim, self.num_heads, self.num_kv_heads = embed_dim, num_heads, num_kv_heads
        self.head_dim, self.positions = embed_dim // num_heads, positions
        if positions == "rope" and self.head_dim % 2:
            raise ValueError(f"GroupedQueryAttention: positions='rope' rotates pairs, but head_dim "
                             f"{self.head_dim} is odd")
        kv_dim = num_kv_heads * self.head_dim
        self.q_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        self.k_proj = Linear(embed_dim, kv_dim, bias=bias, dtype=dtype)
        self.v_proj = Linear(embed_dim, kv_dim, bias=bias, dtype=dtype)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"num_kv_heads={self.num_kv_heads}" + (f", positions={self.positions!r}" if self.positions else ""))

    def forward(self, x, is_causal: bool = False, cache: KVCache = None) -> Tensor:
        """x (B, T, E) -> (B, T, E); with a cache, x holds the T positions after the P cached ones.

        The new keys/values are appended to ``cache`` and the queries attend all P + T positions.
        Causal with a cache is aligned bottom-right: new query t (position P + t) sees keys
        j ≤ P + t. Without a cache this is SDPA's top-left causal mask (P = 0).
        """
        x = F.check_tensor(x, "x")
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"GroupedQueryAttention: x has shape {x.shape}; expected "
                             f"(B, T, {self.embed_dim})")
        B, T, E = x.shape
        H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        q = self.q_proj(x).reshape(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).reshape(B, T, Hkv, D).transpose(1, 2)  # (B, H_kv, T, D)
        v = self.v_proj(x).reshape(B, T, Hkv, D).transpose(1, 2)  # (B, H_kv, T, D)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H_kv, P + T, D)
        past = k.shape[2] - T
        mask = None
        if is_causal and past > 0:
            mask = np.tril(np.ones((T, past + T), dtype=bool), k=past)  # (T, P + T), bottom-right
        if self.positions == "rope":
            q = F.apply_rotary_pos_emb(q, np.arange(past, past + T))  # (B, H, T, D)
            k = F.apply_rotary_pos_emb(k, np.arange(past + T))  # (B, H_kv, P + T, D)
        elif self.positions == "alibi":
            mask = alibi_bias(H, T, past + T, is_causal=is_causal, dtype=q.dtype)  # (H, T, P + T), −inf above
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
                                               enable_gqa=True)  # (B, H, T, D)
        return self.out_proj(heads.transpose(1, 2).reshape(B, T, E))  # (B, T, E)


register(Variant(
    name="gqa", kind="decoding", claim="exact cache",
    paper="Shazeer 2019 (MQA); Ainslie et al. 2023 (GQA)",
    time="O(T·H·D) per decoded token", memory="2·layers·T·H_kv·D numbers of cache",
    summary="H query heads share H_kv key/value heads; the KV cache makes decoding O(T) per token"))
