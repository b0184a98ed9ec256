def split_heads(x, num_heads):
    N, L, E = x.shape
    return x.reshape(N, L, num_heads, E // num_heads).transpose(0, 2, 1, 3)  # (N, H, L, D)
