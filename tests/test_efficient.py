"""Efficient attention: flash and sliding window equal SDPA to float64 round-off (outputs and
all gradients), linear attention equals its closed form, GQA equals SDPA with enable_gqa, and
decoding with a KV cache equals the full causal forward."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import tinyattn as ta
from tinyattn import efficient as eff
from tinyattn.nn import functional as F

from helpers import assert_close, t64

RTOL = 1e-9


def rel_err(actual, expected) -> float:
    """max |a − e| / max |e|: the relative error of a whole array. An array whose exact value is
    zero (dq when every query sees a single key: P = 1, so dS = 0) holds only the reference's
    round-off, so the denominator is at least 1e-3, well below these tests' O(1) gradients."""
    a = actual.data if isinstance(actual, ta.Tensor) else np.asarray(actual)
    e = expected.data if isinstance(expected, ta.Tensor) else np.asarray(expected)
    assert a.shape == e.shape, f"shape {a.shape} != expected {e.shape}"
    return float(np.max(np.abs(a - e)) / max(np.max(np.abs(e)), 1e-3))


def outputs_and_grads(fn, q, k, v, weights):
    """fn(q, k, v), and dL/dq, dL/dk, dL/dv for L = sum(weights ∘ out)."""
    for t in (q, k, v):
        t.grad = None
    out = fn(q, k, v)
    (out * ta.tensor(weights)).sum().backward()
    return [out.data.copy(), q.grad.copy(), k.grad.copy(), v.grad.copy()]


def assert_same_attention(fn, reference, q, k, v, rng, what):
    w = rng.standard_normal(q.shape[:-1] + (v.shape[-1],))
    got = outputs_and_grads(fn, q, k, v, w)
    want = outputs_and_grads(reference, q, k, v, w)
    for name, a, e in zip(("output", "dq", "dk", "dv"), got, want):
        err = rel_err(a, e)
        assert err <= RTOL, f"{what}: {name} relative error {err:.2e} > {RTOL}"


def qkv(rng, N, S, d=6, dv=5, lead=(2, 3)):
    return t64(rng, *lead, N, d), t64(rng, *lead, S, d), t64(rng, *lead, S, dv)


# ----------------------------------------------------------------------------------------------
# flash attention
# ----------------------------------------------------------------------------------------------

FLASH_CASES = [  # (N, S, block, causal)
    (37, 37, 8, False), (37, 37, 8, True),  # ragged last block
    (32, 32, 8, True),  # N a multiple of the block
    (37, 20, 8, True), (20, 37, 8, True),  # N != S, causal top-left
    (50, 13, 16, True), (50, 13, 16, False),  # more queries than keys
    (33, 47, 7, False), (5, 5, 128, True),  # block larger than the sequence
    (9, 6, 1, True),  # block of one
]


@pytest.mark.parametrize("N,S,block,causal", FLASH_CASES)
def test_flash_equals_sdpa_forward_and_gradients(N, S, block, causal):
    rng = np.random.default_rng(N * 1000 + S * 10 + block)
    q, k, v = qkv(rng, N, S)
    assert_same_attention(
        lambda q, k, v: eff.flash_attention(q, k, v, is_causal=causal, block_size=block),
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
        q, k, v, rng, f"flash N={N} S={S} block={block} causal={causal}")


def test_flash_custom_scale_and_large_logits():
    rng = np.random.default_rng(1)
    q, k, v = qkv(rng, 23, 23)
    for scale in (0.05, 30.0):  # 30: logits of several hundred, the online max must rescale
        assert_same_attention(
            lambda q, k, v: eff.flash_attention(q, k, v, is_causal=True, scale=scale, block_size=4),
            lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale),
            q, k, v, rng, f"flash scale={scale}")


def test_flash_four_dims_and_three_dims_agree():
    rng = np.random.default_rng(2)
    q, k, v = qkv(rng, 11, 13, lead=(6,))
    out3 = eff.flash_attention(q, k, v, block_size=4)  # (6, 11, 5)
    out4 = eff.flash_attention(q.reshape(2, 3, 11, 6), k.reshape(2, 3, 13, 6), v.reshape(2, 3, 13, 5),
                               block_size=4)
    assert out4.shape == (2, 3, 11, 5)
    assert_close(out4.data.reshape(6, 11, 5), out3.data, rtol=0, atol=0, what="same computation")


