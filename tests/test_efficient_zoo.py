"""The efficient-attention zoo: Performer, Linformer, Nyströmformer, block-sparse (BigBird) and
Reformer LSH attention, each held to its registry claim; every attend gradchecked in float64."""

from __future__ import annotations

import numpy as np
import pytest

import tinyattn as ta
from tinyattn import efficient as eff
from tinyattn.efficient.common import dense_attention
from tinyattn.nn import functional as F

from helpers import import_torch, t64, torch_parity


def qkv(rng, L, S, D=6, dv=5, lead=(2, 3)):
    return t64(rng, *lead, L, D), t64(rng, *lead, S, D), t64(rng, *lead, S, dv)


def rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# Performer (FAVOR+)
# ----------------------------------------------------------------------------------------------

def kernel_draws(q, k, m, seeds):
    """φ(√s q) φ(√s k)ᵀ for each seed: (n, L, S), and the exact kernel exp(s q kᵀ)."""
    s = 1 / np.sqrt(q.shape[-1])
    est = []
    for seed in seeds:
        omega = eff.orthogonal_random_features(m, q.shape[-1], seed)
        fq = eff.favor_features(ta.tensor(q * np.sqrt(s)), omega).numpy()
        fk = eff.favor_features(ta.tensor(k * np.sqrt(s)), omega).numpy()
        est.append(fq @ fk.T)
    return np.array(est), np.exp(s * q @ k.T)


def test_orthogonal_features_are_orthogonal_within_a_block_and_gaussian_in_length():
    omega = eff.orthogonal_random_features(40, 8, seed=3)  # 5 blocks of 8
    assert omega.shape == (40, 8)
    block = omega[:8] / np.linalg.norm(omega[:8], axis=1, keepdims=True)
    np.testing.assert_allclose(block @ block.T, np.eye(8), atol=1e-12)
    norms2 = np.sum(eff.orthogonal_random_features(8000, 8, seed=4) ** 2, axis=1)  # chi²(8): mean 8, var 16
    assert abs(norms2.mean() - 8) < 4 * np.sqrt(16 / 8000)


def test_performer_kernel_estimate_is_unbiased():
    rng = np.random.default_rng(0)
    q, k = 0.5 * rng.standard_normal((5, 16)), 0.5 * rng.standard_normal((6, 16))
    est, exact = kernel_draws(q, k, 32, range(400))
    mean, sd = est.mean(axis=0), est.std(axis=0, ddof=1)
    z = (mean - exact) / (sd / np.sqrt(len(est)))  # a z-score per (i, j)
    assert np.abs(z).max() < 4, np.abs(z).max()
    assert np.abs(mean / exact - 1).mean() < 0.02


def test_performer_kernel_error_falls_like_one_over_root_m():
    rng = np.random.default_rng(1)
    q, k = 0.5 * rng.standard_normal((5, 16)), 0.5 * rng.standard_normal((6, 16))
    ms = np.array([16, 64, 256, 1024])
    errs = []
    for m in ms:
        est, exact = kernel_draws(q, k, m, range(60))
        errs.append(rms(est / exact - 1))  # RMS over draws and pairs of one draw's relative error
    slope = np.polyfit(np.log(ms), np.log(errs), 1)[0]
    assert -0.65 < slope < -0.35, (slope, errs)


