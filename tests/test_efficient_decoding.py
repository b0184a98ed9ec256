"""The decoding variants of the efficient family, each held to its claim against an oracle written
out here: multi-head latent attention (cached decode = full forward = the formulas in NumPy; cache
bytes = the closed form), the paged KV cache (= the contiguous cache, bit for bit; block tables,
reuse, waste counted by hand), attention sinks (= dense attention under the sink + window mask),
ALiBi (the paper's slopes written out; the bias as a loop; PyTorch), RoPE and ALiBi GPTs (cached
decode = full forward), and the streaming experiment (its caches = a dense NumPy GPT under the
matching key sets; the committed measurements say what the README says)."""

from __future__ import annotations

import json
import math
import pathlib
from importlib import resources

import numpy as np
import pytest

import tinyattn as ta
from tinyattn import data, streaming
from tinyattn import efficient as eff
from tinyattn.models import GPT
from tinyattn.nn.modules import Parameter

from helpers import assert_close, import_torch, t64

# ----------------------------------------------------------------------------------------------
# NumPy oracles
# ----------------------------------------------------------------------------------------------


def rope_np(x: np.ndarray, positions, base: float = 10000.0) -> np.ndarray:
    """RoPE in complex form: pair (x_2i, x_2i+1) is z_i, times e^(i p θ_i), θ_i = base^(−2i/D)."""
    D = x.shape[-1]
    theta = base ** (-np.arange(D // 2) * 2.0 / D)  # (D/2,)
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * np.asarray(positions, float)[:, None] * theta)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def softmax_np(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attend_np(q, k, v, allowed, scale, bias=None):
    """softmax(scale · q kᵀ + bias, masked) v for (T, d) q, (S, d) k, (S, dv) v, allowed (T, S)."""
    a = scale * q @ k.T + (0.0 if bias is None else bias)
    return softmax_np(np.where(allowed, a, -np.inf)) @ v


def causal(T: int, S: int | None = None) -> np.ndarray:
    """(T, S) bottom-right causal mask: query t is position S − T + t."""
    S = T if S is None else S
    return np.arange(S)[None, :] <= (S - T + np.arange(T))[:, None]


def alibi_slopes_reference(n: int) -> list:
    """``get_slopes`` of the ALiBi authors' code (ofirpress/attention_with_linear_biases), verbatim."""

    def get_slopes_power_of_2(n):
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        ratio = start
        return [start * ratio ** i for i in range(n)]

    if math.log2(n).is_integer():
        return get_slopes_power_of_2(n)
    closest_power_of_2 = 2 ** math.floor(math.log2(n))
    return (get_slopes_power_of_2(closest_power_of_2)
            + alibi_slopes_reference(2 * closest_power_of_2)[0::2][:n - closest_power_of_2])


# ----------------------------------------------------------------------------------------------
# multi-head latent attention
# ----------------------------------------------------------------------------------------------

E, H, D, D_C, D_R = 12, 3, 4, 5, 4  # embed, heads, head dim, latent dim, rope dim


def mla(seed: int = 0) -> eff.MultiHeadLatentAttention:
    ta.manual_seed(seed)
    m = eff.MultiHeadLatentAttention(E, H, latent_dim=D_C, rope_dim=D_R).double()
    for p in m.parameters():  # larger weights than the default init: peaked, position-dependent scores
        p.data *= 2.0
    return m


def mla_np(m, x: np.ndarray, c: np.ndarray = None, k_r: np.ndarray = None) -> np.ndarray:
    """MLA from the paper's formulas, one head at a time, K and V decompressed: x (B, T, E) -> (B, T, E).

    Given the cached latents c (B, P + T, d_c) and rope keys k^R (B, P + T, d_r) the queries x are
    the last T positions (the naive decode); without them, c and k^R come from x (the full forward).
    """
    W = {name: getattr(m, name).weight.data for name in
         ("q_proj", "q_rope", "kv_down", "k_up", "v_up", "k_rope", "out_proj")}
    B, T, _ = x.shape
    if c is None:
        c = x @ W["kv_down"].T  # (B, T, d_c)
        k_r = np.stack([rope_np(k, np.arange(T)) for k in x @ W["k_rope"].T])  # (B, T, d_r)
    S = c.shape[1]
    positions = np.arange(S - T, S)
    out = np.zeros((B, T, E))
    for b in range(B):
        heads = []
        for h in range(H):
            rows, rope_rows = slice(h * D, (h + 1) * D), slice(h * D_R, (h + 1) * D_R)
            q = x[b] @ W["q_proj"][rows].T  # (T, D)
            q_r = rope_np(x[b] @ W["q_rope"][rope_rows].T, positions)  # (T, d_r)
            k, v = c[b] @ W["k_up"][rows].T, c[b] @ W["v_up"][rows].T  # (S, D) each
            heads.append(attend_np(np.hstack([q, q_r]), np.hstack([k, k_r[b]]), v, causal(T, S),
                                   1 / math.sqrt(D + D_R)))
        out[b] = np.hstack(heads) @ W["out_proj"].T
    return out


def test_mla_full_forward_is_the_papers_formula():
    m = mla(1)
    x = t64(np.random.default_rng(2), 2, 9, E, requires_grad=False)
    assert_close(m(x, is_causal=True), mla_np(m, x.data), rtol=1e-11, atol=1e-12, what="MLA forward")


def test_mla_cached_decoding_equals_the_full_forward():
    m = mla(3)
    x = t64(np.random.default_rng(4), 2, 11, E, requires_grad=False)
    full = m(x, is_causal=True).data
    cache = eff.LatentCache()
    steps = [m(x[:, t:t + 1], is_causal=True, cache=cache).data for t in range(11)]
    err = np.abs(np.concatenate(steps, axis=1) - full).max()
    assert err < 1e-9, f"token by token: max |decode − full| = {err:.1e}"
    cache = eff.LatentCache()
    chunks = [m(x[:, a:b], is_causal=True, cache=cache).data for a, b in ((0, 4), (4, 7), (7, 8), (8, 11))]
    assert np.abs(np.concatenate(chunks, axis=1) - full).max() < 1e-9, "chunked prefill"
    assert cache.latents.shape == (2, 1, 11, D_C) and cache.rope_keys.shape == (2, 1, 11, D_R)
    assert cache.nbytes == eff.mla_cache_bytes(1, D_C, D_R, 11, batch=2, bytes_per_element=8)
    assert cache.nbytes == 11 * 2 * (5 + 4) * 8


def test_mla_absorbed_decode_equals_decompress_then_attend():
    m = mla(5)
    x = t64(np.random.default_rng(6), 2, 10, E, requires_grad=False)
    cache = eff.LatentCache()
    m(x[:, :6], is_causal=True, cache=cache)  # prefill 6 positions
    got = m(x[:, 6:9], is_causal=True, cache=cache)  # 3 queries after 6 cached: the absorbed form
    c, k_r = cache.latents[:, 0], cache.rope_keys[:, 0]  # (B, 9, d_c), (B, 9, d_r)
    assert_close(got, mla_np(m, x.data[:, 6:9], c, k_r), rtol=1e-11, atol=1e-12, what="absorbed vs naive")
    one = m(x[:, 9:10], is_causal=True, cache=cache)
    assert_close(one, mla_np(m, x.data[:, 9:10], cache.latents[:, 0], cache.rope_keys[:, 0]),
                 rtol=1e-11, atol=1e-12, what="absorbed vs naive, one token")


def with_weights(m, names, prefix=None):
    """fn(x, *weights) running m causally with the weights of the submodules ``names`` replaced (for
    gradcheck). With ``prefix`` (c (B, 1, P, d_c), k^R (B, 1, P, d_r), fixed arrays) x is decoded
    after P cached positions, through the absorbed form."""

    def run(x, *weights):
        saved = [getattr(m, n).weight for n in names]
        try:
            for n, w in zip(names, weights):
                getattr(m, n).weight = w
            if prefix is None:
                return m(x, is_causal=True)
            cache = eff.LatentCache()
            cache.append(*(ta.tensor(a) for a in prefix))
            return m(x, is_causal=True, cache=cache)
        finally:
            for n, w in zip(names, saved):
                getattr(m, n).weight = w

    return run


NAMES = ("q_proj", "q_rope", "kv_down", "k_up", "v_up", "k_rope", "out_proj")


def test_mla_gradcheck_of_the_full_and_the_absorbed_forms():
    m = mla(7)
    rng = np.random.default_rng(8)
    weights = [ta.tensor(getattr(m, n).weight.data.copy(), requires_grad=True) for n in NAMES]
    assert ta.gradcheck(with_weights(m, NAMES), (t64(rng, 1, 4, E), *weights))
    cache = eff.LatentCache()
    m(t64(rng, 1, 3, E, requires_grad=False), is_causal=True, cache=cache)  # 3 cached positions
    prefix = (cache.latents.copy(), cache.rope_keys.copy())
    assert ta.gradcheck(with_weights(m, NAMES, prefix), (t64(rng, 1, 2, E), *weights))
    assert all(isinstance(getattr(m, n).weight, Parameter) for n in NAMES), "weights restored"


# ----------------------------------------------------------------------------------------------
# the paged KV cache
# ----------------------------------------------------------------------------------------------


def test_paged_decoding_of_interleaved_sequences_equals_the_contiguous_cache_exactly():
    ta.manual_seed(9)
    m = eff.GroupedQueryAttention(16, 4, 2).double()
    rng = np.random.default_rng(10)
    lengths = {"A": 6, "B": 9, "C": 3}
    xs = {s: t64(rng, 1, n, 16, requires_grad=False) for s, n in lengths.items()}
    pool = eff.BlockPool(12, 4, num_kv_heads=2, head_dim=4, dtype=np.float64)
    paged = {s: eff.PagedKVCache(pool) for s in lengths}
    contiguous = {s: eff.KVCache() for s in lengths}
    worst = 0.0
    for t in range(max(lengths.values())):  # round-robin, one token of each live sequence per step
        for s, n in lengths.items():
            if t < n:
                step = xs[s][:, t:t + 1]
                a = m(step, is_causal=True, cache=paged[s]).data
                b = m(step, is_causal=True, cache=contiguous[s]).data
                worst = max(worst, float(np.abs(a - b).max()))
    assert worst == 0.0, f"paged vs contiguous: max abs diff {worst:.1e}"
    # lowest free block first, taken when the previous one is full: A0 B1 C2 at t = 0, A3 B4 at t = 4, B5 at 8
    assert {s: c.block_table for s, c in paged.items()} == {"A": [0, 3], "B": [1, 4, 5], "C": [2]}
    for s in lengths:
        np.testing.assert_array_equal(paged[s].keys, contiguous[s].keys)
        np.testing.assert_array_equal(paged[s].values, contiguous[s].values)
    # position 5 of B lives in block table[5 // 4] = 4, slot 5 % 4 = 1
    np.testing.assert_array_equal(pool.keys[4, :, 1], contiguous["B"].keys[0, :, 5])
    assert pool.num_free == 6 and paged["B"].nbytes == 3 * 2 * (2 * 4 * 4 * 8)


def test_paged_chunked_prefill_and_gradients_equal_the_contiguous_cache():
    rng = np.random.default_rng(11)
    pool = eff.BlockPool(4, 3, num_kv_heads=2, head_dim=4, dtype=np.float64)
    paged, contiguous = eff.PagedKVCache(pool), eff.KVCache()
    k0, v0 = t64(rng, 1, 2, 5, 4), t64(rng, 1, 2, 5, 4)  # 5 positions: two blocks of 3
    for cache in (paged, contiguous):
        cache.append(k0, v0)
    k1, v1 = t64(rng, 1, 2, 4, 4), t64(rng, 1, 2, 4, 4)
    got, want = paged.append(k1, v1), contiguous.append(k1, v1)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.data, b.data)
    w = rng.standard_normal(got[0].shape)
    (got[0] * ta.tensor(w)).sum().backward()
    np.testing.assert_array_equal(k1.grad, w[:, :, 5:])  # the new positions only
    assert paged.block_table == [0, 1, 2] and len(paged) == 9 and paged.allocated_slots == 9


def test_paged_blocks_are_freed_and_reused_and_exhaustion_is_a_clear_error():
    rng = np.random.default_rng(12)
    pool = eff.BlockPool(3, 2, num_kv_heads=1, head_dim=2, dtype=np.float64)
    a, b = eff.PagedKVCache(pool), eff.PagedKVCache(pool)
    a.append(t64(rng, 1, 1, 3, 2), t64(rng, 1, 1, 3, 2))  # blocks 0, 1
    b.append(t64(rng, 1, 1, 1, 2), t64(rng, 1, 1, 1, 2))  # block 2
    assert (a.block_table, b.block_table, pool.num_free) == ([0, 1], [2], 0)
    a.append(t64(rng, 1, 1, 1, 2), t64(rng, 1, 1, 1, 2))  # position 3 fits in block 1, slot 1
    with pytest.raises(RuntimeError, match="all 3 blocks of 2 positions are in use"):
        b.append(t64(rng, 1, 1, 2, 2), t64(rng, 1, 1, 2, 2))  # position 2 of b needs a new block
    a.free()
    assert (a.block_table, len(a), pool.num_free) == ([], 0, 2)
    c = eff.PagedKVCache(pool)
    k = t64(rng, 1, 1, 3, 2)
    keys, _ = c.append(k, t64(rng, 1, 1, 3, 2))
    assert c.block_table == [0, 1]  # the freed blocks, lowest first
    np.testing.assert_array_equal(keys.data, k.data)  # nothing of a's data shows through
    with pytest.raises(ValueError, match="block 2 is not an allocated block"):
        pool.release([0, 2, 2])
    with pytest.raises(ValueError, match="one sequence per cache"):
        c.append(t64(rng, 2, 1, 1, 2), t64(rng, 2, 1, 1, 2))


def test_paged_waste_against_a_preallocated_cache_by_hand():
    lengths, block, max_len = [5, 11, 3, 8, 16], 4, 16
    # blocks ⌈n/4⌉ = 2, 3, 1, 2, 4 -> slots 8, 12, 4, 8, 16: unused 3 + 1 + 1 + 0 + 0 = 5 of 48
    assert eff.paged_waste(lengths, block) == 5
    assert len(lengths) * max_len - sum(lengths) == 37  # preallocated to max_len: 80 slots for 43
    pool = eff.BlockPool(20, block, num_kv_heads=1, head_dim=2, dtype=np.float64)
    caches = []
    for n in lengths:
        cache = eff.PagedKVCache(pool)
        cache.append(ta.zeros(1, 1, n, 2).double(), ta.zeros(1, 1, n, 2).double())
        caches.append(cache)
    assert sum(c.allocated_slots for c in caches) - sum(lengths) == 5 and pool.num_free == 20 - 12
    assert eff.paged_waste([4, 8], 4) == 0 and eff.paged_waste([1], 16) == 15
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        eff.paged_waste(lengths, 0)


# ----------------------------------------------------------------------------------------------
# attention sinks
# ----------------------------------------------------------------------------------------------


def test_sink_cache_keeps_the_first_sinks_and_the_last_window():
    rng = np.random.default_rng(13)
    cache = eff.SinkCache(num_sinks=2, window=3)
    stream = rng.standard_normal((1, 1, 10, 2))
    for t in range(10):
        keys, _ = cache.append(ta.tensor(stream[:, :, t:t + 1]), ta.tensor(-stream[:, :, t:t + 1]))
        kept = list(range(t + 1)) if t < 5 else [0, 1] + list(range(t - 2, t + 1))
        assert cache.positions.tolist() == kept, t
        assert keys.shape[2] == min(t + 1, 6)  # the new token sees up to num_sinks + window + itself
    np.testing.assert_array_equal(cache.keys, stream[:, :, [0, 1, 7, 8, 9]])
    np.testing.assert_array_equal(cache.values, -stream[:, :, [0, 1, 7, 8, 9]])
    chunked = eff.SinkCache(num_sinks=2, window=3)
    chunked.append(ta.tensor(stream[:, :, :7]), ta.tensor(stream[:, :, :7]))
    assert chunked.positions.tolist() == [0, 1, 4, 5, 6] and len(chunked) == 5


def test_sink_cache_gradient_reaches_the_new_keys_and_values_only():
    """Gradcheck (float64) of attention over what the cache returns, w.r.t. the appended k and v,
    after 6 cached positions of which 2 sinks + window 2 are kept."""
    rng = np.random.default_rng(28)
    prefix = rng.standard_normal((2, 1, 2, 6, 4))  # (k/v, B, H_kv, 6, D)
    q = t64(rng, 1, 2, 2, 4, requires_grad=False)

    def attend(k, v):
        cache = eff.SinkCache(num_sinks=2, window=2)
        cache.append(ta.tensor(prefix[0]), ta.tensor(prefix[1]))  # keeps positions 0, 1, 4, 5
        keys, values = cache.append(k, v)  # (1, 2, 4 + 2, 4)
        assert keys.shape == (1, 2, 6, 4)
        return ta.nn.functional.scaled_dot_product_attention(q, keys, values)

    k, v = t64(rng, 1, 2, 2, 4), t64(rng, 1, 2, 2, 4)
    assert ta.gradcheck(attend, (k, v))
    out = attend(k, v)
    out.sum().backward()
    assert k.grad.shape == (1, 2, 2, 4) and np.abs(k.grad).max() > 0


def sink_mask(T: int, num_sinks: int, window: int) -> np.ndarray:
    """(T, T): query i sees the first num_sinks positions and i − window .. i."""
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    return (j <= i) & ((j < num_sinks) | (i - j <= window))


def gqa_np(m, x: np.ndarray, allowed: np.ndarray, bias=None) -> np.ndarray:
    """GroupedQueryAttention in NumPy under an (T, T) ``allowed`` mask, bias (H, T, T) or None."""
    B, T, _ = x.shape
    Hq, Hkv, Dh = m.num_heads, m.num_kv_heads, m.head_dim

    def proj(lin):
        return x @ lin.weight.data.T + lin.bias.data

    q = proj(m.q_proj).reshape(B, T, Hq, Dh)
    k, v = proj(m.k_proj).reshape(B, T, Hkv, Dh), proj(m.v_proj).reshape(B, T, Hkv, Dh)
    heads = np.zeros((B, T, Hq, Dh))
    for b in range(B):
        for h in range(Hq):
            g = h // (Hq // Hkv)
            heads[b, :, h] = attend_np(q[b, :, h], k[b, :, g], v[b, :, g], allowed, 1 / math.sqrt(Dh),
                                       None if bias is None else bias[h])
    return heads.reshape(B, T, -1) @ m.out_proj.weight.data.T + m.out_proj.bias.data


@pytest.mark.parametrize("num_sinks,window", [(2, 3), (0, 4), (1, 1)])
def test_attention_through_a_sink_cache_is_dense_attention_under_its_mask(num_sinks, window):
    ta.manual_seed(14)
    m = eff.GroupedQueryAttention(16, 4, 2).double()
    x = t64(np.random.default_rng(15), 2, 12, 16, requires_grad=False)
    x.data *= 3.0  # peaked scores, so a wrong key set shows
    cache = eff.SinkCache(num_sinks, window)
    got = np.concatenate([m(x[:, t:t + 1], is_causal=True, cache=cache).data for t in range(12)], axis=1)
    want = gqa_np(m, x.data, sink_mask(12, num_sinks, window))
    assert np.abs(got - want).max() < 1e-12
    assert np.abs(got - gqa_np(m, x.data, causal(12))).max() > 1e-3, "eviction changes the output"


def test_alibi_through_a_sliding_window_cache_is_dense_alibi_under_the_band():
    """ALiBi's bias depends on i − j only, so renumbering inside the cache changes nothing."""
    ta.manual_seed(16)
    m = eff.GroupedQueryAttention(16, 4, 4, positions="alibi").double()
    x = t64(np.random.default_rng(17), 1, 14, 16, requires_grad=False)
    cache = eff.SinkCache(0, 5)
    got = np.concatenate([m(x[:, t:t + 1], is_causal=True, cache=cache).data for t in range(14)], axis=1)
    bias = -np.array(alibi_slopes_reference(4))[:, None, None] * (np.arange(14)[:, None] - np.arange(14))
    assert np.abs(got - gqa_np(m, x.data, sink_mask(14, 0, 5), bias)).max() < 1e-12


def test_sink_cache_equals_the_kv_cache_while_nothing_is_evicted():
    ta.manual_seed(18)
    m = eff.GroupedQueryAttention(16, 4, 2, positions="rope").double()
    x = t64(np.random.default_rng(19), 2, 8, 16, requires_grad=False)
    sink, kv = eff.SinkCache(4, 4), eff.KVCache()
    for t in range(8):
        a = m(x[:, t:t + 1], is_causal=True, cache=sink).data
        np.testing.assert_array_equal(a, m(x[:, t:t + 1], is_causal=True, cache=kv).data)
    with pytest.raises(ValueError, match="window must be a positive int"):
        eff.SinkCache(4, 0)


def test_sink_cache_refuses_a_different_dtype_or_shape_instead_of_upcasting():
    cache = eff.SinkCache(1, 2)
    k = np.zeros((1, 2, 3, 4), np.float32)
    cache.append(ta.tensor(k), ta.tensor(k))
    with pytest.raises(ValueError, match=r"\(float32\); cannot append .* \(float64, float64\)"):
        cache.append(ta.tensor(k.astype(np.float64)), ta.tensor(k.astype(np.float64)))
    with pytest.raises(ValueError, match=r"cannot append keys \(1, 3, 1, 4\)"):
        cache.append(ta.zeros(1, 3, 1, 4), ta.zeros(1, 3, 1, 4))
    assert cache.keys.dtype == np.float32 and cache.positions.tolist() == [0, 1, 2], "nothing appended"


# ----------------------------------------------------------------------------------------------
# ALiBi and RoPE
# ----------------------------------------------------------------------------------------------

SLOPES = {  # written out from the paper (H = 8: 1/2 ... 1/256) and the authors' interleaving rule
    1: [2 ** -8],
    2: [2 ** -4, 2 ** -8],
    4: [1 / 4, 1 / 16, 1 / 64, 1 / 256],
    5: [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2],
    6: [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8],
    8: [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 256],
    12: [2.0 ** -h for h in range(1, 9)] + [2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5],
}


@pytest.mark.parametrize("n", sorted(SLOPES))
def test_alibi_slopes_are_the_papers(n):
    np.testing.assert_allclose(eff.alibi_slopes(n), SLOPES[n], rtol=1e-15)
    np.testing.assert_allclose(eff.alibi_slopes(n), alibi_slopes_reference(n), rtol=1e-15)


def test_alibi_slopes_of_the_reference_code_for_every_head_count_up_to_64():
    for n in range(1, 65):
        np.testing.assert_allclose(eff.alibi_slopes(n), alibi_slopes_reference(n), rtol=1e-14, err_msg=str(n))


def test_alibi_bias_is_minus_slope_times_distance_by_a_loop():
    Hh, L, S = 6, 3, 7
    m = SLOPES[6]
    for is_causal in (True, False):
        got = eff.alibi_bias(Hh, L, S, is_causal=is_causal)
        want = np.empty((Hh, L, S))
        for h in range(Hh):
            for i in range(L):
                p = S - L + i  # the query's position
                for j in range(S):
                    if j > p and is_causal:
                        want[h, i, j] = -np.inf
                    else:
                        want[h, i, j] = -m[h] * abs(p - j)
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="expected L <= S"):
        eff.alibi_bias(2, 5, 3)