@pytest.mark.parametrize("causal", [False, True])
def test_flash_gradcheck(causal):
    rng = np.random.default_rng(3)
    q, k, v = qkv(rng, 5, 7, d=3, dv=2, lead=(1, 2))
    assert ta.gradcheck(lambda q, k, v: eff.flash_attention(q, k, v, is_causal=causal, block_size=2),
                        (q, k, v))


def test_flash_tile_map_closed_form():
    kinds = eff.flash_tile_kinds(512, 512, 128, is_causal=True)
    expected = np.array([[1, 0, 0, 0], [2, 1, 0, 0], [2, 2, 1, 0], [2, 2, 2, 1]])
    np.testing.assert_array_equal(kinds, expected)
    assert (eff.flash_tile_kinds(300, 200, 128) == eff.TILE_FULL).all()
    assert eff.flash_tile_kinds(300, 200, 128).shape == (3, 2)
    # N > S causal: rows past S see every key, so the bottom blocks are full
    np.testing.assert_array_equal(eff.flash_tile_kinds(40, 20, 10, is_causal=True),
                                  [[1, 0], [2, 1], [2, 2], [2, 2]])


@pytest.mark.parametrize("causal", [False, True])
def test_flash_computes_exactly_the_tiles_of_its_map(monkeypatch, causal):
    calls = []
    original = eff.flash._tile_scores

    def counting(qb, kb, r0, c0, kind):
        calls.append((r0, c0, kind))
        return original(qb, kb, r0, c0, kind)

    monkeypatch.setattr(eff.flash, "_tile_scores", counting)
    rng = np.random.default_rng(4)
    q, k, v = qkv(rng, 45, 45, lead=(1,))
    eff.flash_attention(q, k, v, is_causal=causal, block_size=10).sum().backward()
    kinds = eff.flash_tile_kinds(45, 45, 10, is_causal=causal)
    computed = {(r * 10, c * 10, int(kinds[r, c])) for r, c in zip(*np.nonzero(kinds))}
    assert len(calls) == 2 * len(computed), "each computed tile once forward, once backward"
    assert set(calls) == computed
    if causal:
        assert (kinds == eff.TILE_SKIPPED).sum() == 10  # 5 x 5 tiles, 10 above the diagonal


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_flash_never_allocates_an_n_by_n_array():
    N, d = 2048, 16
    rng = np.random.default_rng(5)
    q, k, v = (t64(rng, 1, 1, N, d) for _ in range(3))
    square = N * N * 8  # one float64 N x N array: 32 MiB

    def flash():
        eff.flash_attention(q, k, v, is_causal=True).sum().backward()

    def plain():
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()

    flash_peak, plain_peak = _peak_bytes(flash), _peak_bytes(plain)
    assert plain_peak >= square, "the measurement must see SDPA's N x N scores"
    assert flash_peak < square / 8, f"flash peak {flash_peak} B is not well below N*N*8 = {square} B"


def test_flash_rejects_bad_arguments():
    rng = np.random.default_rng(6)
    q, k, v = qkv(rng, 4, 5)
    with pytest.raises(ValueError, match="block_size"):
        eff.flash_attention(q, k, v, block_size=0)
    with pytest.raises(ValueError, match="expected key"):
        eff.flash_attention(q, t64(rng, 2, 3, 5, 4), v)
    with pytest.raises(ValueError, match="sequence lengths"):
        eff.flash_attention(q, k, t64(rng, 2, 3, 4, 5))
    with pytest.raises(ValueError, match="leading"):
        eff.flash_attention(q, t64(rng, 1, 3, 5, 6), t64(rng, 1, 3, 5, 5))
    no_keys = eff.flash_attention(q, t64(rng, 2, 3, 0, 6), t64(rng, 2, 3, 0, 5))  # as SDPA: zeros
    assert no_keys.shape == (2, 3, 4, 5) and not no_keys.data.any()
    with pytest.raises(TypeError, match="dtype"):
        eff.flash_attention(q.float(), k, v)


# ----------------------------------------------------------------------------------------------
# sliding-window attention
# ----------------------------------------------------------------------------------------------

def test_sliding_window_mask_closed_form():
    N, S, w = 6, 8, 2
    for causal in (False, True):
        expected = np.array([[(0 if causal else -w) <= i - j <= w for j in range(S)] for i in range(N)])
        np.testing.assert_array_equal(eff.sliding_window_mask(N, S, w, causal), expected)


