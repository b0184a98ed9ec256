"""RoPE, the rotary position embedding, as a member of the family (the op is in ``nn.functional``).

Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding" (2021). Each pair
(x_2i, x_2i+1) of a query or key at position p is rotated by the angle p·θ_i, θ_i = base^(−2i/D),
so rope(q)_i · rope(k)_j depends on i − j only. ``apply_rotary_pos_emb(x, positions)`` is the
op; ``GroupedQueryAttention(positions="rope")`` rotates its queries and keys with it, using the
positions of the keys inside the cache (see ``sinks``).

Claim: a position scheme (a rotation of queries and keys; no parameters).
"""

from __future__ import annotations

from ..nn.functional import apply_rotary_pos_emb
from .registry import Variant, register

__all__ = ["apply_rotary_pos_emb"]

register(Variant(
    name="rope", kind="position", claim="position scheme",
    paper="Su et al. 2021 (RoFormer)",
    time="O(L·D) per rotation of queries or keys", memory="no parameters",
    summary="rotates query/key pairs by p·θ_i; scores depend on i − j only"))
