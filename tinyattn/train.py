"""``python -m tinyattn.train``: train a tiny Transformer encoder on a toy task, for real.

    python -m tinyattn.train --task reverse
    python -m tinyattn.train --task recall --seed 1 --steps 500 --save runs/recall.npz

The model is token embedding + sinusoidal positional encoding + ``ta.nn.TransformerEncoder`` +
one linear head read at every answer slot (see ``tinyattn.data`` for the sequences). It prints a
progress line every ``--log-every`` steps (step, loss, accuracy, elapsed, tokens/s), evaluates
on the held-out test set, and prints one JSON object as its last line::

    {"task": "reverse", "test_accuracy": 1.0, "steps": 1000, "seconds": 14.2, "params": 68758, ...}

``--save PATH`` writes the weights and the configuration to ``PATH`` (an ``.npz``, atomically,
no pickle) and the training log (the JSON result and the loss curve) to ``PATH`` with ``.json``.
A run is deterministic for a given seed: data, initialization and batches all come from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from . import autograd, data, nn, optim
from .models import TinyEncoder
from .nn import functional as F
from .serialization import atomic_write, check_writable, load, save
from .threads import set_num_threads

__all__ = ["Config", "DEFAULT_STEPS", "build_model", "train", "evaluate",
           "predict", "answer_logits", "lr_factor", "attention_maps", "ideal_overlap",
           "save_checkpoint", "load_checkpoint", "checkpoint_path", "main", "save_run", "load_run",
           "TranslateConfig", "build_translator", "train_translate", "translate_predictions",
           "translate_exact_match", "save_translator", "load_translator",
           "LM_DEFAULTS", "LMConfig", "build_gpt", "train_lm", "next_token_losses", "add_exact_match",
           "induction_scores", "save_gpt", "load_gpt", "load_lm_log", "lm_checkpoint_path",
           "ShakespeareConfig", "build_shakespeare_gpt", "cosine_lr", "decay_groups", "lm_loss",
           "estimate_loss", "split_loss", "sample_text", "train_shakespeare", "load_shakespeare_run"]

DEFAULT_STEPS = {"reverse": 800, "sort": 1500, "recall": 1500}


@dataclass
class Config:
    """Everything that determines a run (``steps=None`` means DEFAULT_STEPS[task])."""

    task: str = "reverse"
    seed: int = 0
    steps: int | None = None
    batch_size: int = 64
    d_model: int = 64
    nhead: int = 4
    num_layers: int = 2
    dim_feedforward: int = 128
    positional: bool = True
    lr: float = 3e-3
    warmup: int = 100
    n_train: int = 20000
    n_test: int = 1000
    log_every: int = 100

    def total_steps(self) -> int:
        return DEFAULT_STEPS[self.task] if self.steps is None else self.steps


def build_model(config: Config) -> TinyEncoder:
    """A freshly initialized TinyEncoder for ``config`` (seeded with ``config.seed``)."""
    autograd.manual_seed(config.seed)
    return TinyEncoder(len(data.VOCAB), config.d_model, config.nhead, config.num_layers,
                       config.dim_feedforward, positional=config.positional)


def answer_logits(model: TinyEncoder, tokens: np.ndarray, task: str):
    """The logits at the answer slots: tokens (N, L) -> (N, answer_len, vocab_size)."""
    return model(tokens)[:, data.task_spec(task).answer_positions]  # (N, n_slot, n_vocab)


def predict(model: TinyEncoder, tokens: np.ndarray, task: str, batch_size: int = 500) -> np.ndarray:
    """Greedy answers, (N, L) -> (N, answer_len) token ids, in eval mode without a graph."""
    model.eval()
    out = []
    with autograd.no_grad():
        for start in range(0, len(tokens), batch_size):
            logits = answer_logits(model, tokens[start:start + batch_size], task)  # (n, n_slot, n_vocab)
            out.append(logits.data.argmax(axis=-1))  # (n, A)
    return np.concatenate(out)


def evaluate(model: TinyEncoder, split: data.Split) -> float:
    """Token accuracy on the answer slots of ``split``: mean of (prediction == answer)."""
    return float(np.mean(predict(model, split.tokens, split.task) == split.answers))


def attention_maps(model: TinyEncoder, tokens: np.ndarray) -> np.ndarray:
    """Per-layer, per-head attention weights: tokens (N, L) -> (num_layers, N, H, L, L).

    Recorded with ``nn.record_attention`` in eval mode without a graph; row q of [l, n, h] is
    where position q looks in layer l, head h (zero on the masked answer slots).
    """
    model.eval()
    with autograd.no_grad(), nn.record_attention(model) as record:
        model(tokens)
    return record.stack()  # (layers, N, H, L, L)


def ideal_overlap(maps: np.ndarray, ideal: np.ndarray, answer_positions) -> np.ndarray:
    """How much of each head's attention from the answer slots falls on the ideal pattern.

    maps (layers, N, H, L, L) from ``attention_maps``; ideal (N, A, L) from
    ``data.ideal_attention``. For each slot row w and ideal row p, overlap = Σ_j min(w_j, p_j):
    1 when the head looks exactly where the ideal does, 0 when it looks elsewhere. Returns the
    mean over examples and slots, (layers, H).
    """
    rows = maps[:, :, :, answer_positions, :]  # (layers, N, H, A, L)
    return np.minimum(rows, ideal[None, :, None]).sum(axis=-1).mean(axis=(1, 3))  # (layers, H)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    ramp = min(1.0, (step + 1) / warmup)
    return ramp * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def train(config: Config, log=print):
    """Train a TinyEncoder on ``config.task``; return (model, result dict, history list).

    The loss is the cross-entropy of the answer tokens at the answer slots, averaged over
    slots and batch. ``history`` holds one dict per logged step: step, loss, accuracy (both
    averaged over the steps since the previous log line), seconds.
    """
    if config.task not in data.TASKS:
        raise ValueError(f"unknown task {config.task!r}; expected one of {', '.join(data.TASKS)}")
    total = config.total_steps()
    train_set, test_set = data.make_splits(config.task, config.n_train, config.n_test, config.seed)
    model = build_model(config)
    opt = optim.AdamW(list(model.parameters()), lr=config.lr, weight_decay=0.0)
    sched = optim.LambdaLR(opt, lambda s: lr_factor(s, config.warmup, total))
    batches = np.random.default_rng([config.seed, 1])
    n_vocab, L = len(data.VOCAB), data.task_spec(config.task).seq_len
    history, losses, hits = [], [], []
    start = time.perf_counter()
    model.train()
    for step in range(1, total + 1):
        idx = batches.integers(0, len(train_set), config.batch_size)  # (N,)
        answers = train_set.answers[idx]  # (N, n_slot)
        logits = answer_logits(model, train_set.tokens[idx], config.task)  # (N, n_slot, n_vocab)
        loss = F.cross_entropy(logits.reshape(-1, n_vocab), answers.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        hits.append(float(np.mean(logits.data.argmax(axis=-1) == answers)))
        if step % config.log_every == 0 or step == total:
            elapsed = time.perf_counter() - start
            history.append({"step": step, "loss": float(np.mean(losses)),
                            "accuracy": float(np.mean(hits)), "seconds": round(elapsed, 3)})
            log(f"step {step:5d}/{total}  loss {history[-1]['loss']:.4f}  "
                f"acc {history[-1]['accuracy']:.3f}  {elapsed:6.1f}s  "
                f"{step * config.batch_size * L / elapsed:,.0f} tokens/s")
            losses, hits = [], []
    train_seconds = time.perf_counter() - start
    test_accuracy = evaluate(model, test_set)
    result = {
        "task": config.task, "test_accuracy": test_accuracy, "steps": total,
        "seconds": round(time.perf_counter() - start, 2), "train_seconds": round(train_seconds, 2),
        "params": model.num_parameters(), "seed": config.seed,
        "final_loss": history[-1]["loss"] if history else None,
        "chance_accuracy": 1.0 / len(data.DIGITS),
    }
    return model, result, history


RUN_DTYPES = (np.float32, np.float16)  # how save_run may store weights; load_run accepts these only


def save_run(model, config, path, dtype=np.float32) -> None:
    """Write a model's weights and its config dataclass (JSON in ``__config__``) to an ``.npz``.

    ``dtype`` float32 (the default) or float16 (half the file; the weights are rounded to it
    and cast back to float32 when loaded).
    """
    if np.dtype(dtype) not in RUN_DTYPES:
        raise ValueError(f"save_run: dtype {np.dtype(dtype)} is not one of float32, float16")
    state = {k: v.astype(dtype) for k, v in model.state_dict().items()}
    state["__config__"] = np.frombuffer(json.dumps(dataclasses.asdict(config)).encode(), np.uint8)
    save(state, path)


def load_run(path, config_type, build):
    """Rebuild a model written by ``save_run``: returns (model in eval mode, config).

    ``config_type`` is the run's config dataclass and ``build(config)`` makes a fresh model.
    """
    state = load(path)
    if "__config__" not in state:
        raise KeyError(f"{path} has no __config__ entry; it was not written by python -m tinyattn.train")
    config = _read_config(path, state.pop("__config__"), config_type)
    odd = sorted(f"{k} ({v.dtype})" for k, v in state.items() if v.dtype not in RUN_DTYPES)
    if odd:
        raise ValueError(f"{path}: weights {', '.join(odd)} are not float32 or float16 "
                         f"as save_run writes them")
    model = build(config)
    model.load_state_dict(state)
    return model.eval(), config


def _read_config(path, raw: np.ndarray, config_type):
    """The config dataclass stored as JSON bytes in ``__config__``; a ValueError naming ``path`` if broken."""
    try:
        fields = json.loads(raw.tobytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: its __config__ is not valid UTF-8 text ({err.reason})") from None
    except ValueError as err:
        raise ValueError(f"{path}: its __config__ is not valid JSON ({err})") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{path}: its __config__ holds {type(fields).__name__}; expected a JSON object")
    known = [f.name for f in dataclasses.fields(config_type)]
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ValueError(f"{path}: its __config__ has unknown field {unknown[0]!r} for "
                         f"{config_type.__name__} (known: {', '.join(known)})")
    return config_type(**fields)


def save_checkpoint(model: TinyEncoder, config: Config, path) -> None:
    """``save_run`` for a TinyEncoder run."""
    save_run(model, config, path)


def load_checkpoint(path):
    """Rebuild the TinyEncoder saved by ``save_checkpoint``: returns (model in eval mode, Config)."""
    return load_run(path, Config, build_model)


def checkpoint_path(name: str) -> Path:
    """The committed run ``name`` (e.g. a task), shipped as package data: ``tinyattn/checkpoints/{name}.npz``.

    Its training log is the ``.json`` beside it. Written by
    ``python -m tinyattn.train --task T --save tinyattn/checkpoints/T.npz`` from the repository.
    """
    path = Path(str(resources.files("tinyattn") / "checkpoints" / f"{name}.npz"))
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.npz"))
        raise FileNotFoundError(f"no committed checkpoint named {name!r}; known: {', '.join(known)}")
    return path


def _log_path(path) -> str:
    return os.path.splitext(os.fspath(path))[0] + ".json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyattn.train", description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True,
                        choices=data.TASKS + data.SEQ2SEQ_TASKS + data.LM_TASKS + ("shakespeare",))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None,
                        help=f"training steps (default: {DEFAULT_STEPS})")
    parser.add_argument("--save", metavar="PATH", help="write the checkpoint (.npz) and its log (.json)")
    parser.add_argument("--no-positions", action="store_true",
                        help="drop the positional encoding (a failure mode worth seeing)")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads (default 1: fastest for a model this small)")
    args = parser.parse_args(argv)
    for name in ("steps", "log_every", "threads"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.save is not None:
        if os.path.splitext(args.save)[1].lower() == ".json":
            parser.error(f"--save {args.save}: the training log is written to PATH with .json, so "
                         f"the checkpoint needs another name (e.g. {os.path.splitext(args.save)[0]}.npz)")
        try:  # before training, so a bad path does not cost the run
            check_writable(args.save)
            check_writable(_log_path(args.save))
        except ValueError as err:
            parser.error(f"--save: {err}")
    set_num_threads(args.threads)
    if args.task == "shakespeare":
        return shakespeare_main(args)
    if args.task in data.LM_TASKS:
        return lm_main(args)
    if args.task in data.SEQ2SEQ_TASKS:
        return main_translate(args)
    config = Config(task=args.task, seed=args.seed, steps=args.steps,
                    positional=not args.no_positions, log_every=args.log_every)
    print(f"training on {config.task} for {config.total_steps()} steps (seed {config.seed})", flush=True)
    model, result, history = train(config, log=lambda line: print(line, flush=True))
    print(f"held-out accuracy {result['test_accuracy']:.4f} on {config.n_test} test examples", flush=True)
    if args.save:
        save_checkpoint(model, config, args.save)
        log = json.dumps({"config": dataclasses.asdict(config), "result": result, "history": history}, indent=1)
        atomic_write(_log_path(args.save), lambda f: f.write(log.encode() + b"\n"))
        result["checkpoint"] = os.fspath(args.save)
    print(json.dumps(result), flush=True)
    return 0



# ----------------------------------------------------------------------------------------------
# translate: the encoder-decoder on dates (``python -m tinyattn.train --task translate``)
# ----------------------------------------------------------------------------------------------

TRANSLATE_STEPS = 1000


@dataclass
class TranslateConfig:
    """Everything that determines a translate run (data, model, optimizer, seed)."""

    task: str = "translate"
    seed: int = 0
    steps: int = TRANSLATE_STEPS
    batch_size: int = 64
    d_model: int = 64
    nhead: int = 4
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    dim_feedforward: int = 128
    tie_weights: bool = False
    label_smoothing: float = 0.1
    lr: float = 3e-3
    warmup: int = 100
    n_train: int = 50000
    n_val: int = 200
    n_test: int = 1000
    log_every: int = 100


def build_translator(config: TranslateConfig):
    """A freshly initialized ``models.Translator`` for ``config`` (seeded with ``config.seed``)."""
    from .models import Translator

    autograd.manual_seed(config.seed)
    return Translator(len(data.SRC_VOCAB), len(data.TGT_VOCAB), config.d_model, config.nhead,
                      config.num_encoder_layers, config.num_decoder_layers, config.dim_feedforward,
                      tie_weights=config.tie_weights)


def translate_predictions(model, split: data.DateSplit, beam_size: int = 1, length_penalty: float = 0.0,
                          batch_size: int = 500) -> list:
    """The decoded ISO strings for every example of ``split`` (greedy, or beam search)."""
    out = []
    for start in range(0, len(split), batch_size):
        src = split.src[start:start + batch_size]
        src = src[:, :max(1, int((src != data.PAD).sum(axis=1).max()))]  # (n, S): drop all-PAD columns
        if beam_size == 1:
            tokens, _ = model.greedy_decode(src)
        else:
            tokens, _ = model.beam_search(src, beam_size, length_penalty)
        out.extend(data.decode_target(row) for row in tokens)
    return out


def translate_exact_match(model, split: data.DateSplit, **kwargs) -> float:
    """Fraction of ``split`` whose decoded string equals the ISO date exactly."""
    predictions = translate_predictions(model, split, **kwargs)
    return float(np.mean([p == t for p, t in zip(predictions, split.targets)]))


def teacher_forced_loss(model, src: np.ndarray, tgt: np.ndarray, label_smoothing: float = 0.0):
    """Cross-entropy of the target given its true prefix: returns (loss, logits (N, T, n_vocab)).

    The decoder reads tgt[:, :-1] (BOS y_1 … y_{T−1}) and is scored on tgt[:, 1:] (y_1 … EOS);
    PAD targets are ignored.
    """
    logits = model(src, tgt[:, :-1])  # (N, T, n_vocab)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1),
                           ignore_index=data.PAD, label_smoothing=label_smoothing)
    return loss, logits


def train_translate(config: TranslateConfig, log=print):
    """Train a Translator on dates; return (model, result dict, history list).

    Each step draws ``batch_size`` training examples, trims the source to the longest one and
    takes one AdamW step on the teacher-forced, label-smoothed cross-entropy (warm-up, then
    cosine decay). Each log line reports the mean loss and next-character accuracy since the
    previous line and the greedy exact match on the validation dates.
    """
    train_set, val_set, test_set = data.date_splits(config.n_train, config.n_val, config.n_test, config.seed)
    model = build_translator(config)
    opt = optim.AdamW(list(model.parameters()), lr=config.lr, weight_decay=0.0)
    sched = optim.LambdaLR(opt, lambda s: lr_factor(s, config.warmup, config.steps))
    batches = np.random.default_rng([config.seed, 2])
    history, losses, hits, tokens_seen = [], [], [], 0
    start = time.perf_counter()
    for step in range(1, config.steps + 1):
        model.train()
        idx = batches.integers(0, len(train_set), config.batch_size)  # (N,)
        src = train_set.src[idx]
        src = src[:, :int((src != data.PAD).sum(axis=1).max())]  # (N, S): the longest source
        tgt = train_set.tgt[idx]  # (N, 12)
        loss, logits = teacher_forced_loss(model, src, tgt, config.label_smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        hits.append(float(np.mean(logits.data.argmax(axis=-1) == tgt[:, 1:])))
        tokens_seen += src.size + tgt.size
        if step % config.log_every == 0 or step == config.steps:
            elapsed = time.perf_counter() - start
            val = translate_exact_match(model, val_set)
            history.append({"step": step, "loss": float(np.mean(losses)), "accuracy": float(np.mean(hits)),
                            "val_exact_match": val, "seconds": round(elapsed, 3)})
            log(f"step {step:5d}/{config.steps}  loss {history[-1]['loss']:.4f}  "
                f"char acc {history[-1]['accuracy']:.3f}  val exact {val:.3f}  {elapsed:6.1f}s  "
                f"{tokens_seen / elapsed:,.0f} tokens/s")
            losses, hits = [], []
    train_seconds = time.perf_counter() - start
    predictions = translate_predictions(model, test_set)
    result = {
        "task": "translate",
        "test_exact_match": float(np.mean([p == t for p, t in zip(predictions, test_set.targets)])),
        "test_char_accuracy": float(np.mean([a == b for p, t in zip(predictions, test_set.targets)
                                             for a, b in zip(p.ljust(len(t)), t)])),
        "val_exact_match": history[-1]["val_exact_match"], "steps": config.steps,
        "seconds": round(time.perf_counter() - start, 2), "train_seconds": round(train_seconds, 2),
        "params": model.num_parameters(), "seed": config.seed, "final_loss": history[-1]["loss"],
        "n_test": len(test_set),
    }
    return model, result, history


def save_translator(model, config: TranslateConfig, path) -> None:
    """``save_run`` for a Translator run."""
    save_run(model, config, path)


def load_translator(path=None):
    """Rebuild a Translator saved by ``save_translator`` (default: the committed checkpoint).

    Returns (model in eval mode, TranslateConfig, the training log dict from the ``.json``
    beside it, or None when there is none).
    """
    path = checkpoint_path("translate") if path is None else path
    path = Path(path)
    model, config = load_run(path, TranslateConfig, build_translator)
    log_file = path.parent / (path.name.rsplit(".", 1)[0] + ".json")
    log = json.loads(log_file.read_text()) if log_file.is_file() else None
    return model, config, log


def main_translate(args) -> int:
    """The ``--task translate`` branch of ``main``."""
    config = TranslateConfig(seed=args.seed, steps=args.steps or TRANSLATE_STEPS, log_every=args.log_every)
    print(f"training the date translator for {config.steps} steps (seed {config.seed})", flush=True)
    model, result, history = train_translate(config, log=lambda line: print(line, flush=True))
    print(f"held-out exact match {result['test_exact_match']:.4f} on {config.n_test} test dates", flush=True)
    if args.save:
        save_translator(model, config, args.save)
        log = json.dumps({"config": dataclasses.asdict(config), "result": result, "history": history},
                         indent=1)
        atomic_write(_log_path(args.save), lambda f: f.write(log.encode() + b"\n"))
        result["checkpoint"] = os.fspath(args.save)
    print(json.dumps(result), flush=True)
    return 0


# ----------------------------------------------------------------------------------------------
# language-model tasks: a GPT trained on next-token prediction (``--task add`` / ``induction``)
# ----------------------------------------------------------------------------------------------

LM_DEFAULTS = {
    "add": dict(steps=2500, batch_size=64, d_model=64, num_heads=4, num_layers=2, mlp=True,
                lr=3e-3, warmup=100, log_every=100, probe_every=0, n_test=2000),
    "induction": dict(steps=3000, batch_size=64, d_model=64, num_heads=2, num_layers=2,
                      mlp=False, lr=1e-3, warmup=50, log_every=100, probe_every=25, n_test=500),
}


@dataclass
class LMConfig:
    """Everything that determines a GPT run; ``None`` fields take ``LM_DEFAULTS[task]``."""

    task: str = "add"
    seed: int = 0
    steps: int | None = None
    batch_size: int | None = None
    d_model: int | None = None
    num_heads: int | None = None
    num_layers: int | None = None
    mlp: bool | None = None
    lr: float | None = None
    warmup: int | None = None
    log_every: int | None = None
    probe_every: int | None = None
    n_test: int | None = None

    def __post_init__(self):
        if self.task not in LM_DEFAULTS:
            raise ValueError(f"unknown language-model task {self.task!r}; expected one of "
                             f"{', '.join(LM_DEFAULTS)}")
        for name, value in LM_DEFAULTS[self.task].items():
            if getattr(self, name) is None:
                setattr(self, name, value)


def build_gpt(config: LMConfig):
    """A freshly initialized GPT for ``config`` (seeded with ``config.seed``)."""
    from .models import GPT

    autograd.manual_seed(config.seed)
    if config.task == "add":
        vocab, block = len(data.ADD_VOCAB), data.ADD_SEQ_LEN
    else:
        vocab, block = data.INDUCTION_VOCAB_SIZE, data.INDUCTION_SEQ_LEN - 1
    return GPT(vocab, block, d_model=config.d_model, num_heads=config.num_heads,
               num_layers=config.num_layers, mlp=config.mlp)


def add_exact_match(model, tokens: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Greedy answers to "aaa+bbb=": tokens (n, 12) -> (n,) bool, True where all 4 digits are right."""
    prompt_len = data.ADD_SEQ_LEN - data.ADD_ANSWER_LEN
    hits = []
    for s in range(0, len(tokens), batch_size):
        rows = tokens[s:s + batch_size]  # (n, 12)
        out = model.generate(rows[:, :prompt_len], data.ADD_ANSWER_LEN, temperature=0)  # (n, 12)
        hits.append((out[:, prompt_len:] == rows[:, prompt_len:]).all(axis=1))
    return np.concatenate(hits)