@pytest.mark.parametrize("positions", ["rope", "alibi"])
def test_gpt_with_rope_or_alibi_decodes_with_a_cache_as_its_full_forward(positions):
    ta.manual_seed(20)
    model = GPT(11, 64, d_model=16, num_heads=2, num_layers=2, positions=positions).double()
    for p in model.parameters():
        p.data *= 10.0  # beyond the 0.02 init: attention far from uniform
    model.eval()
    idx = np.random.default_rng(21).integers(0, 11, size=(2, 13))
    full = model(idx).data
    caches = [eff.KVCache() for _ in model.blocks]
    steps = np.concatenate([model(idx[:, t:t + 1], caches).data for t in range(13)], axis=1)
    assert np.abs(steps - full).max() < 1e-9 * max(1.0, np.abs(full).max())
    assert model.wpe is None and all(b.attn.positions == positions for b in model.blocks)


@pytest.mark.parametrize("positions", ["rope", "alibi"])
def test_attention_maps_of_a_rope_or_alibi_gpt_are_its_scores_in_numpy(positions):
    """``GPT.attention_maps`` (what the streaming table's "weight on the first token" reads) is
    softmax(rotated q·k / √D, causal) or softmax(q·k / √D − m_h·(i − j), causal) of LN_1(x)."""
    ta.manual_seed(25)
    model = GPT(11, 64, d_model=16, num_heads=2, num_layers=2, positions=positions).double()
    for p in model.parameters():
        p.data *= 4.0  # weights far from uniform, not yet one-hot
    model.eval()
    idx = np.random.default_rng(26).integers(0, 11, size=(2, 9))
    maps = model.attention_maps(idx)  # (layers, B, H, T, T)
    sd = model.state_dict()
    B, T, Hh, Dh = 2, 9, 2, 8
    x = sd["wte.weight"][idx]  # (B, T, E): no position table
    slopes = alibi_slopes_reference(Hh)
    for layer, block in enumerate(model.blocks):
        p = f"blocks.{layer}."
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        h = (x - mu) / np.sqrt(var + 1e-5) * sd[p + "ln_1.weight"] + sd[p + "ln_1.bias"]
        q, k = ((h @ sd[p + f"attn.{n}.weight"].T + sd[p + f"attn.{n}.bias"]).reshape(B, T, Hh, Dh)
                for n in ("q_proj", "k_proj"))
        for b in range(B):
            for hd in range(Hh):
                qh, kh, bias = q[b, :, hd], k[b, :, hd], 0.0
                if positions == "rope":
                    qh, kh = rope_np(qh, np.arange(T)), rope_np(kh, np.arange(T))
                else:
                    bias = -slopes[hd] * (np.arange(T)[:, None] - np.arange(T)[None, :])
                want = softmax_np(np.where(causal(T), qh @ kh.T / math.sqrt(Dh) + bias, -np.inf))
                np.testing.assert_allclose(maps[layer, b, hd], want, rtol=1e-10, atol=1e-12)
        x = block(ta.tensor(x)).data  # the next layer's input (the block's forward is held above)
    spread = (maps[..., 3:, :] > 0.05).sum(-1)  # (layers, B, H, T − 3): keys with a share > 5%
    assert spread.min() >= 1 and spread.mean() > 1.5 and maps.max() > 0.5, "neither uniform nor one-hot"