def test_performer_output_error_shrinks_with_the_number_of_features():
    rng = np.random.default_rng(2)
    q, k, v = (ta.tensor(rng.standard_normal((2, 48, 8)) * c) for c in (0.5, 0.5, 1.0))
    exact = dense_attention(q.numpy(), k.numpy(), v.numpy())
    errs = [np.mean([rms(eff.performer_attention(q, k, v, num_features=m, seed=s).numpy() - exact)
                     for s in range(4)]) for m in (16, 64, 256, 1024)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.3 * errs[0], errs


@pytest.mark.parametrize("L,S,causal", [(70, 70, False), (70, 70, True), (130, 90, True), (40, 75, True)])
def test_performer_equals_its_own_dense_form(L, S, causal):
    rng = np.random.default_rng(3)
    q, k, v = qkv(rng, L, S)
    out = eff.performer_attention(q, k, v, is_causal=causal, num_features=20, seed=5).numpy()
    weights = eff.performer_weights(q, k, is_causal=causal, num_features=20, seed=5)  # (..., L, S)
    np.testing.assert_allclose(out, weights @ v.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_performer_gradcheck(causal):
    rng = np.random.default_rng(4)
    q, k, v = qkv(rng, 7, 7, D=3, dv=2, lead=(1, 2))
    assert ta.gradcheck(lambda a, b, c: eff.performer_attention(a, b, c, is_causal=causal, num_features=6,
                                                                seed=1), (q, k, v))


def test_performer_bad_option():
    q, k, v = qkv(np.random.default_rng(0), 4, 4)
    with pytest.raises(ValueError, match="num_features"):
        eff.performer_attention(q, k, v, num_features=0)


# ----------------------------------------------------------------------------------------------
# Linformer
# ----------------------------------------------------------------------------------------------

def test_linformer_with_identity_projections_is_exact_attention():
    rng = np.random.default_rng(5)
    q, k, v = qkv(rng, 9, 12)
    eye = np.eye(12)
    out = eff.linformer_attention(q, k, v, proj_len=12, E=eye, F=eye).numpy()
    np.testing.assert_allclose(out, dense_attention(q.numpy(), k.numpy(), v.numpy()), rtol=1e-12, atol=1e-14)


def test_linformer_weights_have_rank_at_most_k_and_give_the_output():
    rng = np.random.default_rng(6)
    q, k, v = qkv(rng, 32, 32, lead=(2,))
    w = eff.linformer_weights(q, k, proj_len=5, seed=2)  # (2, 32, 32)
    assert [np.linalg.matrix_rank(x) for x in w] == [5, 5]
    np.testing.assert_allclose(w @ v.numpy(), eff.linformer_attention(q, k, v, proj_len=5, seed=2).numpy(),
                               rtol=1e-10, atol=1e-12)


def test_linformer_error_falls_with_k_but_untrained_stays_large():
    rng = np.random.default_rng(7)
    q, k, v = qkv(rng, 64, 64, D=16, dv=16, lead=(4,))
    exact = dense_attention(q.numpy(), k.numpy(), v.numpy())
    errs = [np.mean([rms(eff.linformer_attention(q, k, v, proj_len=p, seed=s).numpy() - exact)
                     for s in range(6)]) for p in (4, 8, 16, 32, 64)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] > rms(exact), "the docstring: above the size of the output until k nears S"


def test_linformer_gradcheck_including_learnable_projections():
    rng = np.random.default_rng(8)
    q, k, v = qkv(rng, 5, 6, D=3, dv=2, lead=(1, 2))
    E, F_ = t64(rng, 3, 6), t64(rng, 3, 6)
    assert ta.gradcheck(lambda a, b, c, e, f: eff.linformer_attention(a, b, c, proj_len=3, E=e, F=f),
                        (q, k, v, E, F_))
    module = eff.Linformer(6, 3, dtype=np.float64)
    module(q, k, v).sum().backward()
    assert module.E.grad.shape == (3, 6) and np.abs(module.F.grad).sum() > 0


def test_linformer_bad_options():
    q, k, v = qkv(np.random.default_rng(0), 4, 6)
    with pytest.raises(ValueError, match="proj_len"):
        eff.linformer_attention(q, k, v, proj_len=0)
    with pytest.raises(ValueError, match=r"E has shape \(2, 5\), expected \(proj_len, S\) = \(2, 6\)"):
        eff.linformer_attention(q, k, v, proj_len=2, E=np.zeros((2, 5)))
    with pytest.raises(ValueError, match="is_causal"):
        eff.linformer_attention(q, k, v, is_causal=True)


# ----------------------------------------------------------------------------------------------
# Nyströmformer
# ----------------------------------------------------------------------------------------------

def test_nystrom_with_every_token_a_landmark_is_exact():
    rng = np.random.default_rng(9)
    q, k, v = qkv(rng, 16, 16)
    out = eff.nystrom_attention(q, k, v, num_landmarks=16).numpy()
    err = np.abs(out - dense_attention(q.numpy(), k.numpy(), v.numpy())).max()
    assert err < 1e-8, err


def nystrom_errors(pinv_iterations):
    rng = np.random.default_rng(10)
    q, k, v = qkv(rng, 128, 128, D=16, dv=16, lead=(2, 2))
    exact = dense_attention(q.numpy(), k.numpy(), v.numpy())
    return [rms(eff.nystrom_attention(q, k, v, num_landmarks=m, pinv_iterations=pinv_iterations).numpy()
                - exact) for m in (4, 8, 16, 32, 64)], rms(exact)


def test_nystrom_error_falls_with_landmarks_with_the_papers_iterative_pinv():
    errs, size = nystrom_errors(6)
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[0] < size  # better than predicting zero


def test_nystrom_with_the_exact_pinv_is_not_monotone_on_gaussian_inputs():
    """The docstring's measured remark: Ã is ill-conditioned, its exact pseudo-inverse huge."""
    errs, size = nystrom_errors(None)
    assert any(b > a for a, b in zip(errs, errs[1:])) and max(errs) > 5 * size, (errs, size)


@pytest.mark.parametrize("iterations", [None, 6])
def test_nystrom_attend_equals_its_numpy_reference(iterations):
    rng = np.random.default_rng(11)
    q, k, v = qkv(rng, 21, 17)
    out = eff.nystrom_attention(q, k, v, num_landmarks=5, pinv_iterations=iterations).numpy()
    ref = eff.nystrom_reference(q.numpy(), k.numpy(), v.numpy(), num_landmarks=5, pinv_iterations=iterations)
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-11)


def test_pinv_gradcheck_and_iterative_pinv_converges():
    rng = np.random.default_rng(12)
    assert ta.gradcheck(eff.pinv, t64(rng, 2, 3, 5))
    assert ta.gradcheck(eff.pinv, t64(rng, 4, 3))
    a = ta.tensor(np.eye(6) + 0.2 * rng.standard_normal((6, 6)))
    gap = [np.abs(eff.iterative_pinv(a, n).numpy() - np.linalg.inv(a.numpy())).max() for n in (1, 3, 8)]
    assert gap[0] > gap[1] > gap[2] and gap[2] < 1e-12, gap


@pytest.mark.parametrize("iterations", [None, 3])
def test_nystrom_gradcheck(iterations):
    rng = np.random.default_rng(13)
    q, k, v = qkv(rng, 8, 6, D=3, dv=2, lead=(1, 2))
    assert ta.gradcheck(lambda a, b, c: eff.nystrom_attention(a, b, c, num_landmarks=3,
                                                              pinv_iterations=iterations), (q, k, v))


def test_nystrom_bad_options():
    q, k, v = qkv(np.random.default_rng(0), 4, 6)
    with pytest.raises(ValueError, match="num_landmarks 5 exceeds min"):
        eff.nystrom_attention(q, k, v, num_landmarks=5)
    with pytest.raises(ValueError, match="is_causal"):
        eff.nystrom_attention(q, k, v, num_landmarks=2, is_causal=True)


# ----------------------------------------------------------------------------------------------
# block-sparse (BigBird)
# ----------------------------------------------------------------------------------------------

BS_CASES = [  # (L, S, block, window, num_global, num_random, causal)
    (70, 70, 8, 1, 1, 1, False), (70, 70, 8, 1, 1, 2, True), (45, 61, 4, 2, 2, 1, False),
    (61, 45, 4, 0, 1, 1, True), (33, 33, 5, 1, 0, 0, False),
]


@pytest.mark.parametrize("L,S,b,w,g,r,causal", BS_CASES)
def test_block_sparse_equals_sdpa_under_its_mask_forward_and_backward(L, S, b, w, g, r, causal):
    rng = np.random.default_rng(14)
    q, k, v = qkv(rng, L, S)
    mask = eff.block_sparse_mask(L, S, b, w, g, r, seed=3, is_causal=causal)
    out = eff.block_sparse_attention(q, k, v, is_causal=causal, block=b, window=w, num_global=g,
                                     num_random=r, seed=3)
    q2, k2, v2 = (ta.tensor(t.numpy(), requires_grad=True) for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=mask)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-12, atol=1e-13)
    cot = rng.standard_normal(out.shape)
    out.backward(cot)
    ref.backward(cot)
    for a, e in zip((q, k, v), (q2, k2, v2)):
        np.testing.assert_allclose(a.grad, e.grad, rtol=1e-10, atol=1e-12)