def next_token_losses(model, seqs: np.ndarray):
    """Per-position cross-entropy of next-token prediction: seqs (N, T+1) -> (loss (N, T), logits).

    Position t reads tokens 0..t and is scored on token t + 1.
    """
    logits = model(seqs[:, :-1])  # (N, T, n_vocab)
    N, T, n_vocab = logits.shape
    losses = F.cross_entropy(logits.reshape(N * T, n_vocab), seqs[:, 1:].reshape(-1), reduction="none")
    return losses.reshape(N, T), logits


def induction_scores(maps: np.ndarray, offset) -> tuple:
    """Per-head (previous-token score, induction score) from maps (layers, B, H, T, T).

    ``maps`` are taken on the T = 24 input positions of induction rows whose copies sit
    ``offset`` (B,) positions after their originals. previous-token: the mean weight from
    position t to t − 1, over t = 1 .. T−1. induction: the mean weight from each position t of
    the copy (the ``repeat`` mask of ``data.induction_positions``) to t − offset + 1, the
    position right after the current token's previous occurrence. Each (layers, H), in [0, 1].
    """
    T = maps.shape[-1]
    t = np.arange(1, T)
    prev = maps[..., t, t - 1].mean(axis=(1, 3))  # (layers, H)
    queries = np.flatnonzero(data.induction_positions()[1])  # (R,)
    keys = queries[None, :] - np.asarray(offset)[:, None] + 1  # (B, R)
    rows = np.arange(maps.shape[1])[:, None]  # (B, 1)
    induction = maps[:, rows, :, queries[None, :], keys].mean(axis=(0, 1))  # (B, R, layers, H) -> (layers, H)
    return prev, induction


