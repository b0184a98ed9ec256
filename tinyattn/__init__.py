"""tinyattn: attention built from scratch in NumPy, to learn it by building it.

    import tinyattn as ta
    x = ta.randn(2, 5, 16, requires_grad=True)
    mha = ta.nn.MultiheadAttention(16, 4, batch_first=True)
    out, weights = mha(x, x, x)
    out, per_head = mha(x, x, x, average_attn_weights=False)  # (N, H, L, S)
    ta.viz.head_view(list("abcde"), per_head[0])              # example 0's heads as an interactive page
"""

from . import efficient, kernels, nn, optim, viz
from .autograd import (
    Tensor, arange, bool_, cat, enable_grad, float32, float64, full, get_rng, gradcheck, int64,
    is_grad_enabled, manual_seed, no_grad, ones, ones_like, rand, randn, stack, tensor,
    unbroadcast, where, zeros, zeros_like,
)
from .serialization import load, save
from .threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "no_grad", "enable_grad", "is_grad_enabled", "manual_seed", "get_rng",
    "zeros", "ones", "zeros_like", "ones_like", "full", "randn", "rand", "arange", "cat", "stack",
    "where", "unbroadcast", "gradcheck", "save", "load", "nn", "optim", "efficient", "set_num_threads",
    "get_num_threads", "kernels", "viz",
    "float32", "float64", "int64", "bool_",
]
