import numpy as np


def multi_head_forward(x, W_q, W_k, W_v, W_o, num_heads):
    N, L, E = x.shape
    D = E // num_heads

    def heads(W):
        return (x @ W.T).reshape(N, L, num_heads, D).transpose(0, 2, 1, 3)  # (N, H, L, D)

    q, k, v = heads(W_q), heads(W_k), heads(W_v)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D)  # (N, H, L, L)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights = e / e.sum(axis=-1, keepdims=True)
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(N, L, E)  # (N, L, E)
    return out @ W_o.T