def _lm_step(model, opt, sched, loss) -> None:
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def _train_add(config: LMConfig, model, opt, sched, log):
    """Next-token loss on the 4 answer digits of fresh problems; held-out exact match at the end."""
    split = data.make_add_split(config.n_test, config.seed)
    rng = np.random.default_rng([config.seed, 1])
    answer = slice(data.ADD_SEQ_LEN - 1 - data.ADD_ANSWER_LEN, None)  # positions reading "=", s1, s2, s3
    history, losses, hits = [], [], []
    start = time.perf_counter()
    for step in range(1, config.steps + 1):
        seqs = data.add_sequences(*data.sample_add_pairs(config.batch_size, rng, split.held_out))  # (B, 12)
        per_token, logits = next_token_losses(model, seqs)  # (B, 11)
        loss = per_token[:, answer].mean()
        _lm_step(model, opt, sched, loss)
        losses.append(loss.item())
        hits.append(float(np.mean((logits.data[:, answer].argmax(-1) == seqs[:, 1:][:, answer]).all(1))))
        if step % config.log_every == 0 or step == config.steps:
            elapsed = time.perf_counter() - start
            history.append({"step": step, "loss": round(float(np.mean(losses)), 5),
                            "train_exact_match": round(float(np.mean(hits)), 4),
                            "seconds": round(elapsed, 2)})
            log(f"step {step:5d}/{config.steps}  loss {history[-1]['loss']:.4f}  "
                f"exact {history[-1]['train_exact_match']:.3f}  {elapsed:6.1f}s")
            losses, hits = [], []
    train_seconds = time.perf_counter() - start
    model.eval()
    exact = add_exact_match(model, split.test)
    return {"test_exact_match": float(exact.mean()), "n_test": len(exact),
            "train_seconds": round(train_seconds, 2)}, history


