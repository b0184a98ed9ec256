"""Efficient attention: the same (or a cheaper) attention without the L x S score matrix.

One file per variant, each with its formula and paper in the docstring, a readable forward, a
backward, and what it claims (exact, exact under its mask, unbiased, approximate with a bound):

- ``flash``: exact softmax attention tile by tile with the online softmax (Dao et al. 2022).
- ``sliding_window``: exact attention under a band mask, O(L · window).
- ``linear``: kernelized attention with φ = elu + 1 (Katharopoulos et al. 2020), O(L).
- ``gqa``: grouped-query attention (MHA, GQA, MQA) and the KV cache for decoding.
- ``performer``: FAVOR+ positive orthogonal random features (Choromanski et al. 2021), O(L·m·D).
- ``linformer``: keys and values projected along the sequence to k rows (Wang et al. 2020).
- ``nystrom``: Nyström landmarks and a pseudo-inverse (Xiong et al. 2021).
- ``block_sparse``: BigBird window + global + random blocks (Zaheer et al. 2020), exact under its mask.
- ``lsh``: Reformer LSH attention, hashed buckets sorted into chunks (Kitaev et al. 2020).
- ``mla``: multi-head latent attention (DeepSeek-V2): a latent cache, absorbed up-projections.
- ``paged``: a paged KV cache (vLLM): blocks from a shared pool, one block table per sequence.
- ``sinks``: attention sinks (StreamingLLM): the first tokens plus a rolling window.
- ``alibi``, ``rope``: position schemes, a linear bias on i − j and a rotation.

``registry`` holds every variant by name with its claims (``variants()``, ``get(name)``); adding
one is a new file that ends with ``register(Variant(...))`` and one import line below.

Inputs of the attention functions are (B, H, L, D) tensors; any leading dims work as long as
query, key and value share them.
"""

from __future__ import annotations

from . import registry
from .flash import TILE_FULL, TILE_MASKED, TILE_SKIPPED, flash_attention, flash_tile_kinds
from .gqa import GroupedQueryAttention, KVCache, kv_cache_bytes
from .mla import LatentCache, MultiHeadLatentAttention, mla_cache_bytes
from .paged import BlockPool, PagedKVCache, paged_waste
from .sinks import SinkCache
from .alibi import alibi_bias, alibi_slopes
from .rope import apply_rotary_pos_emb
from .linear import elu_feature_map, linear_attention, linear_attention_weights
from .registry import Variant, get, register, variants
from .sliding_window import sliding_window_attention, sliding_window_mask, sliding_window_tiles
from .performer import favor_features, orthogonal_random_features, performer_attention, performer_weights
from .linformer import Linformer, linformer_attention, linformer_projections, linformer_weights
from .nystrom import iterative_pinv, landmark_matrix, nystrom_attention, nystrom_reference, pinv
from .block_sparse import block_sparse_attention, block_sparse_layout, block_sparse_mask, block_sparse_pairs
from .lsh import lsh_attention, lsh_buckets, lsh_mask

__all__ = [
    "flash_attention", "flash_tile_kinds", "sliding_window_attention", "sliding_window_mask",
    "sliding_window_tiles",
    "linear_attention", "linear_attention_weights", "elu_feature_map",
    "GroupedQueryAttention", "KVCache", "kv_cache_bytes",
    "MultiHeadLatentAttention", "LatentCache", "mla_cache_bytes", "BlockPool", "PagedKVCache", "paged_waste",
    "SinkCache", "alibi_slopes", "alibi_bias", "apply_rotary_pos_emb",
    "TILE_SKIPPED", "TILE_MASKED", "TILE_FULL",
    "performer_attention", "performer_weights", "orthogonal_random_features", "favor_features",
    "linformer_attention", "linformer_weights", "linformer_projections", "Linformer",
    "nystrom_attention", "nystrom_reference", "landmark_matrix", "pinv", "iterative_pinv",
    "block_sparse_attention", "block_sparse_mask", "block_sparse_layout", "block_sparse_pairs",
    "lsh_attention", "lsh_mask", "lsh_buckets",
    "registry", "Variant", "register", "variants", "get",
]
