"""Multi-head latent attention (MLA): cache one small latent per token, not H keys and values.

DeepSeek-AI, "DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language
Model" (2024), section 2.1. Every token x_j (E) is compressed to a latent c_j = W_dkv x_j
(d_c ≪ H·D); the keys and values of all H heads are up-projections of it:

    k_j,h = W_uk,h c_j (D),   v_j,h = W_uv,h c_j (D),   q_i,h = W_q,h x_i (D).

RoPE cannot ride on k = W_uk c (a rotation between W_uk and c would block the trick below), so
position goes into a small *decoupled* part of dimension d_r: a rope query per head
q^R_i,h = RoPE_i(W_qr,h x_i) and ONE rope key shared by all heads k^R_j = RoPE_j(W_kr x_j).
Head h scores

    A_ij,h = (q_i,hᵀ k_j,h + q^R_i,hᵀ k^R_j) / √(D + d_r),   out_i = W_o concat_h(Σ_j P_ij,h v_j,h).

Training (no cache) computes K and V from the latent, exactly as written. Decoding caches only
c_j and k^R_j — d_c + d_r numbers per token and layer, against 2·H·D for MHA — and ABSORBS the
up-projections, so K and V are never rebuilt:

    q_i,hᵀ W_uk,h c_j = (W_uk,hᵀ q_i,h)ᵀ c_j            (a query in latent space, d_c)
    W_o,h W_uv,h Σ_j P_ij,h c_j                          (values stay latent until the output)

i.e. absorbed MLA is multi-query attention whose one key head is [c_j; k^R_j] (d_c + d_r) and
whose one value head is c_j (d_c). Here W_uk,hᵀ and W_o,h W_uv,h are formed from the weights at
every call (a deployment would fold them once); they are differentiable either way.

Claim: exact cache — decoding with ``LatentCache``, token by token or in chunks, equals the full
causal forward to float64 round-off. MLA itself is a different model from MHA, not an
approximation of it.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Tensor, cat
from ..nn import functional as F
from ..nn.modules import Linear, Module
from .common import check_int
from .gqa import KVCache
from .registry import Variant, register

__all__ = ["MultiHeadLatentAttention", "LatentCache", "mla_cache_bytes"]


def mla_cache_bytes(num_layers: int, latent_dim: int, rope_dim: int, seq_len: int, batch: int = 1,
                    bytes_per_element: int = 2) -> int:
    """Bytes of an MLA cache: layers · batch · seq_len · (d_c + d_r) · bytes (no factor 2: one latent)."""
    sizes = dict(num_layers=num_layers, latent_dim=latent_dim, rope_dim=rope_dim, seq_len=seq_len,
                 batch=batch, bytes_per_element=bytes_per_element)
    for name, n in sizes.items():
        check_int("mla_cache_bytes", name, n, 0)
    return num_layers * batch * seq_len * (latent_dim + rope_dim) * bytes_per_element


class LatentCache(KVCache):
    """The MLA cache of one layer: a ``KVCache`` whose "keys" are the latents c (B, 1, P, d_c) and
    whose "values" are the rotated rope keys k^R (B, 1, P, d_r).

    ``append(c, k_rope)`` stores them after the P cached positions and returns all of them, as
    ``KVCache.append`` does; ``nbytes`` = P · (d_c + d_r) · B · bytes per number.
    """

    @property
    def latents(self) -> np.ndarray:
        """The stored latents c (B, 1, P, d_c)."""
        return self.keys

    @property
    def rope_keys(self) -> np.ndarray:
        """The stored rotated rope keys k^R (B, 1, P, d_r)."""
        return self.values


class MultiHeadLatentAttention(Module):
    """Self-attention whose keys and values are up-projections of a d_c latent, plus decoupled RoPE.

    x (B, T, E) -> (B, T, E). Parameters (no biases, as in the paper; weights are (out, in)):
    q_proj W_q (E -> H·D), q_rope W_qr (E -> H·d_r), kv_down W_dkv (E -> d_c), k_up W_uk and
    v_up W_uv (d_c -> H·D), k_rope W_kr (E -> d_r, shared by the heads), out_proj W_o (H·D -> E).
    head_dim D defaults to E / H; rope_dim d_r must be even.
    """

    def __init__(self, embed_dim: int, num_heads: int, latent_dim: int, rope_dim: int,
                 head_dim: int | None = None, rope_base: float = 10000.0, dtype=None):
        super().__init__()
        head_dim = embed_dim // num_heads if head_dim is None else head_dim
        for name, n in (("embed_dim", embed_dim), ("num_heads", num_heads), ("latent_dim", latent_dim),
                        ("rope_dim", rope_dim), ("head_dim", head_dim)):
            check_int("MultiHeadLatentAttention", name, n, 1)
        if rope_dim % 2:
            raise ValueError(f"MultiHeadLatentAttention: rope_dim {rope_dim} must be even (RoPE rotates pairs)")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.latent_dim, self.rope_dim, self.rope_base = latent_dim, rope_dim, rope_base
        H, D = num_heads, head_dim
        self.q_proj = Linear(embed_dim, H * D, bias=False, dtype=dtype)  # W_q
        self.q_rope = Linear(embed_dim, H * rope_dim, bias=False, dtype=dtype)  # W_qr
        self.kv_down = Linear(embed_dim, latent_dim, bias=False, dtype=dtype)  # W_dkv
        self.k_up = Linear(latent_dim, H * D, bias=False, dtype=dtype)  # W_uk
        self.v_up = Linear(latent_dim, H * D, bias=False, dtype=dtype)  # W_uv
        self.k_rope = Linear(embed_dim, rope_dim, bias=False, dtype=dtype)  # W_kr
        self.out_proj = Linear(H * D, embed_dim, bias=False, dtype=dtype)  # W_o

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
                f"latent_dim={self.latent_dim}, rope_dim={self.rope_dim}")

    def _rope(self, t: Tensor, positions: np.ndarray) -> Tensor:
        return F.apply_rotary_pos_emb(t, positions, base=self.rope_base)

    def forward(self, x, is_causal: bool = False, cache: LatentCache = None) -> Tensor:
        """x (B, T, E) -> (B, T, E). Without a cache: K, V from the latent (training). With one:
        x holds the T positions after the P cached ones; c and k^R are appended and the absorbed
        form attends all P + T positions (causal aligned bottom-right, as in GroupedQueryAttention).
        """
        x = F.check_tensor(x, "x")
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiHeadLatentAttention: x has shape {x.shape}; expected "
                             f"(B, T, {self.embed_dim})")
        B, T, _ = x.shape
        H, D, d_r = self.num_heads, self.head_dim, self.rope_dim
        past = 0 if cache is None else len(cache)
        positions = np.arange(past, past + T)
        q = self.q_proj(x).reshape(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        q_r = self._rope(self.q_rope(x).reshape(B, T, H, d_r).transpose(1, 2), positions)  # (B, H, T, d_r)
        c = self.kv_down(x).unsqueeze(1)  # (B, 1, T, d_c)
        k_r = self._rope(self.k_rope(x).unsqueeze(1), positions)  # (B, 1, T, d_r)
        if cache is None:
            return self._expanded(q, q_r, c, k_r, is_causal)
        c, k_r = cache.append(c, k_r)  # (B, 1, P + T, d_c), (B, 1, P + T, d_r)
        return self._absorbed(q, q_r, c, k_r, is_causal)

    def _expanded(self, q, q_r, c, k_r, is_causal: bool) -> Tensor:
        """The training form: K = W_uk c, V = W_uv c for every head; q (B, H, T, D) -> (B, T, E)."""
        B, H, T, D = q.shape
        S = c.shape[2]
        k = self.k_up(c.squeeze(1)).reshape(B, S, H, D).transpose(1, 2)  # (B, H, S, D)
        v = self.v_up(c.squeeze(1)).reshape(B, S, H, D).transpose(1, 2)  # (B, H, S, D)
        k = cat([k, k_r.expand(B, H, S, self.rope_dim)], dim=-1)  # (B, H, S, D + d_r)
        q = cat([q, q_r], dim=-1)  # (B, H, T, D + d_r)
        heads = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)  # (B, H, T, D)
        return self.out_proj(heads.transpose(1, 2).reshape(B, T, H * D))  # (B, T, E)

    def _absorbed(self, q, q_r, c, k_r, is_causal: bool) -> Tensor:
        """The decoding form: one shared key [c; k^R] and value c, absorbed W_uk and W_o W_uv."""
        B, H, T, D = q.shape
        S, d_c, E = c.shape[2], self.latent_dim, self.embed_dim
        W_uk = self.k_up.weight.reshape(H, D, d_c)  # (H, D, d_c): rows of head h
        W_uv = self.v_up.weight.reshape(H, D, d_c)  # (H, D, d_c)
        W_o = self.out_proj.weight.reshape(E, H, D).transpose(0, 1)  # (H, E, D): columns of head h
        q_latent = q @ W_uk  # (B, H, T, d_c): (W_uk,hᵀ q_h)ᵀ
        query = cat([q_latent, q_r], dim=-1)  # (B, H, T, d_c + d_r)
        key = cat([c, k_r], dim=-1)  # (B, 1, S, d_c + d_r): one key head for all H
        past = S - T
        mask = None
        if is_causal and past > 0:
            mask = np.tril(np.ones((T, S), dtype=bool), k=past)  # (T, S), bottom-right
        latent_heads = F.scaled_dot_product_attention(
            query, key, c, attn_mask=mask, is_causal=is_causal and past == 0,
            scale=1.0 / math.sqrt(D + self.rope_dim), enable_gqa=True)  # (B, H, T, d_c)
        W_ov = W_o @ W_uv  # (H, E, d_c): W_o,h W_uv,h
        return (latent_heads @ W_ov.transpose(-2, -1)).sum(dim=1)  # (B, H, T, E) -> (B, T, E)


register(Variant(
    name="mla", kind="decoding", claim="exact cache",
    paper="DeepSeek-AI 2024 (DeepSeek-V2)",
    time="O(T·H·(d_c + d_r)) per decoded token", memory="layers·T·(d_c + d_r) numbers of cache",
    summary="keys and values are up-projections of a d_c latent; decoding caches the latent and a "
            "shared rope key, and absorbs W_uk into the query and W_uv into W_o"))