def _train_induction(config: LMConfig, model, opt, sched, log):
    """Next-token loss on every position of fresh sequences; per step the loss on the first
    part and on the copy, every ``probe_every`` steps the per-head scores on held-out rows."""
    test, test_offset = data.make_induction_test(config.n_test, config.seed)
    first, repeat = data.induction_positions()  # (T − 1,) masks
    held_out = {row.tobytes() for row in test}
    probe, probe_offset = test[:64], test_offset[:64]  # (64, T)
    rng = np.random.default_rng([config.seed, 1])
    curve = {"step": [], "loss": [], "loss_first": [], "loss_repeat": []}
    probes, history = [], []
    start = time.perf_counter()

    def probe_scores(step):
        model.eval()
        prev, ind = induction_scores(model.attention_maps(probe[:, :-1]), probe_offset)  # (layers, H) each
        model.train()
        probes.append({"step": step, "previous_token": np.round(prev, 4).tolist(),
                       "induction": np.round(ind, 4).tolist()})

    probe_scores(0)
    for step in range(1, config.steps + 1):
        seqs, _ = data.induction_sequences(config.batch_size, rng)  # (B, T)
        keep = [i for i, row in enumerate(seqs) if row.tobytes() not in held_out]
        per_token, _ = next_token_losses(model, seqs[keep])  # (B, T − 1)
        loss = per_token.mean()
        _lm_step(model, opt, sched, loss)
        curve["step"].append(step)
        curve["loss"].append(round(loss.item(), 5))
        curve["loss_first"].append(round(float(per_token.data[:, first].mean()), 5))
        curve["loss_repeat"].append(round(float(per_token.data[:, repeat].mean()), 5))
        if config.probe_every and step % config.probe_every == 0:
            probe_scores(step)
        if step % config.log_every == 0 or step == config.steps:
            elapsed = time.perf_counter() - start
            recent = slice(-config.log_every, None)
            history.append({"step": step, "loss_first": round(float(np.mean(curve["loss_first"][recent])), 4),
                            "loss_repeat": round(float(np.mean(curve["loss_repeat"][recent])), 4),
                            "seconds": round(elapsed, 2)})
            log(f"step {step:5d}/{config.steps}  loss first part {history[-1]['loss_first']:.3f}  "
                f"repeat {history[-1]['loss_repeat']:.3f}  {elapsed:6.1f}s")
    train_seconds = time.perf_counter() - start
    model.eval()
    with autograd.no_grad():
        per_token, logits = next_token_losses(model, test)  # (n, T − 1)
    correct = logits.data.argmax(-1) == test[:, 1:]  # (n, T − 1)
    result = {"in_context_accuracy": float(correct[:, repeat].mean()), "n_test": len(test),
              "test_loss_first": float(per_token.data[:, first].mean()),
              "test_loss_repeat": float(per_token.data[:, repeat].mean()),
              "chance_loss": math.log(data.INDUCTION_TOKENS), "train_seconds": round(train_seconds, 2)}
    return result, {"log": history, "curve": curve, "probes": probes}


