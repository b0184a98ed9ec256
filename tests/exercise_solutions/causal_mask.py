import numpy as np


def causal_mask(L):
    return np.tril(np.ones((L, L), dtype=bool))
