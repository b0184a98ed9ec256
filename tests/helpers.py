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


def torch_parity(fn_ta, fn_torch, arrays, rtol: float = 1e-6, atol: float = 1e-9, seed: int = 0) -> None:
    """Apply both functions to float64 copies of ``arrays``, backprop the same random cotangent,
    and compare the outputs and every input's gradient (a missing gradient counts as zeros)."""
    import torch

    xs_ta = [ta.tensor(a, requires_grad=True) for a in arrays]
    xs_t = [torch.tensor(a, requires_grad=True) for a in arrays]
    out_ta, out_t = fn_ta(*xs_ta), fn_torch(*xs_t)
    assert_close(out_ta, out_t.detach().numpy(), rtol=rtol, atol=atol, what="forward")
    cot = np.random.default_rng(seed).standard_normal(out_t.shape)
    out_ta.backward(cot)
    out_t.backward(torch.tensor(cot))
    for i, (a, b) in enumerate(zip(xs_ta, xs_t)):
        expected = np.zeros_like(a.data) if b.grad is None else b.grad.numpy()
        got = np.zeros_like(a.data) if a.grad is None else a.grad
        assert_close(got, expected, rtol=rtol, atol=atol, what=f"gradient of input {i}")


def sdpa_masks(rng: np.random.Generator) -> dict:
    """Attention masks of every kind for scores of shape (2, 3, 5, 7): bool and float, broadcast,
    1-D, with fully masked rows and with -inf entries (bool True = may attend)."""
    return {
        "none": None,
        "bool": rng.random((1, 1, 5, 7)) < 0.7,
        "bool-full-rows": np.concatenate([np.zeros((1, 7), bool), rng.random((4, 7)) < 0.6]),
        "float": rng.standard_normal((2, 1, 5, 7)),
        "float-inf": np.where(rng.random((5, 7)) < 0.3, -np.inf, rng.standard_normal((5, 7))),
        "bool-1d": rng.random(7) < 0.6,
        "float-1d": rng.standard_normal(7),
    }


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