def train_lm(config: LMConfig, log=print):
    """Train a GPT on ``config.task`` ("add" or "induction"); return (model, result, history)."""
    model = build_gpt(config)
    opt = optim.AdamW(list(model.parameters()), lr=config.lr, weight_decay=0.0)
    sched = optim.LambdaLR(opt, lambda s: lr_factor(s, config.warmup, config.steps))
    model.train()
    start = time.perf_counter()
    trainer = _train_add if config.task == "add" else _train_induction
    result, history = trainer(config, model, opt, sched, log)
    result = {"task": config.task, **result, "steps": config.steps,
              "seconds": round(time.perf_counter() - start, 2), "params": model.num_params(),
              "seed": config.seed}
    return model, result, history


def lm_checkpoint_path(task: str):
    """``checkpoint_path(task)`` for a language-model task (a ValueError for any other task)."""
    if task not in data.LM_TASKS:
        raise ValueError(f"unknown language-model task {task!r}; expected one of {', '.join(data.LM_TASKS)}")
    return checkpoint_path(task)


def save_gpt(model, config: LMConfig, path) -> None:
    """``save_run`` for a GPT run."""
    save_run(model, config, path)


def load_gpt(path):
    """Rebuild the GPT saved by ``save_gpt``: returns (model in eval mode, LMConfig)."""
    return load_run(path, LMConfig, build_gpt)


