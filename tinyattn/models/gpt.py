"""A GPT (decoder-only Transformer) from tinyattn's own modules, with KV-cache generation.

    tokens (B, T) -> E_tok[tokens] + E_pos[0..T-1] -> num_layers x Block -> LayerNorm -> x E_tokᵀ

Each ``Block`` is pre-norm: x = x + attn(LN(x)) with causal ``GroupedQueryAttention``, then
x = x + MLP(LN(x)) (``mlp=False`` gives attention-only blocks). The output head is tied to
the token embedding: logits = LN(x) E_tokᵀ. Here T is the sequence length (queries L = keys S
= T in self-attention), E = ``d_model``, H = ``num_heads``, D = E / H.

``generate`` decodes one token at a time. With ``use_cache=True`` every attention layer keeps
a ``KVCache`` of the keys and values of the positions already seen, so each new token costs one
query against the P cached keys — O(P) — instead of recomputing all P + 1 positions.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import numpy as np

from ..autograd import Tensor, get_rng, no_grad
from ..efficient import GroupedQueryAttention, KVCache, alibi_bias
from ..nn import functional as F
from ..nn import init
from ..nn.modules import GELU, Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, Sequential

__all__ = ["GPT", "Block"]


class Block(Module):
    """One pre-norm decoder block: x (B, T, E) -> (B, T, E).

    x = x + dropout(CausalSelfAttention(LN_1(x))); x = x + dropout(W_2 GELU(W_1 LN_2(x)))
    (the second line only with ``mlp=True``).
    """

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float,
                 mlp: bool = True, positions: str | None = None):
        super().__init__()
        self.ln_1 = LayerNorm(d_model)
        self.attn = GroupedQueryAttention(d_model, num_heads, num_kv_heads=num_heads, positions=positions)
        self.dropout = Dropout(dropout)
        if mlp:
            self.ln_2 = LayerNorm(d_model)
            self.mlp = Sequential(Linear(d_model, dim_feedforward), GELU(),
                                  Linear(dim_feedforward, d_model), Dropout(dropout))
        else:
            self.ln_2 = self.mlp = None

    def forward(self, x, cache: KVCache | None = None) -> Tensor:
        """x (B, T, E) -> (B, T, E); with ``cache``, x holds the positions after the cached ones."""
        x = x + self.dropout(self.attn(self.ln_1(x), is_causal=True, cache=cache))
        if self.mlp is not None:
            x = x + self.mlp(self.ln_2(x))
        return x

    def attention_weights(self, x) -> np.ndarray:
        """The causal attention weights P of every head: x (B, T, E) -> (B, H, T, T).

        P = softmax(Q Kᵀ / √D + causal mask) with Q, K the projections of LN_1(x) (RoPE: rotated;
        ALiBi: the bias added to the scores).
        """
        attn = self.attn
        B, T, _ = x.shape
        H, D = attn.num_heads, attn.head_dim
        h = self.ln_1(x)
        q = attn.q_proj(h).reshape(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = attn.k_proj(h).reshape(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        if attn.positions == "rope":
            q, k = F.apply_rotary_pos_emb(q), F.apply_rotary_pos_emb(k)  # positions 0 .. T−1
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))  # (B, H, T, T)
        if attn.positions == "alibi":
            scores = scores + alibi_bias(H, T, T, dtype=scores.dtype)  # −m_h·(i − j), −inf above
        future = np.triu(np.ones((T, T), dtype=bool), k=1)  # (T, T): True = may not attend
        return F.softmax(scores.masked_fill(future, -np.inf), dim=-1).data


class GPT(Module):
    """A decoder-only language model: tokens (B, T) int -> next-token logits (B, T, vocab_size).

    Token embedding ``wte`` (vocab_size, E) and learned positions ``wpe`` (block_size, E),
    ``num_layers`` pre-norm ``Block``s, a final LayerNorm ``ln_f`` and the tied head
    logits = ln_f(x) wteᵀ (no separate output matrix). ``positions="rope"`` or ``"alibi"`` drops
    ``wpe`` and puts positions into every attention's scores instead (``GroupedQueryAttention``);
    block_size then only bounds the length. Weights start at N(0, 0.02²), the
    residual output projections at N(0, (0.02 / √(2 · num_layers))²), biases at 0 (GPT-2).
    """

    def __init__(self, vocab_size: int, block_size: int, d_model: int = 64, num_heads: int = 4,
                 num_layers: int = 2, dim_feedforward: int | None = None, dropout: float = 0.0,
                 mlp: bool = True, positions: str = "learned"):
        super().__init__()
        if positions not in ("learned", "rope", "alibi"):
            raise ValueError(f"GPT: positions must be 'learned', 'rope' or 'alibi', got {positions!r}")
        for name, n in (("vocab_size", vocab_size), ("block_size", block_size),
                        ("d_model", d_model), ("num_heads", num_heads), ("num_layers", num_layers)):
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
                raise ValueError(f"GPT: {name} must be a positive int, got {n!r}")
        dim_feedforward = 4 * d_model if dim_feedforward is None else dim_feedforward
        self.config = dict(vocab_size=vocab_size, block_size=block_size, d_model=d_model,
                           num_heads=num_heads, num_layers=num_layers,
                           dim_feedforward=dim_feedforward, dropout=dropout, mlp=mlp, positions=positions)
        self.vocab_size, self.block_size = vocab_size, block_size
        self.wte = Embedding(vocab_size, d_model)
        self.wpe = Embedding(block_size, d_model) if positions == "learned" else None
        self.drop = Dropout(dropout)
        in_scores = None if positions == "learned" else positions
        self.blocks = ModuleList(Block(d_model, num_heads, dim_feedforward, dropout, mlp, in_scores)
                                 for _ in range(num_layers))
        self.ln_f = LayerNorm(d_model)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (Linear, Embedding)):
                init.normal_(module.weight, 0.0, 0.02)
            if isinstance(module, Linear) and module.bias is not None:
                init.zeros_(module.bias)
        residual_std = 0.02 / math.sqrt(2 * len(self.blocks))
        for block in self.blocks:
            init.normal_(block.attn.out_proj.weight, 0.0, residual_std)
            if block.mlp is not None:
                init.normal_(block.mlp[2].weight, 0.0, residual_std)

    def num_params(self) -> int:
        """The number of trainable numbers (the tied head adds none)."""
        return self.num_parameters()

    def _check_tokens(self, idx, start: int = 0) -> np.ndarray:
        idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
        if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"GPT: tokens have shape {idx.shape} and dtype {idx.dtype}; "
                             f"expected (B, T) integer token ids")
        if idx.size and (idx.min() < 0 or idx.max() >= self.vocab_size):
            bad = idx.min() if idx.min() < 0 else idx.max()
            raise ValueError(f"GPT: token {bad} is outside the vocabulary 0..{self.vocab_size - 1}")
        if start + idx.shape[1] > self.block_size:
            raise ValueError(f"GPT: positions {start}..{start + idx.shape[1] - 1} exceed the "
                             f"position table of block_size {self.block_size}")
        return idx

    def forward(self, idx, caches=None) -> Tensor:
        """Next-token logits: idx (B, T) -> (B, T, vocab_size).

        With ``caches`` (one KVCache per block, all holding P positions), idx are the tokens at
        positions P..P+T−1; their keys and values are appended to the caches.
        """
        if caches is not None and not isinstance(caches, (list, tuple)):
            raise TypeError(f"GPT: caches must be a list of KVCache (one per block), "
                            f"got {type(caches).__name__}")
        if caches is not None and (len(caches) != len(self.blocks) or len({len(c) for c in caches}) > 1):
            raise ValueError(f"GPT: caches must be one KVCache per block ({len(self.blocks)}), all of one "
                             f"length; got lengths {[len(c) for c in caches]}")
        start = 0 if caches is None else len(caches[0])
        idx = self._check_tokens(idx, start)
        T = idx.shape[1]
        x = self.wte(idx)  # (B, T, E)
        if self.wpe is not None:
            x = x + self.wpe(np.arange(start, start + T))  # (B, T, E)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])  # (B, T, E)
        return F.linear(self.ln_f(x), self.wte.weight)  # (B, T, vocab_size): tied head

    def attention_maps(self, idx) -> np.ndarray:
        """Every head's attention weights: idx (B, T) -> (num_layers, B, H, T, T), no graph, eval."""
        idx = self._check_tokens(idx)
        was_training = self.training
        self.eval()
        maps = []
        with no_grad():
            x = self.wte(idx)  # (B, T, E)
            if self.wpe is not None:
                x = x + self.wpe(np.arange(idx.shape[1]))  # (B, T, E)
            for block in self.blocks:
                maps.append(block.attention_weights(x))  # (B, H, T, T)
                x = block(x)
        self.train(was_training)
        return np.stack(maps)

    @contextlib.contextmanager
    def ablate_head(self, layer: int, head: int):
        """Inside the block, head ``head`` of block ``layer`` contributes nothing.

        Its D columns of the output projection W_o are set to zero (its output is dropped
        before the heads are mixed), and restored on exit.
        """
        attn = self.blocks[layer].attn
        if not 0 <= head < attn.num_heads:
            raise ValueError(f"head {head} is out of range for {attn.num_heads} heads")
        cols = slice(head * attn.head_dim, (head + 1) * attn.head_dim)
        saved = attn.out_proj.weight.data[:, cols].copy()
        attn.out_proj.weight.data[:, cols] = 0
        try:
            yield self
        finally:
            attn.out_proj.weight.data[:, cols] = saved

    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 use_cache: bool = True, seed: int | None = None, return_logits: bool = False,
                 top_p: float | None = None, crop: bool = False, on_token=None):
        """Append ``max_new_tokens`` sampled tokens: idx (B, T0) -> (B, T0 + max_new_tokens).

        Each step takes the logits z of the last position: temperature 0 picks argmax z
        (greedy); otherwise it samples from softmax(z / temperature), keeping only the
        ``top_k`` largest logits and/or the smallest set of most likely tokens whose
        probabilities sum to ``top_p`` (nucleus sampling) when given. Random numbers come from
        ``np.random.default_rng(seed)``, or from tinyattn's global generator when seed is None.
        ``use_cache=False`` reruns the whole sequence each step (O(T²) work per token);
        the cache gives the same tokens and logits. ``crop=True`` lets the text grow past
        ``block_size``: the model then reads only the last block_size tokens (nanoGPT's
        ``idx_cond``), and the cache is refilled from them. ``on_token(tokens (B,))`` is called
        with every new column as it is sampled (to stream text). ``return_logits=True`` also
        returns the logits each step sampled from, (B, max_new_tokens, vocab_size).
        """
        idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
        if crop and idx.ndim == 2 and idx.shape[1] > self.block_size:
            self._check_tokens(idx.reshape(-1, 1))  # tokens the model will not read are still checked
            self._check_tokens(idx[:, -self.block_size:])
        else:
            idx = self._check_tokens(idx)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)):
            raise TypeError(f"generate: max_new_tokens must be an int, got {max_new_tokens!r} "
                            f"of type {type(max_new_tokens).__name__}")
        if max_new_tokens < 0:
            raise ValueError(f"generate: max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        if idx.shape[1] == 0:
            raise ValueError("generate: the prompt is empty; give at least one token per row")
        if not crop and idx.shape[1] + max_new_tokens > self.block_size:
            raise ValueError(f"generate: a prompt of {idx.shape[1]} tokens + {max_new_tokens} new "
                             f"tokens needs {idx.shape[1] + max_new_tokens} positions, but the "
                             f"position table holds block_size = {self.block_size} (crop=True "
                             f"reads only the last block_size tokens)")
        if _not_real(temperature) or not temperature >= 0:
            raise ValueError(f"generate: temperature must be >= 0 (a number, 0 = greedy), "
                             f"got {temperature!r}")
        if top_k is not None and (_not_real(top_k) or not math.isfinite(top_k) or int(top_k) != top_k
                                  or top_k < 1):
            raise ValueError(f"generate: top_k must be an int >= 1 or None, got {top_k!r}")
        if top_p is not None and (_not_real(top_p) or not 0 < top_p <= 1):
            raise ValueError(f"generate: top_p must be in (0, 1] (a number) or None, got {top_p!r}")
        if seed is not None and (_not_real(seed) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"generate: seed must be an int >= 0 or None, got {seed!r}")
        if on_token is not None and not callable(on_token):
            raise TypeError(f"generate: on_token must be a function of the new tokens (B,), got {on_token!r}")
        rng = get_rng() if seed is None else np.random.default_rng(seed)
        was_training = self.training
        self.eval()
        caches = None
        out, steps = idx, []
        try:
            with no_grad():
                for t in range(max_new_tokens):
                    context = out[:, -self.block_size:]  # (B, <= block_size): what the model reads
                    if use_cache and (t == 0 or len(caches[0]) == self.block_size):  # (re)fill
                        caches = [KVCache() for _ in self.blocks]
                        logits = self(context, caches)  # (B, T, V)
                    elif use_cache:
                        logits = self(out[:, -1:], caches)  # (B, 1, V)
                    else:
                        logits = self(context)  # (B, T, V)
                    z = logits.data[:, -1]  # (B, V)
                    steps.append(z)
                    nxt = _sample(z, temperature, top_k, rng, top_p)  # (B,)
                    out = np.concatenate([out, nxt[:, None]], axis=1)  # (B, T + 1)
                    if on_token is not None:
                        on_token(nxt)
        finally:  # also when on_token raises
            self.train(was_training)
        if return_logits:
            empty = np.zeros((len(idx), 0, self.vocab_size))
            return out, np.stack(steps, axis=1) if steps else empty
        return out


def _not_real(x) -> bool:
    return isinstance(x, bool) or not isinstance(x, numbers.Real)


def _sample(z: np.ndarray, temperature: float, top_k, rng: np.random.Generator, top_p=None) -> np.ndarray:
    """One token per row from logits z (B, V): argmax at temperature 0, else top-k / top-p sampling.

    p = softmax((z − max z) / temperature): subtracting the maximum first keeps a tiny
    temperature finite (the best token gets exp(0) = 1, the others underflow to 0) instead of
    inf − inf = NaN. top-p keeps the most likely tokens until their probabilities reach top_p
    (always at least one). Sampling inverts the CDF at one uniform number per row.
    """
    if temperature == 0:
        return z.argmax(axis=-1)
    z = z.astype(np.float64)
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.sort(z, axis=-1)[:, -int(top_k)]  # (B,): the k-th largest logit
        z = np.where(z < kth[:, None], -np.inf, z)
    with np.errstate(over="ignore"):  # a tiny temperature sends the others to −inf: their p is 0
        p = np.exp((z - z.max(axis=-1, keepdims=True)) / temperature)  # (B, V)
    p /= p.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, axis=-1, kind="stable")  # (B, V): most likely first
        sorted_p = np.take_along_axis(p, order, axis=-1)  # (B, V)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p  # (B, V): mass of the more likely tokens
        keep = np.zeros_like(p, dtype=bool)
        np.put_along_axis(keep, order, before < top_p, axis=-1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=-1, keepdims=True)
    cdf = np.cumsum(p, axis=-1)  # (B, V)
    u = rng.random(len(z))  # (B,)
    return np.minimum((cdf < u[:, None]).sum(axis=-1), z.shape[-1] - 1)