@pytest.mark.parametrize("N,S,window,causal", [(100, 100, 7, False), (100, 100, 7, True),
                                               (50, 120, 20, False), (120, 50, 3, True)])
def test_sliding_window_tiles_cover_the_band_and_stay_linear(N, S, window, causal):
    band = eff.sliding_window_mask(N, S, window, causal)
    covered = np.zeros((N, S), dtype=bool)
    tiles = eff.sliding_window_tiles(N, S, window, causal)
    for q0, q1, k0, k1 in tiles:
        covered[q0:q1, k0:k1] = True
    assert [t[0] for t in tiles] == sorted(t[0] for t in tiles) and tiles[-1][1] == N
    assert not np.any(band & ~covered), "a band entry lies outside every tile"
    scored = sum((q1 - q0) * (k1 - k0) for q0, q1, k0, k1 in tiles)
    assert scored <= N * (3 * max(window, 16) + 1), "about N · (b + 2 window) scores"


WINDOW_CASES = [  # (N, S, window, causal)
    (37, 37, 3, False), (37, 37, 3, True),
    (37, 37, 0, False), (37, 37, 0, True),  # window 0: each query sees only key i
    (40, 40, 17, False), (37, 20, 4, True), (20, 37, 5, False),
    (60, 13, 2, False), (60, 13, 2, True),  # queries past S + window see no key: zeros
    (9, 9, 100, False), (9, 9, 100, True),  # window wider than the sequence: full attention
]


@pytest.mark.parametrize("N,S,window,causal", WINDOW_CASES)
def test_sliding_window_equals_sdpa_with_band_mask(N, S, window, causal):
    rng = np.random.default_rng(N * 1000 + S * 10 + window)
    q, k, v = qkv(rng, N, S)
    mask = eff.sliding_window_mask(N, S, window, causal)
    assert_same_attention(
        lambda q, k, v: eff.sliding_window_attention(q, k, v, window, is_causal=causal),
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        q, k, v, rng, f"window N={N} S={S} w={window} causal={causal}")


def test_sliding_window_rows_without_keys_are_zero():
    rng = np.random.default_rng(7)
    q, k, v = qkv(rng, 12, 4, lead=(1,))
    out = eff.sliding_window_attention(q, k, v, 2)  # rows i > S - 1 + 2 = 5 see nothing
    assert np.all(out.data[:, 6:] == 0)
    assert np.all(np.abs(out.data[:, :6]) > 0)
    out.sum().backward()
    assert np.all(q.grad[:, 6:] == 0)


@pytest.mark.parametrize("causal", [False, True])
def test_sliding_window_gradcheck(causal):
    rng = np.random.default_rng(8)
    q, k, v = qkv(rng, 7, 6, d=3, dv=2, lead=(1, 2))
    assert ta.gradcheck(lambda q, k, v: eff.sliding_window_attention(q, k, v, 2, is_causal=causal),
                        (q, k, v))


def test_sliding_window_memory_is_linear_in_n():
    rng = np.random.default_rng(9)

    def peak(N):
        q, k, v = (ta.tensor(rng.standard_normal((1, 1, N, 16)), requires_grad=True) for _ in range(3))
        return _peak_bytes(lambda: eff.sliding_window_attention(q, k, v, 32).sum().backward())

    small, big = peak(2048), peak(8192)
    assert 3.0 < big / small < 5.0, f"peak grew {big / small:.2f}x for 4x the length"
    assert big < 8192 * 8192 * 8 / 10, "far below one N x N float64 array"


def test_sliding_window_rejects_bad_window():
    rng = np.random.default_rng(10)
    q, k, v = qkv(rng, 4, 4)
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="window"):
            eff.sliding_window_attention(q, k, v, bad)


# ----------------------------------------------------------------------------------------------
# linear attention
# ----------------------------------------------------------------------------------------------

def phi_numpy(x):
    """elu(x) + 1, written out."""
    return np.where(x > 0, x + 1.0, np.exp(x))