def load_lm_log(task: str) -> dict:
    """The committed training log of ``task`` (config, result, history), from package data."""
    return json.loads(lm_checkpoint_path(task).with_suffix(".json").read_text())


def lm_main(args) -> int:
    """``python -m tinyattn.train --task add|induction``: train a GPT, save, print a JSON line.

    Of the command-line options, --seed, --steps, --save and --threads apply; the other
    settings are LM_DEFAULTS[task].
    """
    set_num_threads(args.threads)
    config = LMConfig(task=args.task, seed=args.seed, steps=args.steps)
    print(f"training a GPT on {config.task} for {config.steps} steps (seed {config.seed})", flush=True)
    model, result, history = train_lm(config, log=lambda line: print(line, flush=True))
    if config.task == "add":
        print(f"held-out exact match {result['test_exact_match']:.4f} on {result['n_test']} problems", flush=True)
    else:
        print(f"held-out in-context accuracy {result['in_context_accuracy']:.4f} on "
              f"{result['n_test']} sequences", flush=True)
    if args.save:
        save_gpt(model, config, args.save)
        log = json.dumps({"config": dataclasses.asdict(config), "result": result, "history": history})
        atomic_write(_log_path(args.save), lambda f: f.write(log.encode() + b"\n"))
        result["checkpoint"] = os.fspath(args.save)
    print(json.dumps(result), flush=True)
    return 0



