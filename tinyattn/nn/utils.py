"""Training utilities with ``torch.nn.utils``'s names."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(parameters, max_norm: float) -> float:
    """Scale all gradients in place so their joint L2 norm is at most ``max_norm``; return the norm before.

    norm = sqrt(Σ_p ‖g_p‖²); when norm > max_norm every g_p ← g_p · max_norm / (norm + 1e-6)
    (torch.nn.utils.clip_grad_norm_ with norm_type 2). Parameters without a gradient are skipped.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be > 0, got {max_norm!r}")
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    scale = max_norm / (norm + 1e-6)
    if scale < 1:
        for g in grads:
            g *= g.dtype.type(scale)
    return norm