@pytest.mark.parametrize("positions", ["rope", "alibi"])
def test_gqa_with_positions_gradcheck_through_a_cache(positions):
    """float64 finite differences of GroupedQueryAttention(positions=...) w.r.t. the new tokens x,
    decoded after 3 cached positions (the queries at positions 3, 4, the keys rotated or biased)."""
    ta.manual_seed(29)
    m = eff.GroupedQueryAttention(8, 2, 1, positions=positions).double()
    rng = np.random.default_rng(30)
    prefix = t64(rng, 1, 3, 8, requires_grad=False)

    def run(x):
        cache = eff.KVCache()
        m(prefix, is_causal=True, cache=cache)
        return m(x, is_causal=True, cache=cache)

    assert ta.gradcheck(run, (t64(rng, 1, 2, 8),))


@pytest.mark.parametrize("positions", ["rope", "alibi"])
def test_gqa_positions_match_pytorch(positions):
    torch = import_torch()
    ta.manual_seed(22)
    m = eff.GroupedQueryAttention(16, 4, 2, positions=positions).double()
    x = np.random.default_rng(23).standard_normal((2, 9, 16))
    T, Dh = 9, 4
    tF = torch.nn.functional

    def proj(lin, heads):
        out = tF.linear(torch.tensor(x), torch.tensor(lin.weight.data), torch.tensor(lin.bias.data))
        return out.reshape(2, T, heads, Dh).transpose(1, 2)

    q, k, v = proj(m.q_proj, 4), proj(m.k_proj, 2), proj(m.v_proj, 2)
    if positions == "rope":
        theta = 10000.0 ** (-torch.arange(0, Dh, 2, dtype=torch.float64) / Dh)
        rot = torch.polar(torch.ones(T, Dh // 2, dtype=torch.float64), torch.arange(T)[:, None] * theta)

        def rope(t):
            pairs = torch.view_as_complex(t.reshape(*t.shape[:-1], -1, 2).contiguous())  # z_i
            return torch.view_as_real(pairs * rot).reshape(t.shape)

        heads = tF.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True, enable_gqa=True)
    else:
        slopes = torch.tensor(alibi_slopes_reference(4), dtype=torch.float64)[:, None, None]
        distance = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).double()
        bias = (-slopes * distance).masked_fill(distance < 0, float("-inf"))
        heads = tF.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
    want = tF.linear(heads.transpose(1, 2).reshape(2, T, 16), torch.tensor(m.out_proj.weight.data),
                     torch.tensor(m.out_proj.bias.data))
    assert_close(m(ta.tensor(x), is_causal=True), want.numpy(), rtol=1e-11, atol=1e-12, what=positions)