# ----------------------------------------------------------------------------------------------
# shakespeare: a character-level GPT with nanoGPT's shakespeare_char CPU settings
# (``python -m tinyattn.train --task shakespeare``)
# ----------------------------------------------------------------------------------------------


@dataclass
class ShakespeareConfig:
    """nanoGPT's shakespeare_char settings for a CPU (its README's command line) and our logging.

    ``chars`` is the corpus vocabulary, filled in at training time so that a checkpoint can
    decode its own samples without the corpus.
    """

    task: str = "shakespeare"
    seed: int = 0
    steps: int = 2000
    batch_size: int = 12
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    beta2: float = 0.99
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 20
    log_every: int = 50
    sample_steps: tuple = (0, 200, 1000, 2000)
    sample_prompt: str = "\n"
    sample_len: int = 300
    chars: str = ""


def build_shakespeare_gpt(config: ShakespeareConfig):
    """A freshly initialized character-level GPT for ``config`` (seeded with ``config.seed``)."""
    from .models import GPT

    if not config.chars:
        raise ValueError("ShakespeareConfig.chars is empty; expected the corpus vocabulary")
    autograd.manual_seed(config.seed)
    return GPT(len(config.chars), config.block_size, d_model=config.n_embd, num_heads=config.n_head,
               num_layers=config.n_layer, dropout=config.dropout)


def cosine_lr(step: int, warmup: int, total: int, lr: float, min_lr: float) -> float:
    """nanoGPT's schedule: lr·(step+1)/(warmup+1) while warming up, then cosine from lr to min_lr.

    lr(step) = min_lr + ½ (1 + cos(π r)) (lr − min_lr), r = (step − warmup) / (total − warmup).
    """
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    r = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (lr - min_lr)


def decay_groups(model, weight_decay: float) -> list:
    """AdamW parameter groups: weight decay on the matrices of the Linear layers only.

    Biases, LayerNorm gains and shifts, and the token and position embeddings (vectors looked
    up, not matrices multiplied) get weight_decay 0.
    """
    from .nn.modules import Embedding, Linear

    matrices = [m.weight for m in model.modules() if isinstance(m, Linear)]
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, Embedding)}
    decay_ids = {id(p) for p in matrices} - embeddings
    rest = [p for p in model.parameters() if id(p) not in decay_ids]
    return [{"params": [p for p in model.parameters() if id(p) in decay_ids], "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0}]


def lm_loss(model, windows: np.ndarray):
    """Mean next-character cross-entropy of windows (B, T+1): reads [:, :-1], is scored on [:, 1:]."""
    logits = model(windows[:, :-1])  # (B, T, V)
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V), windows[:, 1:].reshape(-1))


def estimate_loss(model, batches: list) -> float:
    """Mean loss over fixed batches of windows, in eval mode without a graph."""
    was_training = model.training
    model.eval()
    with autograd.no_grad():
        value = float(np.mean([lm_loss(model, w).item() for w in batches]))
    model.train(was_training)
    return value


def split_loss(model, ids: np.ndarray, block_size: int, batch_size: int = 64) -> float:
    """Mean loss over every character of ``ids``, read in consecutive non-overlapping windows."""
    n = (len(ids) - 1) // block_size
    starts = np.arange(n) * block_size  # (n,)
    windows = ids[starts[:, None] + np.arange(block_size + 1)]  # (n, block_size + 1)
    batches = [windows[s:s + batch_size] for s in range(0, n, batch_size)]
    return float(np.average([estimate_loss(model, [w]) for w in batches], weights=[len(w) for w in batches]))


def sample_text(model, corpus, prompt: str, length: int, seed: int, temperature: float = 1.0,
                top_k=None, top_p=None, on_text=None) -> str:
    """``length`` characters sampled after ``prompt`` (the prompt not included), seeded."""
    idx = corpus.encode(prompt)[None]  # (1, T0)
    stream = None if on_text is None else (lambda tok: on_text(corpus.decode(tok)))
    out = model.generate(idx, length, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                         crop=True, on_token=stream)
    return corpus.decode(out[0, idx.shape[1]:])