def linear_closed_form(q, k, v, causal, eps=1e-6):
    """out_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / (φ(q_i)ᵀ Σ_j φ(k_j) + eps), one query at a time."""
    fq, fk = phi_numpy(q), phi_numpy(k)
    N, S = q.shape[-2], k.shape[-2]
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for i in range(N):
        keys = slice(0, min(i + 1, S)) if causal else slice(0, S)
        state = np.einsum("...jd,...je->...de", fk[..., keys, :], v[..., keys, :])  # Σ φ(k_j) v_jᵀ
        z = fk[..., keys, :].sum(axis=-2)  # Σ φ(k_j)
        num = np.einsum("...d,...de->...e", fq[..., i, :], state)
        den = np.einsum("...d,...d->...", fq[..., i, :], z) + eps
        out[..., i, :] = num / den[..., None]
    return out


def linear_by_primitives(q, k, v, causal, eps=1e-6):
    """The quadratic form through tinyattn's autograd primitives (the gradient oracle)."""
    fq, fk = q.relu() + (q - q.relu()).exp(), k.relu() + (k - k.relu()).exp()
    a = fq @ fk.transpose(-2, -1)  # (..., N, S)
    if causal:
        a = a * ta.tensor(np.tril(np.ones(a.shape[-2:])))
    return (a @ v) / (a.sum(dim=-1, keepdim=True) + eps)


LINEAR_CASES = [(37, 37, False), (37, 37, True), (150, 100, True), (70, 130, True), (20, 9, False),
                (64, 64, True), (129, 129, True), (60, 61, True)]  # chunk boundaries at 64


@pytest.fixture(params=["default blocks", "small blocks"])
def linear_blocks(request, monkeypatch):
    """Run with the library's block sizes, and with tiny ones so that every case crosses many
    row blocks (the state carried from block to block) and chunks."""
    if request.param == "small blocks":
        monkeypatch.setattr(eff.linear, "_ROWS", 12)
        monkeypatch.setattr(eff.linear, "_CHUNK", 5)


@pytest.mark.parametrize("N,S,causal", LINEAR_CASES)
def test_linear_attention_equals_closed_form(N, S, causal, linear_blocks):
    rng = np.random.default_rng(N + S)
    q, k, v = qkv(rng, N, S)
    out = eff.linear_attention(q, k, v, is_causal=causal)
    err = rel_err(out, linear_closed_form(q.data, k.data, v.data, causal))
    assert err <= RTOL, f"linear N={N} S={S} causal={causal}: relative error {err:.2e}"


@pytest.mark.parametrize("N,S,causal", LINEAR_CASES)
def test_linear_attention_gradients_equal_autograd_of_quadratic_form(N, S, causal, linear_blocks):
    rng = np.random.default_rng(N * S)
    q, k, v = qkv(rng, N, S)
    assert_same_attention(
        lambda q, k, v: eff.linear_attention(q, k, v, is_causal=causal),
        lambda q, k, v: linear_by_primitives(q, k, v, causal),
        q, k, v, rng, f"linear N={N} S={S} causal={causal}")


@pytest.mark.parametrize("N,S", [(1100, 1100), (1100, 700), (600, 1300)])
def test_linear_attention_across_default_row_blocks(N, S):
    """Sequences longer than the 512-position loop step, causal, against the quadratic form."""
    rng = np.random.default_rng(N + 2 * S)
    q, k, v = qkv(rng, N, S, d=4, dv=3, lead=(1,))
    assert_same_attention(
        lambda q, k, v: eff.linear_attention(q, k, v, is_causal=True),
        lambda q, k, v: linear_by_primitives(q, k, v, True),
        q, k, v, rng, f"linear causal N={N} S={S}")


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_gradcheck(causal, linear_blocks):
    rng = np.random.default_rng(11)
    q, k, v = qkv(rng, 6, 5, d=3, dv=2, lead=(1, 2))
    assert ta.gradcheck(lambda q, k, v: eff.linear_attention(q, k, v, is_causal=causal), (q, k, v))


def test_linear_attention_weights_reproduce_the_output_and_sum_to_one():
    rng = np.random.default_rng(12)
    q, k, v = qkv(rng, 9, 9)
    for causal in (False, True):
        a = eff.linear_attention_weights(q, k, is_causal=causal)
        assert_close(a @ v.data, eff.linear_attention(q, k, v, is_causal=causal), rtol=1e-12,
                     atol=1e-12, what="A V")
        assert_close(a.sum(-1), np.ones(a.shape[:-1]), rtol=0, atol=1e-5, what="rows sum to 1 - eps")
        assert np.all(a >= 0)
        if causal:
            assert np.all(a[..., np.triu_indices(9, 1)[0], np.triu_indices(9, 1)[1]] == 0)