# ----------------------------------------------------------------------------------------------
# the streaming experiment
# ----------------------------------------------------------------------------------------------


def test_markov_stream_has_the_stationary_pairs_and_the_entropy_rate_at_every_position():
    """The stream's claims, against an eigenvector oracle: π is the stationary distribution of the
    pair chain (a, b) -> (b, c); rows start "^" then π-distributed pairs; the loss of the true
    table is the entropy rate Σ π(a, b)·H(table[a, b]) at early and late positions alike."""
    table = data.markov_table(0)
    V = data.MARKOV_TOKENS
    assert table.shape == (V, V, V) and np.allclose(table.sum(-1), 1.0, rtol=0, atol=1e-12)
    pairs = np.zeros((V * V, V * V))  # the pair chain: (a, b) -> (b, c) with probability table[a, b, c]
    for a in range(V):
        for b in range(V):
            pairs[a * V + b, b * V + np.arange(V)] = table[a, b]
    values, vectors = np.linalg.eig(pairs.T)
    oracle = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
    oracle = (oracle / oracle.sum()).reshape(V, V)  # (V, V): the left eigenvector of eigenvalue 1
    pi = data.markov_pair_distribution(table)
    np.testing.assert_allclose(pi, oracle, rtol=0, atol=1e-12)
    h = data.markov_entropy_rate(table)
    p = np.where(table > 0, table, 1.0)
    assert abs(h - float((oracle * -(table * np.log(p)).sum(-1)).sum())) < 1e-12
    assert 0.5 < h < np.log(V) - 0.5, "the chain is far from uniform (alpha = 0.3)"

    rows = data.markov_stream(20000, 40, np.random.default_rng(27), table)  # (20000, 40)
    assert rows.dtype == np.int64 and (rows[:, 0] == data.MARKOV_BOS).all()
    assert rows[:, 1:].min() >= 0 and rows[:, 1:].max() < V
    for t in (1, 30):  # the pair (x_t, x_t+1) is π-distributed at the start and later on
        counts = np.bincount(rows[:, t] * V + rows[:, t + 1], minlength=V * V) / len(rows)
        assert np.abs(counts - pi.ravel()).max() < 5 * np.sqrt(pi.max() / len(rows)), t
    nll = -np.log(table[rows[:, 1:-2], rows[:, 2:-1], rows[:, 3:]])  # (20000, 37): the true table's loss
    sigma = nll.std() / np.sqrt(len(rows))
    for band in (slice(0, 5), slice(32, 37)):  # positions 3..7 and 34..38
        assert abs(nll[:, band].mean() - h) < 5 * sigma, (band, nll[:, band].mean(), h)


