def merge_heads(x):
    N, H, L, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(N, L, H * D)  # (N, L, H*D)