def test_elu_feature_map_values_and_gradient():
    x = ta.tensor(np.array([-30.0, -1.0, -1e-3, 0.0, 1e-3, 2.0, 800.0]), requires_grad=True)
    exp_neg = np.exp(np.minimum(x.data, 0))  # e^x where it is used (x ≤ 0)
    y = eff.elu_feature_map(x)
    assert_close(y, np.where(x.data > 0, x.data + 1.0, exp_neg), rtol=1e-15, atol=0, what="phi")
    assert np.all(y.data > 0)
    y.sum().backward()
    assert_close(x.grad, np.where(x.data > 0, 1.0, exp_neg), rtol=1e-15, atol=0, what="phi'")
    xs = ta.tensor(np.random.default_rng(13).standard_normal(8), requires_grad=True)
    assert ta.gradcheck(eff.elu_feature_map, xs)


# ----------------------------------------------------------------------------------------------
# grouped-query attention and the KV cache
# ----------------------------------------------------------------------------------------------

def gqa_by_hand(m, x, **sdpa_kwargs):
    """q/k/v projections written out, then SDPA with enable_gqa=True and the output projection."""
    B, T, E = x.shape
    D = m.head_dim
    q = (x.data @ m.q_proj.weight.data.T + m.q_proj.bias.data).reshape(B, T, m.num_heads, D)
    k = (x.data @ m.k_proj.weight.data.T + m.k_proj.bias.data).reshape(B, T, m.num_kv_heads, D)
    v = (x.data @ m.v_proj.weight.data.T + m.v_proj.bias.data).reshape(B, T, m.num_kv_heads, D)
    q, k, v = (ta.tensor(a.transpose(0, 2, 1, 3)) for a in (q, k, v))
    heads = F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **sdpa_kwargs)
    return heads.data.transpose(0, 2, 1, 3).reshape(B, T, E) @ m.out_proj.weight.data.T + m.out_proj.bias.data


@pytest.mark.parametrize("num_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("causal", [False, True])
def test_gqa_equals_sdpa_with_enable_gqa(num_kv_heads, causal):
    ta.manual_seed(14)
    m = eff.GroupedQueryAttention(16, 4, num_kv_heads).double()
    x = t64(np.random.default_rng(15), 2, 7, 16)
    out = m(x, is_causal=causal)
    assert out.shape == (2, 7, 16)
    assert_close(out, gqa_by_hand(m, x, is_causal=causal), rtol=1e-12, atol=1e-12, what="GQA")


def test_gqa_shares_each_kv_head_within_its_group():
    """Repeating each k/v head H/H_kv times and running plain MHA-style SDPA gives the same heads."""
    ta.manual_seed(16)
    m = eff.GroupedQueryAttention(24, 6, 2).double()
    x = t64(np.random.default_rng(17), 1, 5, 24)
    B, T, _ = x.shape
    k = m.k_proj(x).reshape(B, T, 2, 4).transpose(1, 2)  # (B, 2, T, 4)
    v = m.v_proj(x).reshape(B, T, 2, 4).transpose(1, 2)
    q = m.q_proj(x).reshape(B, T, 6, 4).transpose(1, 2)  # (B, 6, T, 4)
    kr, vr = k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1)  # heads 0,0,0,1,1,1
    heads = F.scaled_dot_product_attention(q, kr, vr)
    expected = m.out_proj(heads.transpose(1, 2).reshape(B, T, 24))
    assert_close(m(x), expected, rtol=1e-12, atol=1e-12, what="GQA vs repeated heads")
    assert m.k_proj.weight.shape == (8, 24) and m.q_proj.weight.shape == (24, 24)


