"""The streaming experiment (StreamingLLM's picture): a GPT trained on short windows, read far past them.

A GPT with RoPE or ALiBi (no position table) is trained on rows of T_train tokens of the Markov
stream of ``tinyattn.data`` ("^" then the chain). It is then read on rows many times longer, one
token at a time, with three caches:

- ``"window"``: ``SinkCache(0, T_train − 1)``, a plain sliding window — every token sees itself
  and the T_train − 1 before it, positions re-assigned inside the cache;
- ``"sinks"``: ``SinkCache(4, T_train − 5)``, the same number of keys, four of them the first
  tokens of the row (Xiao et al. 2024);
- ``"full"``: the whole row (one causal forward; equal to decoding with a ``KVCache``), whose
  distances grow past anything seen in training.

Every position t ≥ 2 of the stream has the same best loss, the chain's entropy rate, so any rise
of the loss with t is the model's, not the data's. ``benchmarks/streaming.py`` runs it and writes
``tinyattn/measurements/streaming.json``; the trained models are committed as
``tinyattn/checkpoints/streaming_rope.npz`` and ``streaming_alibi.npz`` (``load_stream_run``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass

import numpy as np

from . import autograd, data, optim
from .efficient import KVCache, SinkCache
from .nn import functional as F
from .serialization import atomic_write
from .train import checkpoint_path, load_run, lr_factor, save_run

__all__ = ["StreamConfig", "build_stream_gpt", "train_stream", "decode_losses", "full_losses",
           "sink_attention", "CACHES", "load_stream_run", "save_stream_run", "NUM_SINKS"]

NUM_SINKS = 4


@dataclass
class StreamConfig:
    """Everything that determines a streaming run."""

    positions: str = "rope"  # "rope" or "alibi"
    seed: int = 0
    steps: int = 1000
    batch_size: int = 32
    train_len: int = 64  # T_train: the positions of a training row ("^" included)
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    lr: float = 3e-3
    warmup: int = 100
    log_every: int = 100
    block_size: int = 4096  # with RoPE or ALiBi only a bound on the length read

    def __post_init__(self):
        if self.positions not in ("rope", "alibi"):
            raise ValueError(f"StreamConfig: positions must be 'rope' or 'alibi', got {self.positions!r}")


def build_stream_gpt(config: StreamConfig):
    """A freshly initialized GPT for ``config`` (seeded with ``config.seed``)."""
    from .models import GPT

    autograd.manual_seed(config.seed)
    return GPT(data.MARKOV_VOCAB_SIZE, config.block_size, d_model=config.d_model, num_heads=config.num_heads,
               num_layers=config.num_layers, positions=config.positions)


def _losses(logits, targets: np.ndarray):
    """Cross-entropy per position: logits (B, T, V), targets (B, T) -> (B, T) Tensor."""
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V), targets.reshape(-1), reduction="none").reshape(B, T)


def train_stream(config: StreamConfig, log=print):
    """Next-token loss on every position of fresh rows of T_train tokens; returns (model, result, history)."""
    model = build_stream_gpt(config)
    table = data.markov_table(config.seed)
    rng = np.random.default_rng([config.seed, 1])
    opt = optim.AdamW(list(model.parameters()), lr=config.lr, weight_decay=0.0)
    sched = optim.LambdaLR(opt, lambda s: lr_factor(s, config.warmup, config.steps))
    model.train()
    history, recent = [], []
    start = time.perf_counter()
    for step in range(1, config.steps + 1):
        rows = data.markov_stream(config.batch_size, config.train_len + 1, rng, table)  # (B, T_train + 1)
        loss = _losses(model(rows[:, :-1]), rows[:, 1:]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        recent.append(loss.item())
        if step % config.log_every == 0 or step == config.steps:
            elapsed = time.perf_counter() - start
            history.append({"step": step, "loss": round(float(np.mean(recent)), 5), "seconds": round(elapsed, 2)})
            log(f"step {step:5d}/{config.steps}  loss {history[-1]['loss']:.4f}  {elapsed:6.1f}s")
            recent = []
    model.eval()
    test = data.markov_stream(256, config.train_len + 1, np.random.default_rng([config.seed, 3]), table)
    with autograd.no_grad():
        test_loss = _losses(model(test[:, :-1]), test[:, 1:]).data[:, 2:].mean()
    result = {"positions": config.positions, "test_loss": float(test_loss),
              "entropy_rate": data.markov_entropy_rate(table), "chance_loss": float(np.log(data.MARKOV_TOKENS)),
              "steps": config.steps, "seconds": round(time.perf_counter() - start, 2),
              "params": model.num_params(), "seed": config.seed}
    return model, result, history


CACHES = {  # name -> (what it is, a cache for one layer given T_train)
    "window": ("sliding window", lambda T: SinkCache(0, T - 1)),
    "sinks": (f"window + {NUM_SINKS} sinks", lambda T: SinkCache(NUM_SINKS, T - 1 - NUM_SINKS)),
    "full": ("full cache", lambda T: KVCache()),
}


def decode_losses(model, rows: np.ndarray, make_cache) -> np.ndarray:
    """Per-position loss reading ``rows`` (B, N + 1) one token at a time: (B, N).

    ``make_cache()`` gives each attention layer its cache; position t is scored on token t + 1.
    """
    caches = [make_cache() for _ in model.blocks]
    out = []
    with autograd.no_grad():
        for t in range(rows.shape[1] - 1):
            logits = model(rows[:, t:t + 1], caches)  # (B, 1, V)
            out.append(_losses(logits, rows[:, t + 1:t + 2]).data)  # (B, 1)
    return np.concatenate(out, axis=1)


def full_losses(model, rows: np.ndarray) -> np.ndarray:
    """Per-position loss of one causal forward over ``rows`` (B, N + 1): (B, N)."""
    with autograd.no_grad():
        return _losses(model(rows[:, :-1]), rows[:, 1:]).data


def sink_attention(model, rows: np.ndarray, first: int = 8) -> np.ndarray:
    """The mean weight each head puts on position 0 ("^"), over query positions ≥ ``first``: (layers, H)."""
    maps = model.attention_maps(rows)  # (layers, B, H, T, T)
    return maps[:, :, :, first:, 0].mean(axis=(1, 3))


def save_stream_run(model, config: StreamConfig, result: dict, history: list, path) -> None:
    """The weights (``save_run``) and the log (config, result, history) beside them as ``.json``."""
    save_run(model, config, path)
    log = json.dumps({"config": dataclasses.asdict(config), "result": result, "history": history})
    atomic_write(str(path)[:-len(".npz")] + ".json", lambda f: f.write(log.encode() + b"\n"))


def load_stream_run(positions: str):
    """The committed streaming model (eval mode) and its StreamConfig: positions "rope" or "alibi"."""
    return load_run(checkpoint_path(f"streaming_{positions}"), StreamConfig, build_stream_gpt)
