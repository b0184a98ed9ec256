"""Shared test helpers."""

from __future__ import annotations

import os

import numpy as np
import pytest

import tinyattn as ta


def import_torch():
    """PyTorch, the optional oracle: the calling test module is skipped without it, except in
    CI (TINYATTN_REQUIRE_TORCH=1), where a missing torch is an error rather than a silent skip."""
    if os.environ.get("TINYATTN_REQUIRE_TORCH") == "1":
        import torch

        return torch
    return pytest.importorskip("torch")


def t64(rng: np.random.Generator, *shape, requires_grad: bool = True) -> ta.Tensor:
    """A float64 tinyattn tensor of standard normals."""
    return ta.tensor(rng.standard_normal(shape), requires_grad=requires_grad)


def assert_close(actual, expected, rtol: float = 1e-6, atol: float = 1e-9, what: str = "") -> None:
    """Compare arrays/tensors elementwise with a message naming the worst element."""
    a = actual.data if isinstance(actual, ta.Tensor) else np.asarray(actual)
    e = expected.data if isinstance(expected, ta.Tensor) else np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != expected {e.shape}"
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=what)


SEED_SNIPPET = '''
import torch
import torch.nn as nn

class TransformerEncoder(nn.Module):
    def __init__(self, d_model, nhead, num_layers, dim_feedforward=2048, dropout=0.1):
        super(TransformerEncoder, self).__init__()
        encoder_layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout)
        self.transformer_encoder = nn.TransformerEncoder(encoder_layer, num_layers)

    def forward(self, src, src_mask=None, src_key_padding_mask=None):
        output = self.transformer_encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask)
        return output
'''


def seed_snippet(library: str = "tinyattn"):
    """The seed article's section-5 class, compiled from its text; for "tinyattn" the only change
    is ``torch.nn`` -> ``tinyattn.nn`` (the promise that the snippet runs unchanged)."""
    code = SEED_SNIPPET
    if library == "tinyattn":
        code = code.replace("import torch.nn as nn", "import tinyattn.nn as nn").replace("import torch\n", "import tinyattn\n")
    namespace = {}
    exec(compile(code, f"seed_snippet_{library}", "exec"), namespace)
    return namespace["TransformerEncoder"]
