"""Rotary position embeddings: closed form (complex numbers in NumPy), gradcheck, relative
positions, errors."""

from __future__ import annotations

import numpy as np
import pytest

import tinyattn as ta
import tinyattn.nn.functional as F
from helpers import assert_close


def np_rope(x: np.ndarray, positions: np.ndarray, base: float = 10000.0) -> np.ndarray:
    """RoPE as complex multiplication: z_i = x_2i + i x_2i+1 times e^(i p θ_i), θ_i = base^(−2i/D)."""
    D = x.shape[-1]
    theta = np.array([base ** (-2 * i / D) for i in range(D // 2)])
    z = x[..., 0::2] + 1j * x[..., 1::2]  # (..., L, D/2)
    z = z * np.exp(1j * positions[:, None] * theta)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


@pytest.mark.parametrize("shape, positions", [((7, 4), None), ((2, 3, 6, 8), np.array([0, 5, 2, 9, 1, 3]))])
def test_rope_equals_complex_rotation(shape, positions):
    x = np.random.default_rng(0).standard_normal(shape)
    pos = np.arange(shape[-2]) if positions is None else positions
    assert_close(F.apply_rotary_pos_emb(ta.tensor(x), positions), np_rope(x, pos), rtol=1e-12, atol=1e-13,
                 what="rope vs complex rotation")


def test_rope_position_zero_is_identity_and_norms_are_kept():
    x = np.random.default_rng(1).standard_normal((5, 16))
    y = F.apply_rotary_pos_emb(ta.tensor(x)).data
    assert_close(y[0], x[0], rtol=0, atol=0, what="position 0")
    assert_close(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-13, what="norms")
    assert not np.allclose(y[1:], x[1:])


def test_rope_float32_stays_float32():
    x = ta.tensor(np.ones((3, 4), dtype=np.float32))
    assert F.apply_rotary_pos_emb(x).dtype == np.float32


def test_rope_gradcheck():
    rng = np.random.default_rng(2)
    x = ta.tensor(rng.standard_normal((2, 5, 6)), requires_grad=True)
    assert ta.gradcheck(lambda t: F.apply_rotary_pos_emb(t), x)
    assert ta.gradcheck(lambda t: F.apply_rotary_pos_emb(t, positions=np.array([4, 0, 7, 7, 2]), base=3.0), x)


def test_rope_backward_is_the_inverse_rotation():
    # L = Σ w ∘ rope(x): dL/dx = rope⁻¹(w), the rotation by −pθ (closed form, complex conjugate)
    rng = np.random.default_rng(3)
    x = ta.tensor(rng.standard_normal((4, 8)), requires_grad=True)
    w = rng.standard_normal((4, 8))
    F.apply_rotary_pos_emb(x).backward(w)
    assert_close(x.grad, np_rope(w, -np.arange(4.0)), rtol=1e-12, atol=1e-13, what="dL/dx")


def test_rope_scores_depend_only_on_the_offset():
    rng = np.random.default_rng(4)
    D, L = 16, 40
    q, k = rng.standard_normal(D), rng.standard_normal(D)
    Q = F.apply_rotary_pos_emb(ta.tensor(np.tile(q, (L, 1)))).data  # (L, D): q at every position
    K = F.apply_rotary_pos_emb(ta.tensor(np.tile(k, (L, 1)))).data
    scores = Q @ K.T  # (L, L): q at position p against k at position j
    for offset in range(-L + 1, L):
        diagonal = np.diagonal(scores, offset=-offset)  # entries with p − j = offset
        assert np.ptp(diagonal) < 1e-12 * np.abs(scores).max(), f"p − j = {offset}: spread {np.ptp(diagonal)}"
    # and the value is the closed form Re Σ z_q conj(z_k) e^(i offset θ)
    theta = 10000.0 ** (-np.arange(0, D, 2) / D)
    zq, zk = q[0::2] + 1j * q[1::2], k[0::2] + 1j * k[1::2]
    for offset in (-7, 0, 3, 25):
        expected = np.real(np.sum(zq * np.conj(zk) * np.exp(1j * offset * theta)))
        assert abs(np.diagonal(scores, offset=-offset)[0] - expected) < 1e-12


@pytest.mark.parametrize("shape, positions, message", [
    ((4, 5), None, r"\(4, 5\).*even D"),
    ((6,), None, r"\(6,\).*even D"),
    ((3, 4), np.arange(4), r"positions has shape \(4,\); expected \(3,\)"),
])
def test_rope_errors_name_the_shape(shape, positions, message):
    with pytest.raises(ValueError, match=message):
        F.apply_rotary_pos_emb(ta.tensor(np.zeros(shape)), positions)