def test_block_sparse_matches_torch_sdpa_with_the_mask():
    torch = import_torch()
    rng = np.random.default_rng(15)
    arrays = [rng.standard_normal((2, 2, 50, 6)), rng.standard_normal((2, 2, 50, 6)),
              rng.standard_normal((2, 2, 50, 4))]
    mask = eff.block_sparse_mask(50, 50, 8, 1, 1, 1, seed=4, is_causal=True)
    torch_parity(lambda a, b, c: eff.block_sparse_attention(a, b, c, is_causal=True, block=8, seed=4),
                 lambda a, b, c: torch.nn.functional.scaled_dot_product_attention(
                     a, b, c, attn_mask=torch.tensor(mask)), arrays, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_block_sparse_gradcheck(causal):
    rng = np.random.default_rng(16)
    q, k, v = qkv(rng, 11, 9, D=3, dv=2, lead=(1, 2))
    assert ta.gradcheck(lambda a, b, c: eff.block_sparse_attention(a, b, c, is_causal=causal, block=3,
                                                                   window=0, num_random=1, seed=2), (q, k, v))


def test_block_sparse_cost_is_the_mask_block_count_and_linear_in_L():
    b = 16
    for L, causal in [(200, False), (200, True), (333, True)]:
        rows, cols = eff.block_sparse_pairs(L, L, b, 1, 1, 2, seed=0, is_causal=causal)
        mask = eff.block_sparse_mask(L, L, b, 1, 1, 2, seed=0, is_causal=causal)
        n = -(-L // b)
        padded = np.zeros((n * b, n * b), dtype=bool)
        padded[:L, :L] = mask
        touched = padded.reshape(n, b, n, b).any(axis=(1, 3))  # blocks the mask uses
        assert set(zip(rows.tolist(), cols.tolist())) == set(zip(*np.nonzero(touched)))
    cost = {L: len(eff.block_sparse_pairs(L, L, b, 1, 1, 2, seed=0)[0]) * b * b
            for L in (512, 1024, 2048, 4096)}
    for L in (512, 1024, 2048):
        assert 1.95 < cost[2 * L] / cost[L] < 2.05, cost  # linear, not quadratic
    assert cost[4096] < 0.03 * 4096 ** 2  # dense would be 4096²


def test_block_sparse_bad_option():
    q, k, v = qkv(np.random.default_rng(0), 4, 4)
    with pytest.raises(ValueError, match="block"):
        eff.block_sparse_attention(q, k, v, block=0)
    with pytest.raises(ValueError, match="num_random"):
        eff.block_sparse_attention(q, k, v, num_random=-1)


# ----------------------------------------------------------------------------------------------
# Reformer LSH
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [64, 32])
def test_lsh_with_one_bucket_and_covering_chunks_is_exact(causal, chunk):
    rng = np.random.default_rng(17)
    q, _, v = qkv(rng, 64, 64)
    out = eff.lsh_attention(q, q, v, is_causal=causal, n_buckets=1, n_rounds=1, chunk_size=chunk).numpy()
    exact = dense_attention(q.numpy(), unit(q.numpy()), v.numpy(), is_causal=causal)
    np.testing.assert_allclose(out, exact, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("causal", [False, True])
def test_lsh_is_softmax_attention_on_the_union_of_its_rounds(causal):
    rng = np.random.default_rng(18)
    q, _, v = qkv(rng, 64, 64)
    out = eff.lsh_attention(q, q, v, is_causal=causal, n_buckets=8, n_rounds=3, chunk_size=16).numpy()
    mask = eff.lsh_mask(q, 8, 3, 16, is_causal=causal)
    assert 0.05 < mask.mean() < 0.5  # genuinely sparse, genuinely multi-round
    expected = dense_attention(q.numpy(), unit(q.numpy()), v.numpy(), mask=mask)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-14)


def test_lsh_recall_of_top_keys_grows_with_hash_rounds():
    rng = np.random.default_rng(19)
    centers = unit(rng.standard_normal((8, 32)))
    x = 3 * centers[rng.integers(0, 8, 256)] + 0.6 * rng.standard_normal((256, 32))  # clustered queries
    scores = x @ unit(x).T
    np.fill_diagonal(scores, -np.inf)  # a query always sees itself: leave it out of the count
    top = np.argsort(-scores, axis=1)[:, :8]  # (L, 8) true top keys
    recall = [np.take_along_axis(eff.lsh_mask(x, 16, n, 32, seed=1), top, axis=1).mean() for n in range(1, 9)]
    assert all(a <= b for a, b in zip(recall, recall[1:])), recall
    assert recall[-1] > 0.8 and recall[-1] > recall[0] + 0.1, recall


@pytest.mark.parametrize("causal", [False, True])
def test_lsh_gradcheck(causal):
    rng = np.random.default_rng(20)
    q, v = t64(rng, 1, 2, 8, 3), t64(rng, 1, 2, 8, 2)
    assert ta.gradcheck(lambda a, c: eff.lsh_attention(a, a, c, is_causal=causal, n_buckets=4, n_rounds=2,
                                                       chunk_size=2, seed=3), (q, v))


def test_lsh_bad_options():
    q, _, v = qkv(np.random.default_rng(0), 8, 8)
    with pytest.raises(ValueError, match="n_buckets must be 1 or even"):
        eff.lsh_attention(q, q, v, n_buckets=3)
    with pytest.raises(ValueError, match="chunk_size 3"):
        eff.lsh_attention(q, q, v, chunk_size=3)
    with pytest.raises(ValueError, match="shared-QK"):
        eff.lsh_attention(q, q[..., :4, :], v[..., :4, :])


def test_the_zoo_is_registered_with_its_claims():
    claims = {v.name: (v.claim, v.causal) for v in eff.variants("attention")}
    assert claims["performer"] == ("unbiased", True)
    assert claims["block_sparse"] == ("exact under its mask", True)
    assert claims["linformer"] == ("approximate", False) and claims["nystrom"] == ("approximate", False)
    assert claims["lsh"] == ("approximate", True)


@pytest.mark.parametrize("attend", [eff.performer_attention, eff.block_sparse_attention,
                                    lambda q, k, v: eff.lsh_attention(q, q, v)])
def test_no_queries_give_an_empty_output(attend):
    empty = ta.tensor(np.zeros((2, 0, 4)), requires_grad=True)
    out = attend(empty, empty, empty)
    assert out.shape == (2, 0, 4)
