"""An encoder-decoder Transformer that translates characters to characters, and its decoding.

    src ids (N, S) -> embeddings·√E + positions -> nn.Transformer encoder -> memory (N, S, E)
    tgt ids (N, T) -> embeddings·√E + positions -> nn.Transformer decoder (masked self-attention,
    cross-attention to memory) -> LayerNorm -> linear head -> logits (N, T, V_tgt)

Training uses teacher forcing: the decoder reads BOS y_1 … y_{T-1} and is scored on y_1 … y_T
in one pass, the causal mask keeping position t from seeing y_{t+1}. Decoding generates one
token at a time. ``greedy_decode`` and ``beam_search`` do it with a KV cache: each decoder
layer stores its self-attention keys and values of past positions, and the cross-attention
keys and values of the memory are projected once per source, so a step costs one new position
instead of recomputing the whole prefix (``use_cache=False`` recomputes, for checking).
"""

from __future__ import annotations

import contextlib
import math
import numbers

import numpy as np

from .. import data, nn
from ..autograd import Tensor, no_grad
from ..efficient import KVCache
from ..nn import functional as F

__all__ = ["Translator", "alignment_score", "cross_attention_maps"]


class Translator(nn.Module):
    """Character-level encoder-decoder: ``nn.Transformer`` (batch-first, pre-norm) with
    token embeddings scaled by √d_model, sinusoidal positions and a linear output head.

    forward(src (N, S) ids, tgt (N, T) ids) -> logits (N, T, tgt_vocab_size). PAD in ``src``
    is masked as a key of every attention over the source; ``tgt`` is read causally.
    ``tie_weights=True`` makes the head share the target embedding matrix (Press & Wolf 2017).
    """

    def __init__(self, src_vocab_size: int = len(data.SRC_VOCAB), tgt_vocab_size: int = len(data.TGT_VOCAB),
                 d_model: int = 64, nhead: int = 4, num_encoder_layers: int = 2,
                 num_decoder_layers: int = 2, dim_feedforward: int = 128, dropout: float = 0.0,
                 max_len: int = 64, tie_weights: bool = False, pad: int = data.PAD,
                 bos: int = data.BOS, eos: int = data.EOS):
        super().__init__()
        self.d_model, self.max_len, self.pad, self.bos, self.eos = d_model, max_len, pad, bos, eos
        self.src_embedding = nn.Embedding(src_vocab_size, d_model, padding_idx=pad)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, d_model, padding_idx=pad)
        for emb in (self.src_embedding, self.tgt_embedding):
            emb.weight.data *= d_model ** -0.5  # so that embedding·√E has unit-variance entries
        self.positions = nn.PositionalEncoding(d_model, max_len)
        self.transformer = nn.Transformer(d_model, nhead, num_encoder_layers, num_decoder_layers,
                                          dim_feedforward, dropout, batch_first=True, norm_first=True)
        self.head = nn.Linear(d_model, tgt_vocab_size, bias=not tie_weights)
        if tie_weights:
            self.head.weight = self.tgt_embedding.weight

    # -- checks --------------------------------------------------------------------------------
    def _ids(self, ids, name: str, vocab_size: int) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{name} has shape {ids.shape} and dtype {ids.dtype}; "
                             f"expected (N, length) integer ids")
        if ids.shape[1] > self.max_len:
            raise ValueError(f"{name} has {ids.shape[1]} positions but the positional table has "
                             f"max_len {self.max_len}")
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"{name} holds ids in [{ids.min()}, {ids.max()}]; expected [0, {vocab_size})")
        return ids

    def _embed(self, embedding: nn.Embedding, ids: np.ndarray) -> Tensor:
        return self.positions(embedding(ids) * math.sqrt(self.d_model))  # (N, L, E)

    # -- the three passes ----------------------------------------------------------------------
    def encode(self, src):
        """src (N, S) ids -> (memory (N, S, E), key padding mask (N, S), True = PAD)."""
        src = self._ids(src, "src", self.src_embedding.num_embeddings)
        padding = src == self.pad  # (N, S)
        memory = self.transformer.encoder(self._embed(self.src_embedding, src),
                                          src_key_padding_mask=padding)  # (N, S, E)
        return memory, padding

    def decode(self, tgt, memory, memory_key_padding_mask) -> Tensor:
        """tgt (N, T) ids, memory (N, S, E), its padding (N, S) -> logits (N, T, n_vocab), causally."""
        tgt = self._ids(tgt, "tgt", self.tgt_embedding.num_embeddings)
        T = tgt.shape[1]
        x = self.transformer.decoder(self._embed(self.tgt_embedding, tgt), memory,
                                     tgt_mask=nn.causal_mask(T), tgt_is_causal=True,
                                     memory_key_padding_mask=memory_key_padding_mask)  # (N, T, E)
        return self.head(x)  # (N, T, n_vocab)

    def forward(self, src, tgt) -> Tensor:
        memory, padding = self.encode(src)
        return self.decode(tgt, memory, padding)

    # -- decoding ------------------------------------------------------------------------------
    def greedy_decode(self, src, max_len: int = data.TARGET_LEN + 1, use_cache: bool = True,
                      stop_at_eos: bool = True):
        """Pick the most likely token at every step until EOS (then PAD) or ``max_len`` tokens.

        ``stop_at_eos=False`` runs all ``max_len`` steps even when every row has finished (for
        timing decoding at a fixed output length).

        src (N, S) -> (tokens (N, max_len) without BOS, PAD after EOS; logits (N, T, n_vocab) of the
        T ≤ max_len steps taken: decoding stops when every row has produced EOS).
        """
        max_len = _check_positive_int(max_len, "greedy_decode: max_len", self.max_len)
        with no_grad(), _evaluating(self):
            stepper = _Stepper(self, src, use_cache)
            N = stepper.batch
            tokens = np.full((N, max_len + 1), self.pad, np.int64)  # (N, 1 + max_len)
            tokens[:, 0] = self.bos
            done = np.zeros(N, bool)
            steps = []
            for t in range(max_len):
                logits = stepper.step(tokens[:, :t + 1])  # (N, V)
                steps.append(logits)
                choice = _allowed(logits, self).argmax(axis=-1)  # (N,)
                tokens[:, t + 1] = np.where(done, self.pad, choice)
                done |= choice == self.eos
                if stop_at_eos and done.all():
                    break
        return tokens[:, 1:], np.stack(steps, axis=1)  # (N, max_len), (N, T, n_vocab)

    def beam_search(self, src, beam_size: int = 4, length_penalty: float = 0.0,
                    max_len: int = data.TARGET_LEN + 1, use_cache: bool = True):
        """Keep the ``beam_size`` most likely prefixes per source; return the best finished one.

        src (N, S) -> (tokens (N, max_len) without BOS, PAD after EOS; scores (N,)).
        A hypothesis y of length |y| (EOS included) scores log p(y | x) / |y|^length_penalty;
        prefixes are ranked by log p during the search, and a finished hypothesis stays in the
        beam with its score frozen. beam_size=1 is greedy decoding.
        """
        beam_size = _check_positive_int(beam_size, "beam_search: beam_size")
        max_len = _check_positive_int(max_len, "beam_search: max_len", self.max_len)
        if isinstance(length_penalty, bool) or not isinstance(length_penalty, numbers.Real) \
                or not math.isfinite(length_penalty):
            raise ValueError(f"beam_search: length_penalty must be a finite number (0 = rank by log p), "
                             f"got {length_penalty!r}")
        with no_grad(), _evaluating(self):
            stepper = _Stepper(self, src, use_cache, repeat=beam_size)
            N, n_beam = stepper.batch // beam_size, beam_size
            tokens = np.full((N, n_beam, max_len + 1), self.pad, np.int64)  # (N, n_beam, 1 + max_len)
            tokens[:, :, 0] = self.bos
            scores = np.full((N, n_beam), -np.inf)  # (N, n_beam) log p of each prefix
            scores[:, 0] = 0.0  # one live beam at the start, the others are placeholders
            lengths = np.zeros((N, n_beam), np.int64)
            done = np.zeros((N, n_beam), bool)
            rows = np.arange(N)[:, None]  # (N, 1)
            for t in range(max_len):
                prefixes = tokens[:, :, :t + 1].reshape(N * n_beam, t + 1)  # (N·n_beam, t + 1)
                logp = _log_softmax(_allowed(stepper.step(prefixes), self))
                n_vocab = logp.shape[-1]
                logp = logp.reshape(N, n_beam, n_vocab)  # (N, n_beam, n_vocab)
                logp[done] = -np.inf
                logp[done, self.pad] = 0.0  # a finished hypothesis extends only with PAD, for free
                cand = (scores[:, :, None] + logp).reshape(N, n_beam * n_vocab)  # (N, n_beam·n_vocab)
                top = np.argsort(-cand, axis=1, kind="stable")[:, :n_beam]  # (N, n_beam)
                beam, token = top // n_vocab, top % n_vocab
                scores = cand[rows, top]
                tokens = tokens[rows, beam]
                tokens[:, :, t + 1] = token
                lengths = lengths[rows, beam] + ~done[rows, beam]
                done = done[rows, beam] | (token == self.eos)
                stepper.reorder((np.arange(N)[:, None] * n_beam + beam).reshape(-1))
                if done.all():
                    break
            final = scores / np.maximum(lengths, 1.0) ** float(length_penalty)  # (N, n_beam)
            best = np.argmax(final, axis=1)  # (N,)
        return tokens[np.arange(N), best, 1:], final[np.arange(N), best]

    def translate(self, texts, beam_size: int = 1, length_penalty: float = 0.0) -> list:
        """Source strings -> the decoded strings (greedy, or beam search for beam_size > 1)."""
        src = data.encode_source(texts)
        if beam_size == 1:
            tokens, _ = self.greedy_decode(src)
        else:
            tokens, _ = self.beam_search(src, beam_size, length_penalty)
        return [data.decode_target(row) for row in tokens]


