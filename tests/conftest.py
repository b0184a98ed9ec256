"""Test-session settings."""

from __future__ import annotations

import os

# Tests and notebook kernels work on small arrays, where one BLAS thread is fastest (waking a
# second thread per tiny matrix product costs more than the product). Kernels inherit this.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import tinyattn as ta  # noqa: E402

ta.set_num_threads(int(os.environ["OPENBLAS_NUM_THREADS"]))
