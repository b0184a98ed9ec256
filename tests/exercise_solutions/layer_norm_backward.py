import numpy as np


def layer_norm_backward(dout, x, gamma, eps=1e-5):
    xc = x - x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(np.mean(xc * xc, axis=-1, keepdims=True) + eps)
    xhat = xc * rstd
    g = dout * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * np.mean(g * xhat, axis=-1, keepdims=True))
    batch_axes = tuple(range(x.ndim - 1))
    return dx, np.sum(dout * xhat, axis=batch_axes), np.sum(dout, axis=batch_axes)