@contextlib.contextmanager
def _evaluating(model: nn.Module):
    """Eval mode (no dropout) inside the block; the model's training flag is restored after it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _check_positive_int(n, name: str, at_most: int | None = None) -> int:
    """n as an int >= 1 (and <= at_most, the positions the model has); else a clear error."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {n!r} of type {type(n).__name__}")
    if n < 1 or (at_most is not None and n > at_most):
        bound = "" if at_most is None else f" and at most the model's max_len {at_most}"
        raise ValueError(f"{name} must be at least 1{bound}, got {n}")
    return int(n)


def _allowed(logits: np.ndarray, model: Translator) -> np.ndarray:
    """Logits with PAD and BOS set to −inf: the decoder never generates them."""
    logits = logits.copy()
    logits[..., [model.pad, model.bos]] = -np.inf
    return logits


def _log_softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _split_heads(mha: nn.MultiheadAttention, x: Tensor) -> Tensor:
    B, L, _ = x.shape
    return x.reshape(B, L, mha.num_heads, mha.head_dim).transpose(1, 2)  # (B, H, L, D)


def _project(mha: nn.MultiheadAttention, x: Tensor, which: int) -> Tensor:
    """One of Q, K, V (which = 0, 1, 2) of x (B, L, E), split into heads (B, H, L, D)."""
    return _split_heads(mha, F.linear(x, mha.projection_weights()[which], mha.projection_biases()[which]))


