import numpy as np


def positional_encoding(max_len, d_model):
    pos = np.arange(max_len)[:, None]  # (max_len, 1)
    two_i = np.arange(0, d_model, 2)  # (ceil(d_model / 2),)
    angles = pos / 10000.0 ** (two_i / d_model)  # (max_len, ceil(d_model / 2))
    pe = np.zeros((max_len, d_model))
    pe[:, 0::2] = np.sin(angles)
    pe[:, 1::2] = np.cos(angles[:, : d_model // 2])
    return pe
