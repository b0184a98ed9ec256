"""Attention sinks (StreamingLLM): keep the first few tokens and a rolling window of recent ones.

Xiao et al., "Efficient Streaming Language Models with Attention Sinks" (ICLR 2024). A model
trained on windows of T_train tokens learns to park the attention it does not need on the first
tokens (the "sinks"), whatever they are. A plain sliding-window cache evicts them once the
stream passes the window, and the loss blows up; keeping ``num_sinks`` initial positions next to
the ``window`` most recent ones keeps the softmax's reference point. A new token attends

    keys = {the first num_sinks positions} ∪ {the window positions before it} ∪ {itself},

so the cache holds at most num_sinks + window positions, whatever the stream's length. With
num_sinks = 0 it is a plain sliding-window cache (query i sees i − window .. i, as
``sliding_window_mask(..., is_causal=True)``).

Positions. StreamingLLM assigns positions *within the cache*, not in the text: the cache stores
keys before RoPE, and every step the j-th stored key is rotated to position j and the new query to
the position after the last stored key. So positions never exceed num_sinks + window and stay
inside what the model saw in training. ``GroupedQueryAttention(positions="rope" or "alibi")``
does exactly this with any cache: positions are indices into the keys the cache returns (for a
``KVCache`` those are the text positions). ``positions`` here gives the text positions kept.

Claim: exact under its mask — without positions in the scores (or with ALiBi and num_sinks = 0,
whose bias depends on i − j only), one-token decoding equals dense attention under the mask
"sinks ∪ band"; with nothing evicted (window ≥ length) it equals ``KVCache`` exactly. With RoPE
and sinks the re-assigned positions make it a different model, not an approximation with a bound.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..nn import functional as F
from .common import check_int
from .registry import Variant, register

__all__ = ["SinkCache"]


class SinkCache:
    """A rolling KV cache: the first ``num_sinks`` positions plus the most recent ``window``.

    ``append(k, v)`` with k, v (B, H_kv, T, D) returns the kept keys and values followed by the
    T new ones, (B, H_kv, K + T, D) with K = len(cache) before the call (gradient to the new
    positions only); then it evicts the oldest non-sink positions until at most
    num_sinks + window remain. ``positions`` are the text positions of the kept entries.
    """

    def __init__(self, num_sinks: int, window: int):
        self.num_sinks = check_int("SinkCache", "num_sinks", num_sinks, 0)
        self.window = check_int("SinkCache", "window", window, 1)
        self._k = self._v = None  # (B, H_kv, K, D) kept keys and values
        self._positions = np.zeros(0, dtype=np.int64)  # (K,) their text positions
        self._seen = 0  # positions appended so far

    def __len__(self) -> int:
        return len(self._positions)

    @property
    def positions(self) -> np.ndarray:
        """The text positions of the kept entries, (K,): the sinks, then the window, in order."""
        return self._positions.copy()

    @property
    def keys(self) -> np.ndarray:
        """The kept keys (B, H_kv, K, D) (empty cache: None)."""
        return self._k

    @property
    def values(self) -> np.ndarray:
        """The kept values (B, H_kv, K, D) (empty cache: None)."""
        return self._v

    @property
    def nbytes(self) -> int:
        """Bytes of the kept keys and values: at most 2 · B · H_kv · (num_sinks + window) · D numbers."""
        return 0 if self._k is None else self._k.nbytes + self._v.nbytes

    def append(self, k, v):
        """Store k, v (B, H_kv, T, D); return (keys, values) of the K kept + T new positions."""
        k, v = F.check_tensor(k, "key"), F.check_tensor(v, "value")
        if k.ndim != 4 or v.ndim != 4 or k.shape[:3] != v.shape[:3]:
            raise ValueError(f"SinkCache.append: expected key and value (B, H_kv, T, D) with equal "
                             f"B, H_kv, T; got {k.shape} and {v.shape}")
        if self._k is not None and (k.shape[:2], k.shape[3], v.shape[3], k.dtype, v.dtype) != (
                self._k.shape[:2], self._k.shape[3], self._v.shape[3], self._k.dtype, self._v.dtype):
            raise ValueError(f"SinkCache holds keys {self._k.shape} and values {self._v.shape} "
                             f"({self._k.dtype}); cannot append keys {k.shape} and values {v.shape} "
                             f"({k.dtype}, {v.dtype}): batch, heads, head_dim and dtype must match")
        kept = len(self)
        T = k.shape[2]
        all_k = k.data if self._k is None else np.concatenate([self._k, k.data], axis=2)  # (B, H_kv, K + T, D)
        all_v = v.data if self._v is None else np.concatenate([self._v, v.data], axis=2)
        positions = np.concatenate([self._positions, np.arange(self._seen, self._seen + T)])  # (K + T,)
        self._seen += T
        new_part = lambda g: (g[:, :, kept:],)  # noqa: E731  (only the appended positions)
        keys = Tensor.from_op(all_k, (k,), new_part, "sink_cache")  # (B, H_kv, K + T, D)
        values = Tensor.from_op(all_v, (v,), new_part, "sink_cache")  # (B, H_kv, K + T, D)
        keep = self._kept(len(positions))  # (≤ num_sinks + window,) indices into the K + T
        self._k, self._v, self._positions = all_k[:, :, keep], all_v[:, :, keep], positions[keep]
        return keys, values

    def _kept(self, n: int) -> np.ndarray:
        """Of n entries in order, the indices kept: the first num_sinks and the last window."""
        if n <= self.num_sinks + self.window:
            return np.arange(n)
        return np.concatenate([np.arange(self.num_sinks), np.arange(n - self.window, n)])

    def __repr__(self) -> str:
        return (f"SinkCache(num_sinks={self.num_sinks}, window={self.window}, kept={len(self)}, "
                f"seen={self._seen})")


register(Variant(
    name="attention_sinks", kind="decoding", claim="exact under its mask",
    paper="Xiao et al. 2024 (StreamingLLM)",
    time="O((num_sinks + window)·H·D) per decoded token",
    memory="2·layers·(num_sinks + window)·H_kv·D numbers, independent of the stream length",
    summary="keep the first num_sinks tokens and a rolling window; positions re-assigned inside the "
            "cache; equal to KVCache while nothing is evicted"))