def _attend(mha: nn.MultiheadAttention, x: Tensor, keys: Tensor, values: Tensor, mask) -> Tensor:
    """The new position's attention output: x (B, 1, E) over keys/values (B, H, S, D) -> (B, 1, E)."""
    heads = F.scaled_dot_product_attention(_project(mha, x, 0), keys, values, attn_mask=mask)  # (B, H, 1, D)
    B = x.shape[0]
    return mha.out_proj(heads.transpose(1, 2).reshape(B, 1, mha.embed_dim))  # (B, 1, E)


class _Stepper:
    """The decoder, one position per ``step``: cached (KV cache + memory K/V projected once) or
    recomputing the whole prefix. ``repeat`` copies every source that many times (for beams)."""

    def __init__(self, model: Translator, src, use_cache: bool, repeat: int = 1):
        self.model, self.use_cache = model, use_cache
        memory, padding = model.encode(src)  # (N, S, E), (N, S)
        self.memory = Tensor(np.repeat(memory.data, repeat, axis=0))  # (N·repeat, S, E)
        self.padding = np.repeat(padding, repeat, axis=0)  # (N·repeat, S)
        self.batch = self.memory.shape[0]
        if use_cache:
            layers = model.transformer.decoder.layers
            self.caches = [KVCache() for _ in layers]
            self.cross = [(_project(layer.multihead_attn, self.memory, 1),
                           _project(layer.multihead_attn, self.memory, 2)) for layer in layers]
            self.allowed = ~self.padding[:, None, None, :]  # (B, 1, 1, S), True = may attend

    def step(self, prefix: np.ndarray) -> np.ndarray:
        """prefix (B, t + 1) ids -> logits (B, V) for position t + 1."""
        if not self.use_cache:
            return self.model.decode(prefix, self.memory, self.padding).data[:, -1]  # (B, V)
        model, t = self.model, prefix.shape[1] - 1
        if t >= model.max_len:
            raise ValueError(f"decoding position {t} is past the positional table (max_len {model.max_len})")
        x = model.tgt_embedding(prefix[:, t:]) * math.sqrt(model.d_model)  # (B, 1, E)
        x = x + model.positions.pe[t].astype(x.dtype)  # (B, 1, E)
        for layer, cache, (k_mem, v_mem) in zip(model.transformer.decoder.layers, self.caches, self.cross):
            x = _layer_step(layer, x, cache, k_mem, v_mem, self.allowed)
        x = model.transformer.decoder.norm(x)
        return model.head(x).data[:, 0]  # (B, V)

    def reorder(self, index: np.ndarray) -> None:
        """Keep decoder state row index[b] as row b (the beams that survived, per source)."""
        if self.use_cache:
            for i, cache in enumerate(self.caches):
                self.caches[i] = KVCache()
                self.caches[i].append(cache.keys[index], cache.values[index])