def _duration(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def train_shakespeare(config: ShakespeareConfig, corpus=None, log=print):
    """Train the character GPT on the Shakespeare corpus; return (model, result, history).

    Each step: a batch of random windows, the mean next-character loss, backward, the gradient
    norm clipped to ``grad_clip``, an AdamW step at ``cosine_lr``. Every ``eval_every`` steps
    the train and validation losses on fixed batches (drawn once with the seed); at
    ``sample_steps`` a seeded sample. history: "train_loss" (every step), "evals" (step, train,
    val, seconds) and "samples" (step -> text).
    """
    corpus = data.load_shakespeare() if corpus is None else corpus
    config = dataclasses.replace(config, chars=corpus.chars)
    model = build_shakespeare_gpt(config)
    opt = optim.AdamW(decay_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, config.beta2))
    fixed = np.random.default_rng([config.seed, 2])
    eval_sets = {split: [data.sample_blocks(ids, config.batch_size, config.block_size, fixed)
                         for _ in range(config.eval_batches)]
                 for split, ids in (("train", corpus.train), ("val", corpus.val))}
    batches = np.random.default_rng([config.seed, 1])
    history = {"train_loss": [], "grad_norm": [], "evals": [], "samples": {}}
    tokens_per_step = config.batch_size * config.block_size
    start, train_seconds = time.perf_counter(), 0.0

    def checkpoint(step):
        if step % config.eval_every == 0 or step == config.steps:
            row = {"step": step, "train": round(estimate_loss(model, eval_sets["train"]), 4),
                   "val": round(estimate_loss(model, eval_sets["val"]), 4),
                   "seconds": round(time.perf_counter() - start, 2)}
            history["evals"].append(row)
            log(f"step {step:5d}/{config.steps}  eval: train loss {row['train']:.4f}  "
                f"val loss {row['val']:.4f}")
        if step in config.sample_steps:
            history["samples"][str(step)] = sample_text(model, corpus, config.sample_prompt,
                                                        config.sample_len, seed=config.seed)

    model.train()
    checkpoint(0)
    for step in range(1, config.steps + 1):
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step - 1, config.warmup, config.steps, config.lr, config.min_lr)
        loss = lm_loss(model, data.sample_blocks(corpus.train, config.batch_size, config.block_size, batches))
        opt.zero_grad()
        loss.backward()
        history["grad_norm"].append(round(nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip), 4))
        opt.step()
        train_seconds += time.perf_counter() - t0
        history["train_loss"].append(round(loss.item(), 4))
        if step % config.log_every == 0 or step == config.steps:
            elapsed = time.perf_counter() - start
            eta = elapsed / step * (config.steps - step)
            recent = np.mean(history["train_loss"][-config.log_every:])
            log(f"step {step:5d}/{config.steps}  loss {recent:.4f}  {elapsed:6.1f}s  "
                f"{step * tokens_per_step / train_seconds:,.0f} tokens/s  ETA {_duration(eta)}")
        checkpoint(step)
    seconds = time.perf_counter() - start
    final = history["evals"][-1]
    result = {"task": "shakespeare", "steps": config.steps, "train_loss": final["train"],
              "val_loss": final["val"],
              "val_loss_full": round(split_loss(model, corpus.val, config.block_size), 4),
              "seconds": round(seconds, 2), "train_seconds": round(train_seconds, 2),
              "tokens_per_second": round(config.steps * tokens_per_step / train_seconds),
              "params": model.num_params(), "seed": config.seed, "vocab_size": corpus.vocab_size}
    return model, result, history


def load_shakespeare_run(path=None):
    """The committed Shakespeare GPT (or the one saved at ``path``): (model in eval mode, config, log).

    The log is the ``.json`` beside the checkpoint (None when there is none); the model decodes
    with ``config.chars`` and needs no corpus.
    """
    path = Path(checkpoint_path("shakespeare") if path is None else path)
    model, config = load_run(path, ShakespeareConfig, build_shakespeare_gpt)
    config.sample_steps = tuple(config.sample_steps)
    log_file = Path(_log_path(path))
    log = json.loads(log_file.read_text()) if log_file.is_file() else None
    return model, config, log


def shakespeare_main(args) -> int:
    """The ``--task shakespeare`` branch of ``main``: --seed, --steps, --save, --log-every apply."""
    config = ShakespeareConfig(seed=args.seed, steps=args.steps or ShakespeareConfig.steps,
                               log_every=args.log_every)
    corpus = data.load_shakespeare()
    print(f"training a character GPT on Shakespeare ({len(corpus.train):,} training characters, "
          f"{corpus.vocab_size} distinct) for {config.steps} steps (seed {config.seed})", flush=True)
    model, result, history = train_shakespeare(config, corpus, log=lambda line: print(line, flush=True))
    config = dataclasses.replace(config, chars=corpus.chars)
    print(f"validation loss {result['val_loss']:.4f} (fixed batches), {result['val_loss_full']:.4f} "
          f"(the whole validation split)", flush=True)
    if args.save is not None:
        save_run(model, config, args.save, dtype=np.float16)  # half the size; the loss moves < 1e-5
        log = json.dumps({"config": dataclasses.asdict(config), "result": result, "history": history})
        atomic_write(_log_path(args.save), lambda f: f.write(log.encode() + b"\n"))
        result["checkpoint"] = os.fspath(args.save)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
