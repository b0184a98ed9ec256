import numpy as np


def online_softmax(q, k, v, block_size):
    scale = 1.0 / np.sqrt(q.shape[-1])
    m = np.full(q.shape[:-1] + (1,), -np.inf)  # running max, (..., L, 1)
    l = np.zeros(q.shape[:-1] + (1,))  # running sum of exponentials, (..., L, 1)
    acc = np.zeros(q.shape[:-1] + (v.shape[-1],))  # unnormalized output, (..., L, d_v)
    for start in range(0, k.shape[-2], block_size):
        kb = k[..., start:start + block_size, :]  # (..., b, d)
        vb = v[..., start:start + block_size, :]  # (..., b, d_v)
        s = (q @ np.swapaxes(kb, -1, -2)) * scale  # (..., L, b)
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
        alpha = np.exp(m - m_new)
        p = np.exp(s - m_new)
        l = l * alpha + p.sum(axis=-1, keepdims=True)
        acc = acc * alpha + p @ vb
        m = m_new
    return acc / l
