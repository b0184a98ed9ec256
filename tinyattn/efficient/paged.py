"""A paged KV cache: a shared pool of fixed-size blocks and a block table per sequence (vLLM).

Kwon et al., "Efficient Memory Management for Large Language Model Serving with
PagedAttention" (SOSP 2023). A contiguous cache reserves max_len positions per sequence up front
(or copies on growth); a paged cache cuts every sequence's keys and values into blocks of
``block_size`` positions that live anywhere in one shared pool. Sequence s keeps a block table
(its list of block ids): its position p sits in block table[p // block_size] at slot
p % block_size. A block is taken from the pool's free list only when the previous one is full,
and all of a sequence's blocks go back when it finishes, so the waste of a sequence is only its
last, partly filled block:

    allocated − used = block_size · ⌈n / block_size⌉ − n < block_size   (n used positions),

against max_len − n for a cache preallocated to max_len.

Claim: exact cache — ``PagedKVCache.append`` returns the same keys and values as
``KVCache.append`` (a gather of the table's blocks), so decoding with it equals the contiguous
cache bit for bit. Each sequence has its own table, so a paged cache holds one sequence (B = 1);
a batch of sequences is a list of caches over one pool.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..nn import functional as F
from .common import check_int
from .registry import Variant, register

__all__ = ["BlockPool", "PagedKVCache", "paged_waste"]


def paged_waste(lengths, block_size: int) -> int:
    """Slots allocated but unused by paged caches of sequences of ``lengths``: Σ (b·⌈n/b⌉ − n)."""
    check_int("paged_waste", "block_size", block_size, 1)
    n = np.asarray(lengths, dtype=np.int64)
    return int((-(-n // block_size) * block_size - n).sum())


class BlockPool:
    """``num_blocks`` blocks of ``block_size`` positions of keys and values, shared by many sequences.

    Storage: keys and values (num_blocks, H_kv, block_size, D) each. ``allocate()`` takes a free
    block id (the lowest), ``release(ids)`` returns blocks; ``num_free`` counts the free blocks.
    """

    def __init__(self, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                 dtype=np.float32):
        for name, n in (("num_blocks", num_blocks), ("block_size", block_size),
                        ("num_kv_heads", num_kv_heads), ("head_dim", head_dim)):
            check_int("BlockPool", name, n, 1)
        self.block_size, self.num_kv_heads, self.head_dim = block_size, num_kv_heads, head_dim
        self.keys = np.zeros((num_blocks, num_kv_heads, block_size, head_dim), dtype)  # (N_b, H_kv, b, D)
        self.values = np.zeros_like(self.keys)  # (N_b, H_kv, b, D)
        self._free = list(range(num_blocks))

    @property
    def num_blocks(self) -> int:
        """The blocks in the pool, free or not."""
        return len(self.keys)

    @property
    def num_free(self) -> int:
        """The blocks no sequence holds."""
        return len(self._free)

    @property
    def block_nbytes(self) -> int:
        """Bytes of one block's keys and values."""
        return 2 * self.keys[0].nbytes

    def allocate(self) -> int:
        """Take a free block (the lowest id); a RuntimeError when the pool is exhausted."""
        if not self._free:
            raise RuntimeError(f"BlockPool: all {self.num_blocks} blocks of {self.block_size} positions "
                               f"are in use; free a finished sequence or make a larger pool")
        self._free.sort()
        return self._free.pop(0)

    def release(self, blocks) -> None:
        """Return ``blocks`` to the free list."""
        for b in blocks:
            if b in self._free or not 0 <= b < self.num_blocks:
                raise ValueError(f"BlockPool.release: block {b} is not an allocated block of this pool")
            self._free.append(b)

    def __repr__(self) -> str:
        return (f"BlockPool(blocks={self.num_blocks}, block_size={self.block_size}, free={self.num_free}, "
                f"keys={self.keys.shape})")


