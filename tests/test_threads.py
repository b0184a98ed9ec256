"""ta.set_num_threads / get_num_threads drive NumPy's OpenBLAS."""

from __future__ import annotations

import numpy as np
import pytest

import tinyattn as ta


def test_set_num_threads_round_trip_and_results_unchanged():
    before = ta.get_num_threads()
    if before is None:
        assert ta.set_num_threads(1) is False  # no OpenBLAS found: reported, nothing changed
        return
    a = np.random.default_rng(0).standard_normal((300, 200))
    reference = a @ a.T
    try:
        assert ta.set_num_threads(1) is True and ta.get_num_threads() == 1
        np.testing.assert_allclose(a @ a.T, reference, rtol=1e-12)
        assert ta.set_num_threads(2) is True and ta.get_num_threads() == 2
    finally:
        ta.set_num_threads(before)
    assert ta.get_num_threads() == before


def test_set_num_threads_rejects_nonpositive():
    with pytest.raises(ValueError, match="positive"):
        ta.set_num_threads(0)