def gpt_losses_np(model, rows: np.ndarray, key_sets) -> np.ndarray:
    """Per-position loss of a RoPE or ALiBi GPT in NumPy, query i attending ``key_sets(i)`` (text
    positions, ascending, ending with i) with positions re-assigned 0 .. n−1 inside that set."""
    sd = model.state_dict()
    erf = np.vectorize(math.erf)
    scheme = model.blocks[0].attn.positions
    Hh = model.blocks[0].attn.num_heads

    def ln(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * sd[name + ".weight"] + sd[name + ".bias"]

    def lin(x, name):
        return x @ sd[name + ".weight"].T + sd[name + ".bias"]

    idx, targets = rows[:, :-1], rows[:, 1:]
    B, T = idx.shape
    x = sd["wte.weight"][idx]  # (B, T, E)
    Dh = x.shape[-1] // Hh
    for layer in range(len(model.blocks)):
        p = f"blocks.{layer}."
        h = ln(x, p + "ln_1")
        q, k, v = (lin(h, p + "attn." + n).reshape(B, T, Hh, Dh) for n in ("q_proj", "k_proj", "v_proj"))
        heads = np.zeros((B, T, Hh, Dh))
        for i in range(T):
            keys = np.asarray(key_sets(i))
            n = len(keys)
            for b in range(B):
                for hd in range(Hh):
                    qi, kk = q[b, i:i + 1, hd], k[b, keys, hd]
                    bias = None
                    if scheme == "rope":
                        qi, kk = rope_np(qi, [n - 1]), rope_np(kk, np.arange(n))
                    else:
                        bias = -alibi_slopes_reference(Hh)[hd] * (n - 1 - np.arange(n))
                    heads[b, i, hd] = attend_np(qi, kk, v[b, keys, hd], np.ones((1, n), bool),
                                                1 / math.sqrt(Dh), bias)[0]
        x = x + lin(heads.reshape(B, T, -1), p + "attn.out_proj")
        g = lin(ln(x, p + "ln_2"), p + "mlp.0")
        x = x + lin(0.5 * g * (1 + erf(g / math.sqrt(2))), p + "mlp.2")
    logits = ln(x, "ln_f") @ sd["wte.weight"].T  # (B, T, V)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


@pytest.mark.parametrize("positions", ["rope", "alibi"])
def test_streaming_caches_equal_a_dense_gpt_under_their_key_sets(positions):
    """The committed model, read with caches of 8 keys (window 7, or 4 sinks + window 3) on rows of 20."""
    model, config = streaming.load_stream_run(positions)
    model.double()
    rows = data.markov_stream(2, 21, np.random.default_rng(24), data.markov_table(config.seed))
    T_cache = 8
    sets = {"window": lambda i: list(range(max(0, i - 7), i + 1)),
            "sinks": lambda i: sorted(set(range(min(4, i + 1))) | set(range(max(0, i - 3), i + 1))),
            "full": lambda i: list(range(i + 1))}
    losses = {}
    for name, (_, make) in streaming.CACHES.items():
        losses[name] = streaming.decode_losses(model, rows, lambda: make(T_cache))
        want = gpt_losses_np(model, rows, sets[name])
        err = np.abs(losses[name] - want).max()
        assert err < 1e-9, f"{positions} {name}: max |decode − dense| = {err:.1e}"
    assert np.abs(losses["full"] - streaming.full_losses(model, rows)).max() < 1e-9
    np.testing.assert_array_equal(losses["window"][:, :8], losses["full"][:, :8])  # nothing evicted yet
    assert np.abs(losses["sinks"] - losses["window"])[:, 8:].max() > 1e-4, "the sinks change the key set"


@pytest.fixture(scope="module")
def measured() -> dict:
    return json.loads((resources.files("tinyattn") / "measurements" / "streaming.json").read_text())


def test_streaming_measurements_are_consistent(measured):
    """The bands are the means of the stored curves; the full cache was checked against decoding."""
    for run in measured["runs"].values():
        for name, curve in run["curves"].items():
            assert len(curve) == measured["length"] == 512
            means = [np.mean(curve[lo:hi]) for lo, hi in measured["bands"]]
            np.testing.assert_allclose(run["bands"][name], means, atol=1e-5)
        assert run["result"]["full_cache_vs_recompute_max_abs"] < 1e-4  # float32 round-off


def test_benchmarks_readme_streaming_table_is_the_committed_measurements(measured):
    """Every row of the streaming table in benchmarks/README.md is a run's band means, to 4 places."""
    readme = (pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "README.md").read_text("utf-8")
    section = readme.split("<!-- streaming:start -->", 1)[1].split("<!-- streaming:end -->", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith(("| rope |", "| alibi |"))]
    want = [f"| {positions} | {streaming.CACHES[name][0]} | " + " | ".join(f"{v:.4f}" for v in values) + " |"
            for positions, run in measured["runs"].items() for name, values in run["bands"].items()]
    assert rows == want and len(rows) == 6
    assert f"entropy rate) {measured['entropy_rate']:.4f} nats" in section
    assert f"`{measured['command']}`" in section


def test_streaming_measurements_say_what_the_readme_says(measured):
    """RoPE's full cache degrades past the training window; window and sinks stay near the entropy
    rate; the sinks gain 0.003–0.006 nats; ALiBi's full cache extrapolates (benchmarks/README.md)."""
    h = measured["entropy_rate"]
    assert measured["train_len"] == 64 and measured["bands"] == [[2, 64], [64, 128], [128, 256], [256, 512]]
    rope, alibi = measured["runs"]["rope"]["bands"], measured["runs"]["alibi"]["bands"]
    assert rope["full"][0] - h < 0.06  # inside the training window: near the entropy rate
    assert 3.60 < rope["full"][2] < 3.62 and 3.60 < rope["full"][3] < 3.62  # 3.61 past 128
    assert rope["full"][2] - h > 1.7 and rope["full"][3] > np.log(data.MARKOV_TOKENS)  # worse than chance
    for bands in (rope, alibi):
        for name in ("window", "sinks"):
            assert max(bands[name]) - h < 0.1, (name, bands[name])
    assert 1.84 < rope["window"][2] < 1.89  # ~1.86 past 128
    gains = np.subtract(rope["window"][1:], rope["sinks"][1:])  # past T_train
    assert gains.min() > 0.003 and gains.max() < 0.0065, gains
    assert 2.38 < rope["full"][1] < 2.40
    first = np.asarray(measured["runs"]["rope"]["attention_on_first_token"])  # (layers, H)
    assert 0.225 < first[0].min() and first[0].max() < 0.495  # layer 1 parks 0.23–0.49 on "^"
    assert max(abs(a - b) for x in alibi.values() for y in alibi.values() for a, b in zip(x, y)) < 0.0003
    assert 1.88 < min(min(b) for b in alibi.values()) and max(max(b) for b in alibi.values()) < 1.9305


# ----------------------------------------------------------------------------------------------
# the numbers behind the figures
# ----------------------------------------------------------------------------------------------


def test_kv_cache_bytes_figure_numbers_are_the_closed_forms():
    from tinyattn.gallery import decoding

    curves = decoding.kv_cache_curves([1, 17, 4096])
    per_token = {"mha": 2 * 32 * 32 * 128 * 2, "gqa": 2 * 32 * 8 * 128 * 2, "mqa": 2 * 32 * 128 * 2,
                 "mla": 32 * (512 + 64) * 2}  # bytes per token: 512, 128, 16 and 36 KiB
    for name, b in per_token.items():
        np.testing.assert_array_equal(curves[name], [b, 17 * b, 4096 * b])
    np.testing.assert_array_equal(curves["paged"], np.array([16, 32, 4096]) * per_token["mha"])
    batch = decoding.mixed_batch_slots()
    lengths = batch["lengths"]
    assert len(lengths) == 32 and lengths.min() >= 1 and lengths.max() <= 4096
    assert batch["used"] == lengths.sum() and batch["preallocated"] == 32 * 4096
    assert batch["paged"] == sum(16 * math.ceil(n / 16) for n in lengths)
    assert 0 <= batch["paged"] - batch["used"] < 32 * 16
    assert round(100 * (batch["paged"] / batch["used"] - 1), 1) == 0.3  # the README's numbers
    assert round(100 * (batch["preallocated"] / batch["used"] - 1), 1) == 89.7


def test_the_two_figures_draw_their_data(measured):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tinyattn.gallery import decoding

    fig = decoding.kv_cache_bytes()
    lines = {line.get_label().split(":")[0]: line for line in fig.axes[0].get_lines()}
    mha = lines["MHA (32 kv heads)"]
    np.testing.assert_allclose(mha.get_ydata(), decoding.kv_cache_curves(mha.get_xdata())["mha"] / 2 ** 20)
    fig = decoding.streaming_loss()
    full = [line for line in fig.axes[0].get_lines() if line.get_label() == "full cache"][0]
    curve = np.asarray(measured["runs"]["rope"]["curves"]["full"])
    np.testing.assert_allclose(full.get_ydata()[-1], curve[-16:].mean(), rtol=1e-12)
    plt.close("all")


# ----------------------------------------------------------------------------------------------
# bad inputs
# ----------------------------------------------------------------------------------------------

BAD = [  # (call, the message naming the bad value and what was expected)
    (lambda: eff.GroupedQueryAttention(16, 4, 2, positions="learned"),
     r"positions 'learned' is not one of \(None, 'rope', 'alibi'\)"),
    (lambda: eff.GroupedQueryAttention(12, 4, 2, positions="rope"), r"head_dim 3 is odd"),
    (lambda: GPT(11, 8, d_model=16, num_heads=2, positions="sinusoidal"),
     r"'learned', 'rope' or 'alibi', got 'sinusoidal'"),
    (lambda: eff.MultiHeadLatentAttention(12, 3, 5, 3), r"rope_dim 3 must be even"),
    (lambda: eff.MultiHeadLatentAttention(12, 3, 5, 4)(ta.zeros(2, 3, 10)),
     r"x has shape \(2, 3, 10\); expected \(B, T, 12\)"),
    (lambda: streaming.StreamConfig(positions="learned"), r"'rope' or 'alibi', got 'learned'"),
    (lambda: eff.alibi_slopes(0), r"num_heads must be a positive int, got 0"),
    (lambda: eff.BlockPool(0, 4, 1, 2), r"num_blocks must be a positive int, got 0"),
]


@pytest.mark.parametrize("call,message", BAD)
def test_bad_inputs_name_the_bad_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------------------------
# the registry
# ----------------------------------------------------------------------------------------------

CHECKED = {  # every decoding and position variant -> the test above that pins its claim
    "gqa": "tests/test_efficient.py::test_kv_cache_decoding_equals_full_causal_forward",
    "mla": test_mla_cached_decoding_equals_the_full_forward,
    "paged": test_paged_decoding_of_interleaved_sequences_equals_the_contiguous_cache_exactly,
    "attention_sinks": test_attention_through_a_sink_cache_is_dense_attention_under_its_mask,
    "alibi": test_alibi_slopes_are_the_papers,
    "rope": test_gpt_with_rope_or_alibi_decodes_with_a_cache_as_its_full_forward,
}


def test_every_decoding_and_position_variant_has_its_claim_checked():
    registered = {v.name: v.claim for v in eff.variants("decoding") + eff.variants("position")}
    assert set(registered) == set(CHECKED), "a new decoding or position variant needs a claim test here"
    assert {n for n, c in registered.items() if c == "exact cache"} == {"gqa", "mla", "paged"}
    assert registered["attention_sinks"] == "exact under its mask"
    assert all(v.attend is None for v in eff.variants("decoding"))  # judged by decoding, not by attend