class PagedKVCache:
    """The KV cache of ONE sequence, stored in blocks of a shared ``BlockPool``: ``KVCache``'s interface.

    ``append(k, v)`` with k, v (1, H_kv, T, D) writes position p to block table[p // b], slot
    p % b (taking new blocks from the pool when needed) and returns all P + T keys and values,
    (1, H_kv, P + T, D) each, gathered from the blocks; gradient flows to the new positions
    only. ``len(cache)`` is P; ``block_table`` the block ids in order; ``free()`` gives the
    blocks back (the cache is then empty).
    """

    def __init__(self, pool: BlockPool):
        self.pool = pool
        self.block_table: list[int] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    @property
    def allocated_slots(self) -> int:
        """Positions this sequence's blocks hold, used or not: b · len(block_table) ≥ P."""
        return len(self.block_table) * self.pool.block_size

    @property
    def nbytes(self) -> int:
        """Bytes of the blocks this sequence holds (used or not)."""
        return len(self.block_table) * self.pool.block_nbytes

    def _gather(self, storage: np.ndarray) -> np.ndarray:
        """Positions 0..P−1 of this sequence from ``storage`` (N_b, H_kv, b, D) -> (1, H_kv, P, D)."""
        blocks = storage[self.block_table]  # (n_blocks, H_kv, b, D)
        H_kv, D = storage.shape[1], storage.shape[3]
        flat = blocks.transpose(1, 0, 2, 3).reshape(H_kv, -1, D)  # (H_kv, n_blocks · b, D)
        return flat[None, :, :self._len]  # (1, H_kv, P, D)

    @property
    def keys(self) -> np.ndarray:
        """The stored keys (1, H_kv, P, D), gathered from the blocks (a copy)."""
        return self._gather(self.pool.keys)

    @property
    def values(self) -> np.ndarray:
        """The stored values (1, H_kv, P, D), gathered from the blocks (a copy)."""
        return self._gather(self.pool.values)

    def append(self, k, v):
        """Store k, v (1, H_kv, T, D) in this sequence's blocks; return (keys, values) of all P + T."""
        k, v = F.check_tensor(k, "key"), F.check_tensor(v, "value")
        pool = self.pool
        expected = (1, pool.num_kv_heads, k.shape[2] if k.ndim == 4 else -1, pool.head_dim)
        if k.shape != expected or v.shape != expected or k.dtype != pool.keys.dtype:
            raise ValueError(f"PagedKVCache.append: expected key and value {expected} of dtype "
                             f"{pool.keys.dtype} (one sequence per cache), got {k.shape} and {v.shape} "
                             f"({k.dtype})")
        start, T = self._len, k.shape[2]
        for p in range(start, start + T):
            if p // pool.block_size == len(self.block_table):  # the last block is full
                self.block_table.append(pool.allocate())
            block, slot = self.block_table[p // pool.block_size], p % pool.block_size
            pool.keys[block, :, slot] = k.data[0, :, p - start]
            pool.values[block, :, slot] = v.data[0, :, p - start]
        self._len += T
        new_part = lambda g: (g[:, :, start:],)  # noqa: E731  (only the appended positions)
        keys = Tensor.from_op(self.keys, (k,), new_part, "paged_kv_cache")  # (1, H_kv, P + T, D)
        values = Tensor.from_op(self.values, (v,), new_part, "paged_kv_cache")  # (1, H_kv, P + T, D)
        return keys, values

    def free(self) -> None:
        """The sequence finished: return its blocks to the pool and empty the cache."""
        self.pool.release(self.block_table)
        self.block_table, self._len = [], 0

    def __repr__(self) -> str:
        return f"PagedKVCache(positions={self._len}, blocks={self.block_table})"


register(Variant(
    name="paged", kind="decoding", claim="exact cache",
    paper="Kwon et al. 2023 (vLLM, PagedAttention)",
    time="O(T·H·D) per decoded token (+ a gather of the block table)",
    memory="2·layers·b·⌈T/b⌉·H_kv·D numbers: waste < b positions per sequence",
    summary="KV cache in fixed-size blocks from a shared pool, one block table per sequence; "
            "allocated on demand, freed on finish"))
