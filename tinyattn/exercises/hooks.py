"""Library hooks the tutorial exercises need: experiments of the notebooks, opened up.

``depth_stats`` is the depth experiment of notebook 05 (``gallery.encoder.depth_stats``) with one
more argument, ``init``, so that exercise 2 of notebook 05 can re-run it with another
initialization of the layers.
"""

from __future__ import annotations

import numpy as np

from .. import autograd, nn

__all__ = ["depth_stats"]


def depth_stats(norm_first: bool, num_layers: int, init=None, d_model: int = 32, nhead: int = 4,
                dim_feedforward: int = 128, seq_len: int = 10, batch: int = 4, seed: int = 0) -> dict:
    """Gradient norms, layer by layer, of a freshly initialized stack of encoder layers.

    ``num_layers`` independently initialized ``TransformerEncoderLayer``s (float64, dropout 0),
    each passed to ``init(layer)`` when given (e.g. to re-initialize its feed-forward weights;
    the default keeps PyTorch's initialization), a final LayerNorm when ``norm_first``; input x
    (batch, seq_len, d_model) ~ N(0, 1), loss = mean((out − y)²) for a random y. Returns arrays
    over layers: ``param_grad`` (norm of the gradients of the layer's weight matrices),
    ``input_grad`` (norm of dloss/d(layer input)) and ``residual_rms`` (root mean square of the
    layer's input: the residual stream). With ``init=None`` it equals notebook 05's experiment.
    """
    autograd.manual_seed(seed)
    layers = [nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0, batch_first=True,
                                         norm_first=norm_first).double() for _ in range(num_layers)]
    if init is not None:
        for layer in layers:
            init(layer)
    final_norm = nn.LayerNorm(d_model).double() if norm_first else nn.Identity()
    rng = np.random.default_rng(seed)
    h = autograd.tensor(rng.standard_normal((batch, seq_len, d_model)), requires_grad=True)  # (B, L, E)
    target = autograd.tensor(rng.standard_normal((batch, seq_len, d_model)))  # (B, L, E)
    inputs = []
    for layer in layers:
        inputs.append(h.retain_grad())
        h = layer(h)
    loss = ((final_norm(h) - target) ** 2).mean()
    loss.backward()
    return {
        "param_grad": np.array([np.sqrt(sum(np.sum(p.grad ** 2) for p in layer.parameters() if p.ndim == 2))
                                for layer in layers]),
        "input_grad": np.array([np.linalg.norm(x.grad) for x in inputs]),
        "residual_rms": np.array([np.sqrt(np.mean(x.data ** 2)) for x in inputs]),
    }