def _layer_step(layer: nn.TransformerDecoderLayer, x: Tensor, cache: KVCache, k_mem, v_mem,
                allowed) -> Tensor:
    """One decoder layer on the newest position x (B, 1, E), in eval mode (no dropout)."""
    def self_attention(h):
        keys, values = cache.append(_project(layer.self_attn, h, 1), _project(layer.self_attn, h, 2))
        return _attend(layer.self_attn, h, keys, values, None)  # all past positions and itself

    def cross_attention(h):
        return _attend(layer.multihead_attn, h, k_mem, v_mem, allowed)

    def feed_forward(h):
        return layer.linear2(layer.activation(layer.linear1(h)))  # (B, 1, E)

    if layer.norm_first:
        x = x + self_attention(layer.norm1(x))
        x = x + cross_attention(layer.norm2(x))
        return x + feed_forward(layer.norm3(x))
    x = layer.norm1(x + self_attention(x))
    x = layer.norm2(x + cross_attention(x))
    return layer.norm3(x + feed_forward(x))


def cross_attention_maps(model: Translator, src, tgt) -> np.ndarray:
    """The decoder's cross-attention weights under teacher forcing.

    src (N, S) ids, tgt (N, T + 1) ids BOS … EOS -> (layers, N, H, T, S): row t is where the
    decoder looks in the source while predicting tgt[:, t + 1]. Recorded in eval mode, no graph.
    """
    model.eval()
    with no_grad(), nn.record_attention(model) as record:
        model(src, np.asarray(tgt)[:, :-1])
    return np.stack([w for n, w in zip(record.names, record.weights) if n.endswith("multihead_attn")])


def alignment_score(maps: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """How much cross-attention falls on the source span each output character comes from.

    maps (layers, N, H, T, S) from ``cross_attention_maps`` (T ≥ 10), spans (N, 10, 2) from a
    ``data.DateSplit``. For each example and output character j with a span [a, b) (not the
    dashes), the score is Σ_{a ≤ s < b} P[j, s]: 1 when the head looks only inside the span.
    Returns the mean over examples and characters, (layers, H).
    """
    columns = np.arange(maps.shape[-1])  # (S,)
    inside = (columns >= spans[..., :1]) & (columns < spans[..., 1:])  # (N, 10, S)
    has_span = spans[..., 1] > spans[..., 0]  # (N, 10)
    mass = (maps[:, :, :, :spans.shape[1]] * inside[None, :, None]).sum(-1)  # (layers, N, H, 10)
    return (mass * has_span[None, :, None]).sum(axis=(1, 3)) / has_span.sum()  # (layers, H)