def test_gqa_with_all_heads_is_multihead_attention():
    ta.manual_seed(18)
    m = eff.GroupedQueryAttention(12, 3, 3).double()
    mha = ta.nn.MultiheadAttention(12, 3, batch_first=True).double()
    mha.load_state_dict({
        "in_proj_weight": np.concatenate([m.q_proj.weight.data, m.k_proj.weight.data, m.v_proj.weight.data]),
        "in_proj_bias": np.concatenate([m.q_proj.bias.data, m.k_proj.bias.data, m.v_proj.bias.data]),
        "out_proj.weight": m.out_proj.weight.data, "out_proj.bias": m.out_proj.bias.data,
    })
    x = t64(np.random.default_rng(19), 2, 6, 12)
    causal = ta.nn.causal_mask(6)
    expected, _ = mha(x, x, x, attn_mask=causal, need_weights=False, is_causal=True)
    assert_close(m(x, is_causal=True), expected, rtol=1e-12, atol=1e-12, what="MHA")


@pytest.mark.parametrize("num_kv_heads", [4, 2, 1])
def test_kv_cache_decoding_equals_full_causal_forward(num_kv_heads):
    ta.manual_seed(20)
    m = eff.GroupedQueryAttention(16, 4, num_kv_heads).double()
    x = t64(np.random.default_rng(21), 2, 10, 16, requires_grad=False)
    full = m(x, is_causal=True)
    cache = eff.KVCache()
    steps = [m(x[:, t:t + 1], is_causal=True, cache=cache) for t in range(10)]
    assert_close(ta.cat(steps, dim=1), full, rtol=1e-12, atol=1e-13, what="one token at a time")
    assert len(cache) == 10
    assert cache.keys.shape == (2, num_kv_heads, 10, 4)
    assert cache.nbytes == eff.kv_cache_bytes(1, num_kv_heads, 4, 10, batch=2, bytes_per_element=8)


def test_kv_cache_chunked_prefill_uses_a_bottom_right_causal_mask():
    ta.manual_seed(22)
    m = eff.GroupedQueryAttention(16, 4, 2).double()
    x = t64(np.random.default_rng(23), 1, 9, 16, requires_grad=False)
    full = m(x, is_causal=True)
    cache = eff.KVCache()
    parts = [m(x[:, :4], is_causal=True, cache=cache),  # prefill
             m(x[:, 4:7], is_causal=True, cache=cache),  # 3 new queries after 4 cached keys
             m(x[:, 7:8], is_causal=True, cache=cache), m(x[:, 8:9], is_causal=True, cache=cache)]
    assert_close(ta.cat(parts, dim=1), full, rtol=1e-12, atol=1e-13, what="chunked prefill")


def test_kv_cache_without_causal_attends_all_cached_and_new_keys():
    ta.manual_seed(24)
    m = eff.GroupedQueryAttention(8, 2, 1).double()
    x = t64(np.random.default_rng(25), 1, 7, 8, requires_grad=False)
    cache = eff.KVCache()
    m(x[:, :4], cache=cache)
    got = m(x[:, 4:], cache=cache)  # queries 4..6 see keys 0..6
    assert_close(got, m(x).data[:, 4:], rtol=1e-12, atol=1e-13, what="non-causal with cache")


def test_kv_cache_append_gradient_reaches_only_the_new_positions():
    rng = np.random.default_rng(26)
    cache = eff.KVCache()
    k0, v0 = t64(rng, 1, 2, 3, 4), t64(rng, 1, 2, 3, 4)
    cache.append(k0, v0)
    k1, v1 = t64(rng, 1, 2, 2, 4), t64(rng, 1, 2, 2, 4)
    keys, values = cache.append(k1, v1)
    assert_close(keys, np.concatenate([k0.data, k1.data], axis=2), rtol=0, atol=0, what="keys")
    assert_close(values, np.concatenate([v0.data, v1.data], axis=2), rtol=0, atol=0, what="values")
    w = rng.standard_normal(keys.shape)
    (keys * ta.tensor(w)).sum().backward()
    assert_close(k1.grad, w[:, :, 3:], rtol=0, atol=0, what="new keys' gradient")
    assert k0.grad is None, "cached positions are detached"
    for _ in range(20):  # growth by doubling keeps the stored data intact
        cache.append(t64(rng, 1, 2, 1, 4), t64(rng, 1, 2, 1, 4))
    assert_close(cache.keys[:, :, :3], k0.data, rtol=0, atol=0, what="old keys after growth")
    assert len(cache) == 25


def test_kv_cache_bytes_of_a_7b_class_model():
    # 32 layers, 32 heads of 128, 4096 tokens, fp16: 2 · 32 · 4096 · 32 · 128 · 2 B = 2 GiB
    assert eff.kv_cache_bytes(32, 32, 128, 4096) == 2 * 1024 ** 3
    assert eff.kv_cache_bytes(32, 8, 128, 4096) == 512 * 1024 ** 2  # GQA with 8 kv heads
    assert eff.kv_cache_bytes(32, 1, 128, 4096) == 64 * 1024 ** 2  # MQA


def test_gqa_rejects_invalid_sizes():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        eff.GroupedQueryAttention(10, 4, 2)
    with pytest.raises(ValueError, match="not a multiple of num_kv_heads"):
        eff.GroupedQueryAttention(12, 4, 3)
    for bad in (0, -2):
        with pytest.raises(ValueError, match="num_kv_heads must be a positive int"):
            eff.GroupedQueryAttention(12, 4, bad)
    m = eff.GroupedQueryAttention(8, 2, 1)
    with pytest.raises(ValueError, match=r"expected \(B, T, 8\)"):
        m(ta.randn(2, 3, 6))
    with pytest.raises(ValueError, match=r"expected \(B, T, 8\)"):
        m(ta.randn(3, 8))
    cache = eff.KVCache()
    m(ta.randn(2, 3, 8), cache=cache)
    with pytest.raises(ValueError, match="batch, heads, head_dim and dtype must match"):
        m(ta.randn(1, 1, 8), cache=cache)


# ----------------------------------------------------------------------------------------------
# the numbers behind the figures
# ----------------------------------------------------------------------------------------------

def test_flash_error_table_shows_round_off_in_float64_and_float32_parity():
    from tinyattn.gallery import efficient as gallery

    t = gallery.flash_error_table(sizes=(70, 150), d=8, block=32)
    assert max(max(errs) for errs in t["flash64"].values()) < 1e-13
    for name in ("output", "dq"):
        for flash32, plain32 in zip(t["flash32"][name], t["plain32"][name]):
            assert 1e-9 < flash32 < 1e-5 and flash32 < 10 * plain32


def test_linear_vs_softmax_distance_is_small_only_for_small_logits():
    from tinyattn.gallery import efficient as gallery

    d = gallery.linear_vs_softmax_distance([0.01, 1.0, 8.0], N=32, d=8)
    assert d["tv"][0] < 0.01 and d["output_error"][0] < 0.05
    assert d["tv"][2] > 0.5 and d["tv"][0] < d["tv"][1] < d["tv"][2]


def test_below_diagonal_clip_of_a_tile():
    from tinyattn.gallery import efficient as gallery

    square = [(0, 0), (4, 0), (4, 4), (0, 4)]  # (j, i) corners of a diagonal tile
    kept = gallery.below_diagonal(square)
    area = 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(kept, kept[1:] + kept[:1])))
    assert area == 8.0 and all(x <= y for x, y in kept)
    assert gallery.below_diagonal([(5, 0), (9, 0), (9, 4), (5, 4)]) == []  # entirely above


def test_the_registry_holds_every_variant_with_its_claims():
    names = {v.name for v in eff.variants()}
    assert {"flash", "sliding_window", "linear", "gqa"} <= names
    assert all(v.kind == "attention" for v in eff.variants("attention"))
    with pytest.raises(ValueError, match="registered already"):
        eff.register(eff.get("flash"))
    with pytest.raises(KeyError, match="no efficient-attention variant named 'nope'"):
        eff.get("nope")
    with pytest.raises(ValueError, match="approximate variant says what bounds"):
        eff.Variant("x", "attention", "approximate", "p", "t", "m", "s", attend=len, reference=len)


@pytest.mark.parametrize("name,causal", [(v.name, c) for v in eff.variants("attention") for c in (False, True)
                                         if v.claim in ("exact", "exact under its mask") and (v.causal or not c)])
def test_every_exact_attention_variant_equals_its_dense_reference(name, causal):
    """What the registry claims, checked on the registry's own callables (new variants included)."""
    variant = eff.get(name)
    rng = np.random.default_rng(7)
    q, k, v = qkv(rng, 70, 70, lead=(2, 3))
    out = variant.attend(q, k, v, is_causal=causal, **variant.options).numpy()
    np.testing.assert_allclose(out, variant.reference(q.numpy(), k.numpy(), v.numpy(), is_causal=causal,
                                                      **variant.options), rtol=1e-10, atol=1e-12)
