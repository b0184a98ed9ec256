"""The efficient-attention arena: every registered attention variant against plain SDPA.

    python -m tinyattn.arena                    # the full run (~2 min scaling + ~10 min MQAR)
    python -m tinyattn.arena --quick            # tiny sizes and a short MQAR: a few seconds
    python -m tinyattn.arena --write            # also write arena.json and the README sections
    python -m tinyattn.arena --sizes 256 1024 --no-mqar --out /tmp/arena.json

Two measurements, over ``tinyattn.efficient.variants("attention")`` (so a newly registered
variant is in the next run) plus plain ``scaled_dot_product_attention`` (``sdpa``) as the baseline:

1. **Scaling.** Random (B, H, L, D) = (1, 4, L, 64) float32 inputs, non-causal, each variant with
   its registry ``options``: the median forward time, the median forward + backward time, the
   tracemalloc peak of each, at every L of ``--sizes``; log-log slopes of time and memory against
   L (least squares over the sizes ≥ ``SLOPE_FROM``). A variant whose forward + backward takes
   longer than ``--budget`` seconds at some L is not run at larger L. In float64 at the sizes up
   to ``--error-max`` (where the dense L x L reference fits), the error of the output against
   exact softmax attention: per query row r_i = ‖o_i − e_i‖ / ‖e_i‖, reported as max_i r_i and
   mean_i r_i (and the same against the variant's own ``reference``, which checks the code
   against its claim rather than the claim against softmax).
2. **MQAR quality.** Multi-query associative recall (Arora et al. 2023; ``data.mqar_sequences``):
   the same small model (``RecallNet``) trained from the same seed with each variant's ``attend``
   as its attention, on a mix of pair counts, then the accuracy on held-out sequences for each
   pair count. The attention is bidirectional (``is_causal=False``) for every variant: the
   sequences put every query after all the pairs and never hold an answer, so nothing leaks, and
   variants without a causal form (Linformer) are trained like the rest.

The results go to a JSON file (``--out``; ``--write`` puts it at
``tinyattn/measurements/arena.json`` and rewrites the ``arena`` sections of ``benchmarks/README.md``
and ``README.md``, relative to ``--root``, the repository; default: the current folder).
Progress lines with an estimate of the time left go to stderr.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before NumPy loads BLAS: algorithms, not thread scheduling

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from importlib import resources  # noqa: E402

import numpy as np  # noqa: E402

from . import data as tasks  # noqa: E402
from . import efficient as eff  # noqa: E402
from .autograd import Tensor, manual_seed, no_grad  # noqa: E402
from .efficient.common import dense_attention  # noqa: E402
from .nn import functional as F  # noqa: E402
from .nn import init  # noqa: E402
from .nn.modules import GELU, Embedding, LayerNorm, Linear, Module, ModuleList, Sequential  # noqa: E402
from .optim import AdamW  # noqa: E402
from .serialization import atomic_write  # noqa: E402

__all__ = ["BASELINE", "contenders", "row_errors", "loglog_slope", "scaling", "RecallNet", "train_mqar",
           "mqar", "run", "markdown", "readme_markdown", "write_sections", "load_results", "main"]

BASELINE = "sdpa"
H, D = 4, 64  # heads and head dim of the scaling inputs (B = 1)
SIZES = (256, 512, 1024, 2048, 4096, 8192)
QUICK_SIZES = (64, 128, 256)
SLOPE_FROM = 1024  # slopes are fitted over L ≥ this (below it, Python overhead dominates)
ERROR_MAX = 2048
MQAR_PAIRS = (4, 8, 16, 32)
RESULTS = resources.files("tinyattn") / "measurements" / "arena.json"
RESULTS_IN_REPO = os.path.join("tinyattn", "measurements", "arena.json")


# ----------------------------------------------------------------------------------------------
# who is in the arena
# ----------------------------------------------------------------------------------------------

def _sdpa(q, k, v, is_causal=False):
    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)


def _largest_divisor(L: int, at_most: int) -> int:
    """The largest d ≤ at_most that divides L (L itself when at_most ≥ L)."""
    return max(d for d in range(1, min(at_most, L) + 1) if L % d == 0)


# Options that are lengths, fitted to each call's key length S: {name: {option: (how, rule(value, S))}}.
# Nyström needs m ≤ S landmarks; LSH needs a chunk size that divides S (MQAR's S = 3P is 12 ... 96).
LENGTH_RULES = {
    "nystrom": {"num_landmarks": ("min({}, S)", min)},
    "lsh": {"chunk_size": ("largest divisor of S ≤ {}", lambda c, S: _largest_divisor(S, c))},
}


def options_at(name: str, options: dict, S: int) -> dict:
    """The options ``name`` runs with on S keys: ``options`` with its LENGTH_RULES applied."""
    rules = LENGTH_RULES.get(name, {})
    return {key: rules[key][1](val, S) if key in rules else val for key, val in options.items()}


def options_text(name: str, options: dict) -> str:
    """The options as the tables state them, a length rule spelled out: "num_landmarks = min(32, S)"."""
    rules = LENGTH_RULES.get(name, {})
    parts = [f"{key} = {rules[key][0].format(val) if key in rules else val}" for key, val in options.items()]
    return ", ".join(parts) or "—"


def _fitted(name: str, fn):
    """``fn`` (an attend or a reference) called with its options fitted to each call's key length."""
    def call(q, k, v, is_causal=False, **options):
        return fn(q, k, v, is_causal=is_causal, **options_at(name, options, k.shape[-2]))
    return call


def contenders() -> list:
    """[(name, claim, attend, options)]: plain SDPA first, then every registered attention variant,
    its attend fitting the length options to the sequence (``options_at``)."""
    out = [(BASELINE, "exact", _sdpa, {})]
    for v in eff.variants("attention"):
        out.append((v.name, v.claim, _fitted(v.name, v.attend), dict(v.options)))
    return out


# ----------------------------------------------------------------------------------------------
# the numbers: errors, slopes, time, memory
# ----------------------------------------------------------------------------------------------

def row_errors(out: np.ndarray, exact: np.ndarray) -> tuple:
    """(max, mean) over query rows of r_i = ‖o_i − e_i‖ / ‖e_i‖: out, exact (..., L, D).

    A row whose exact output is 0 counts as 0 when the output is 0 too, else as infinite.
    """
    out, exact = np.asarray(out, np.float64), np.asarray(exact, np.float64)
    if out.shape != exact.shape:
        raise ValueError(f"row_errors: output {out.shape} and exact {exact.shape} differ in shape")
    diff = np.linalg.norm(out - exact, axis=-1).ravel()  # (rows,)
    norm = np.linalg.norm(exact, axis=-1).ravel()
    r = np.divide(diff, norm, out=np.where(diff > 0, np.inf, 0.0), where=norm > 0)
    return float(r.max()), float(r.mean())


def loglog_slope(x, y) -> float:
    """The least-squares slope p of log y = p log x + c (y ∝ x^p gives p)."""
    lx, ly = np.log(np.asarray(x, np.float64)), np.log(np.asarray(y, np.float64))
    if lx.size < 2 or lx.shape != ly.shape:
        raise ValueError(f"loglog_slope needs two or more (x, y) pairs of equal length, got "
                         f"{lx.size} x and {ly.size} y")
    dx = lx - lx.mean()
    return float((dx * (ly - ly.mean())).sum() / (dx * dx).sum())


def _median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_bytes(fn) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _qkv(L: int, dtype, seed: int, grad: bool) -> list:
    rng = np.random.default_rng([seed, L])
    return [Tensor(rng.standard_normal((1, H, L, D)).astype(dtype), requires_grad=grad) for _ in range(3)]


def _speed(attend, options: dict, L: int, repeat: int) -> dict:
    """Forward and forward + backward medians (s) and tracemalloc peaks (bytes) at one L, float32."""
    q, k, v = _qkv(L, np.float32, 0, grad=True)
    g = np.random.default_rng([1, L]).standard_normal((1, H, L, D)).astype(np.float32)

    def forward():
        with no_grad():
            attend(q, k, v, is_causal=False, **options)

    def forward_backward():
        for t in (q, k, v):
            t.grad = None
        attend(q, k, v, is_causal=False, **options).backward(g)

    return {"fwd_s": _median_seconds(forward, repeat), "fwd_peak": _peak_bytes(forward),
            "fwd_bwd_s": _median_seconds(forward_backward, repeat),
            "fwd_bwd_peak": _peak_bytes(forward_backward)}


def _errors(attend, reference, options: dict, L: int) -> dict:
    """float64 errors at one L against exact softmax attention and against the variant's reference."""
    q, k, v = _qkv(L, np.float64, 2, grad=False)
    with no_grad():
        out = attend(q, k, v, is_causal=False, **options).numpy()
    qa, ka, va = q.numpy(), k.numpy(), v.numpy()
    exact = dense_attention(qa, ka, va)
    own = exact if reference is None else reference(qa, ka, va, is_causal=False, **options)
    err_max, err_mean = row_errors(out, exact)
    ref_max, _ = row_errors(out, own)
    return {"err_max": err_max, "err_mean": err_mean, "ref_err_max": ref_max}


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Clock:
    """Elapsed time and a linear estimate of the time left, from the share of the work done."""

    def __init__(self, total_work: float):
        self.start, self.total, self.done = time.perf_counter(), total_work, 0.0

    def tick(self, work: float) -> str:
        self.done += work
        elapsed = time.perf_counter() - self.start
        left = elapsed * (self.total - self.done) / self.done if self.done else float("nan")
        return f"{elapsed:5.0f} s, ETA {max(left, 0):4.0f} s"


def scaling(sizes=SIZES, error_max: int = ERROR_MAX, budget: float = 0.5, names=None) -> dict:
    """Time, memory and error of every contender at every L of ``sizes`` (see the module docstring).

    Returns {name: {"claim", "options", "L", "fwd_s", "fwd_peak", "fwd_bwd_s", "fwd_bwd_peak",
    "error_L", "err_max", "err_mean", "ref_err_max", "slopes", "stopped", "failed"}}.
    """
    field = ("fwd_s", "fwd_peak", "fwd_bwd_s", "fwd_bwd_peak")
    chosen = [c for c in contenders() if names is None or c[0] in names]
    refs = {v.name: _fitted(v.name, v.reference) for v in eff.variants("attention")}
    clock = _Clock(len(chosen) * sum((L / sizes[0]) ** 1.5 for L in sizes))
    results = {}
    for name, claim, attend, options in chosen:
        r = {"claim": claim, "options": options, "L": [], **{f: [] for f in field},
             "error_L": [], "err_max": [], "err_mean": [], "ref_err_max": [], "stopped": None, "failed": None}
        results[name] = r
        for L in sizes:
            work = (L / sizes[0]) ** 1.5
            if r["stopped"] or r["failed"]:
                clock.tick(work)
                continue
            try:
                s = _speed(attend, options, L, repeat=5 if L <= 1024 else 3)
                e = _errors(attend, refs.get(name), options, L) if L <= error_max else None
            except Exception as err:  # a variant that cannot run here is reported, not fatal
                r["failed"] = f"L = {L}: {type(err).__name__}: {err}"
                _progress(f"  {name:16s} L={L:5d} FAILED: {r['failed']}")
                clock.tick(work)
                continue
            r["L"].append(L)
            for f in field:
                r[f].append(s[f])
            if e is not None:
                r["error_L"].append(L)
                for f in ("err_max", "err_mean", "ref_err_max"):
                    r[f].append(e[f])
            if s["fwd_bwd_s"] > budget and L != sizes[-1]:
                r["stopped"] = f"fwd+bwd {s['fwd_bwd_s']:.2f} s > budget {budget} s at L = {L}"
            err = f"  err {e['err_max']:.1e}" if e else ""
            _progress(f"  {name:16s} L={L:5d} fwd {s['fwd_s'] * 1e3:8.1f} ms  "
                      f"fwd+bwd {s['fwd_bwd_s'] * 1e3:8.1f} "
                      f"ms  peak {s['fwd_bwd_peak'] / 2 ** 20:7.1f} MiB{err}  ({clock.tick(work)})")
        r["slopes"] = _slopes(r)
    return results


def _slopes(r: dict) -> dict:
    """Log-log slopes of each time and memory field over L ≥ SLOPE_FROM (all L when fewer than 2)."""
    keep = [i for i, L in enumerate(r["L"]) if L >= SLOPE_FROM]
    keep = keep if len(keep) >= 2 else list(range(len(r["L"])))
    if len(keep) < 2:
        return {}
    return {f: loglog_slope([r["L"][i] for i in keep], [r[f][i] for i in keep])
            for f in ("fwd_s", "fwd_bwd_s", "fwd_bwd_peak")}


# ----------------------------------------------------------------------------------------------
# MQAR: the same small model with each variant's attention
# ----------------------------------------------------------------------------------------------

class _Block(Module):
    """Pre-norm block with a pluggable attention: x (B, T, E) -> (B, T, E).

    x = x + W_o attend(Q, K, V) (heads merged), Q, K, V = LN_1(x) W_{q,k,v}ᵀ split into H heads;
    then x = x + W_2 GELU(W_1 LN_2(x)).
    """

    def __init__(self, d_model: int, num_heads: int, attend, options: dict, is_causal: bool):
        super().__init__()
        self.num_heads, self.attend, self.options, self.is_causal = num_heads, attend, options, is_causal
        self.ln_1, self.ln_2 = LayerNorm(d_model), LayerNorm(d_model)
        self.q_proj, self.k_proj, self.v_proj = (Linear(d_model, d_model) for _ in range(3))
        self.out_proj = Linear(d_model, d_model)
        self.mlp = Sequential(Linear(d_model, 2 * d_model), GELU(), Linear(2 * d_model, d_model))

    def forward(self, x):
        B, T, E = x.shape
        Hh, Dh = self.num_heads, E // self.num_heads
        h = self.ln_1(x)
        q, k, v = (p(h).reshape(B, T, Hh, Dh).transpose(1, 2)  # (B, H, T, D) each
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        a = self.attend(q, k, v, is_causal=self.is_causal, **self.options)  # (B, H, T, D)
        x = x + self.out_proj(a.transpose(1, 2).reshape(B, T, E))  # (B, T, E)
        return x + self.mlp(self.ln_2(x))


class RecallNet(Module):
    """A small Transformer for MQAR whose attention is any ``attend``: tokens (B, T) -> (B, T, V).

    x_t = E_tok[token_t] + E_prev[token_{t−1}] + E_pos[t] (E_prev, a token shift as in H3 and
    Zoology's baselines, puts each key next to its value in one position, so one attention hop
    can match a query against the keys), then ``num_layers`` ``_Block``s, LayerNorm, a linear head.
    """

    def __init__(self, attend, options: dict, vocab_size: int, max_len: int, d_model: int = 64,
                 num_heads: int = 2, num_layers: int = 2, is_causal: bool = False):
        super().__init__()
        self.vocab_size = vocab_size
        self.wte = Embedding(vocab_size, d_model)
        self.wprev = Embedding(vocab_size + 1, d_model)  # row vocab_size: "no previous token"
        self.wpe = Embedding(max_len, d_model)
        self.blocks = ModuleList(_Block(d_model, num_heads, attend, options, is_causal)
                                 for _ in range(num_layers))
        self.ln_f = LayerNorm(d_model)
        self.head = Linear(d_model, vocab_size)
        for m in self.modules():
            if isinstance(m, (Linear, Embedding)):
                init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, Linear) and m.bias is not None:
                init.zeros_(m.bias)

    def forward(self, tokens):
        tokens = np.asarray(tokens)
        B, T = tokens.shape
        prev = np.concatenate([np.full((B, 1), self.vocab_size), tokens[:, :-1]], axis=1)  # (B, T)
        x = self.wte(tokens) + self.wprev(prev) + self.wpe(np.arange(T))  # (B, T, E)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # (B, T, V)


def _accuracy(model: RecallNet, tokens: np.ndarray, targets: np.ndarray, batch: int = 128) -> float:
    """Share of query positions whose argmax logit is the right value."""
    hits = total = 0
    with no_grad():
        for i in range(0, len(tokens), batch):
            logits = model(tokens[i:i + batch]).data  # (b, T, V)
            t = targets[i:i + batch]
            asked = t != tasks.MQAR_IGNORE
            hits += int((logits.argmax(-1)[asked] == t[asked]).sum())
            total += int(asked.sum())
    return hits / total


def train_mqar(attend, options: dict, pairs=MQAR_PAIRS, steps: int = 600, batch: int = 32, lr: float = 3e-3,
               n_test: int = 256, seed: int = 0, **model_kw) -> dict:
    """Train a ``RecallNet`` with ``attend`` on MQAR and return its held-out accuracy per pair count.

    Step s trains on a batch of ``pairs[s % len(pairs)]`` pairs (fresh sequences from
    ``default_rng([seed, 1])``); AdamW with linear warm-up over the first 10% of the steps and a
    linear decay to 0. The test sets (``default_rng([seed, 2, P])``, n_test sequences per P) are
    never trained on in practice (64!/(64−P)! key orders). Returns {"accuracy": {P: acc},
    "final_loss": mean loss of the last 10% of steps, "seconds"}.
    """
    t0 = time.perf_counter()
    manual_seed(seed)
    pairs = tuple(pairs)
    model = RecallNet(attend, options, tasks.MQAR_VOCAB_SIZE, 3 * max(pairs), **model_kw)
    opt = AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng([seed, 1])
    warm = max(1, steps // 10)
    losses = []
    for s in range(steps):
        opt.param_groups[0]["lr"] = lr * min((s + 1) / warm, (steps - s) / (steps - warm + 1))
        tokens, targets = tasks.mqar_sequences(batch, pairs[s % len(pairs)], rng)
        logits = model(tokens)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, tasks.MQAR_VOCAB_SIZE), targets.reshape(-1),
                               ignore_index=tasks.MQAR_IGNORE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.data))
    accuracy = {}
    for P in pairs:
        tokens, targets = tasks.mqar_sequences(n_test, P, np.random.default_rng([seed, 2, P]))
        accuracy[P] = _accuracy(model, tokens, targets)
    tail = losses[-max(1, steps // 10):]
    return {"accuracy": accuracy, "final_loss": float(np.mean(tail)), "seconds": time.perf_counter() - t0}


def mqar(pairs=MQAR_PAIRS, steps: int = 600, names=None, **kw) -> dict:
    """``train_mqar`` for every contender: {name: {"accuracy": {str(P): acc}, ...} or {"failed": why}}."""
    chosen = [c for c in contenders() if names is None or c[0] in names]
    clock = _Clock(len(chosen))
    out = {}
    for name, _, attend, options in chosen:
        try:
            r = train_mqar(attend, options, pairs=pairs, steps=steps, **kw)
            r["accuracy"] = {str(P): a for P, a in r["accuracy"].items()}
        except Exception as err:  # a variant that cannot train here is reported, not fatal
            r = {"failed": f"{type(err).__name__}: {err}"}
        out[name] = r
        what = r.get("failed") or "  ".join(f"P={P}: {a:.3f}" for P, a in r["accuracy"].items())
        _progress(f"  MQAR {name:16s} {what}  ({clock.tick(1)})")
    return out


# ----------------------------------------------------------------------------------------------
# the run, its tables and the README sections
# ----------------------------------------------------------------------------------------------

def _machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
            f"NumPy {np.__version__}; BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS')}")


def run(sizes=SIZES, error_max: int = ERROR_MAX, budget: float = 0.5, pairs=MQAR_PAIRS, steps: int = 600,
        do_mqar: bool = True, command: str = "python -m tinyattn.arena") -> dict:
    """Both measurements and their settings, as the dict written to arena.json."""
    start = time.perf_counter()
    _progress(f"scaling: {len(contenders())} contenders at L = {list(sizes)}")
    scale = scaling(sizes, error_max, budget)
    scale_s = time.perf_counter() - start
    recall, mqar_s = {}, 0.0
    if do_mqar:
        _progress(f"MQAR: pairs {list(pairs)}, {steps} steps per contender")
        t0 = time.perf_counter()
        recall = mqar(pairs, steps)
        mqar_s = time.perf_counter() - t0
    return {"command": command, "machine": _machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "config": {"B": 1, "H": H, "D": D, "dtype": "float32 (errors: float64)", "is_causal": False,
                       "sizes": list(sizes), "error_max": error_max, "budget_s": budget,
                       "slope_from": SLOPE_FROM,
                       "mqar": {"pairs": list(pairs), "steps": steps, "batch": 32, "lr": 3e-3, "n_test": 256,
                                "d_model": 64, "num_heads": 2, "num_layers": 2, "is_causal": False}},
            "scaling": scale, "mqar": recall, "seconds": {"scaling": scale_s, "mqar": mqar_s}}


def _ms(x) -> str:
    return "—" if x is None else f"{x * 1e3:.1f}"


def _mib(x) -> str:
    return "—" if x is None else f"{x / 2 ** 20:.1f}"


def _err(x) -> str:
    return "—" if x is None else ("0" if x == 0 else f"{x:.1e}")


def _at(r: dict, field: str, L: int, axis: str = "L"):
    return r[field][r[axis].index(L)] if L in r[axis] else None


def _slope(r: dict, field: str) -> str:
    s = r.get("slopes", {}).get(field)
    return "—" if s is None else f"{s:.2f}"


def _summary_rows(data: dict) -> list:
    """One line per contender: claim, slopes, the largest-L time and memory, the error, MQAR."""
    sc, mq, cfg = data["scaling"], data["mqar"], data["config"]
    pairs = cfg["mqar"]["pairs"] if mq else []
    top_e = cfg["error_max"]
    head = ("| variant | claim | options | time slope (fwd+bwd) | memory slope | fwd+bwd ms at L = {L} "
            "| peak MiB at L = {L} "
            "| max / mean row error at L = {E} |").format(L="{L}", E=top_e)
    rows = []
    for name, r in sc.items():
        L = max(r["L"]) if r["L"] else None
        cells = [f"`{name}`", r["claim"], options_text(name, r["options"]), _slope(r, "fwd_bwd_s"),
                 _slope(r, "fwd_bwd_peak"),
                 f"{_ms(_at(r, 'fwd_bwd_s', L))} (L = {L})" if L else "—",
                 _mib(_at(r, "fwd_bwd_peak", L)) if L else "—"]
        e_L = max((x for x in r["error_L"] if x <= top_e), default=None)
        cells.append(f"{_err(_at(r, 'err_max', e_L, 'error_L'))} / {_err(_at(r, 'err_mean', e_L, 'error_L'))}"
                     if e_L else "—")
        m = mq.get(name, {})
        if pairs:
            cells += [f"{m['accuracy'][str(P)]:.2f}" if "accuracy" in m else "failed" for P in pairs]
        rows.append("| " + " | ".join(cells) + " |")
    head = head.replace(" at L = {L}", " at the largest L")
    head += "".join(f" MQAR P = {P} |" for P in pairs)
    rule = "|---|---|---|" + "---:|" * (5 + len(pairs))
    return [head, rule] + rows


def readme_markdown(data: dict) -> str:
    """The README's arena section: one summary row per contender (written by ``--write``)."""
    cfg = data["config"]
    m = cfg["mqar"]
    lines = [f"Every registered attention variant against plain SDPA (`sdpa`), measured by "
             f"`{data['command']}` on {data['date']} ({data['machine'].split(';')[0]}). Time and peak "
             f"memory: float32, B = 1, H = {cfg['H']}, D = {cfg['D']}, non-causal; slopes are log-log "
             f"fits over L ≥ {cfg['slope_from']}. Error: per query row ‖o − softmax‖ / ‖softmax‖ in "
             f"float64. MQAR: held-out accuracy of a {m['num_layers']}-layer model (d_model "
             f"{m['d_model']}, {m['num_heads']} heads, bidirectional attention) trained {m['steps']} "
             f"steps with that attention, at P key-value pairs. Options: the registry's, with the length "
             f"options fitted to the S keys of each call (MQAR has S = 3P); Linformer's E, F are its fixed "
             f"seeded draw, not learned. The machine is shared with other jobs running at the same time: "
             f"absolute times differ from run to run, only ratios and slopes within one run are meaningful.",
             ""]
    lines += _summary_rows(data)
    lines += ["", "All sizes and both times are in [benchmarks/README.md](benchmarks/README.md#the-arena); "
              "raw numbers in `tinyattn/measurements/arena.json`."]
    return "\n".join(lines)


def markdown(data: dict) -> str:
    """benchmarks/README.md's arena section: the summary, then time, memory and error per L."""
    sc, cfg = data["scaling"], data["config"]
    names = list(sc)
    sizes = cfg["sizes"]
    lines = [f"Command: `{data['command']}` ({data['date']}). Machine: {data['machine']}. "
             f"float32, B = 1, H = {cfg['H']}, D = {cfg['D']}, non-causal, each variant with its "
             f"registry options; medians of 5 runs (L ≤ 1024) or 3; peaks by tracemalloc. A variant "
             f"slower than {cfg['budget_s']} s (fwd+bwd) at some L is not run at larger L. Took "
             f"{data['seconds']['scaling']:.0f} s (scaling) + {data['seconds']['mqar']:.0f} s (MQAR). "
             f"Other jobs "
             f"shared the machine during the run: compare ratios and slopes within this table, not "
             f"milliseconds across runs. Length options are fitted to each call's S keys "
             f"(`arena.options_at`).", ""]
    lines += _summary_rows(data)
    for title, field, fmt in (("Forward, median ms", "fwd_s", _ms),
                              ("Forward + backward, median ms", "fwd_bwd_s", _ms),
                              ("Forward + backward, tracemalloc peak MiB", "fwd_bwd_peak", _mib)):
        lines += ["", f"**{title}:**", "", "| L | " + " | ".join(f"`{n}`" for n in names) + " |",
                  "|---:|" + "---:|" * len(names)]
        for L in sizes:
            lines.append(f"| {L} | " + " | ".join(fmt(_at(sc[n], field, L)) for n in names) + " |")
    lines += ["", "**Max row error against exact softmax attention (float64):**", "",
              "| L | " + " | ".join(f"`{n}`" for n in names) + " |", "|---:|" + "---:|" * len(names)]
    for L in [L for L in sizes if L <= cfg["error_max"]]:
        errors = (_err(_at(sc[n], "err_max", L, "error_L")) for n in names)
        lines.append(f"| {L} | " + " | ".join(errors) + " |")
    notes = [f"- `{n}`: {'failed: ' + r['failed'] if r['failed'] else 'stopped: ' + r['stopped']}"
             for n, r in sc.items() if r["failed"] or r["stopped"]]
    notes += [f"- `{n}` MQAR failed: {m['failed']}" for n, m in data["mqar"].items() if "failed" in m]
    if notes:
        lines += [""] + notes
    return "\n".join(lines)


def write_sections(root: str, data: dict) -> None:
    """Replace the ``arena`` sections of ``root``/benchmarks/README.md and ``root``/README.md."""
    for rel, text in (("benchmarks/README.md", markdown(data)), ("README.md", readme_markdown(data))):
        path = os.path.join(root, rel)
        with open(path, encoding="utf-8") as f:
            old = f.read()
        start, end = "<!-- arena:start -->", "<!-- arena:end -->"
        if start not in old or end not in old:
            raise KeyError(f"{path} has no {start} ... {end} markers")
        new = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{text}\n{end}", old,
                     flags=re.S)
        atomic_write(path, lambda f: f.write(new.encode("utf-8")))


def load_results(path=RESULTS) -> dict:
    """The committed arena results (``tinyattn/measurements/arena.json``), or another run's JSON."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyattn.arena", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", help=f"sequence lengths L (default {list(SIZES)})")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and a short MQAR (seconds)")
    parser.add_argument("--error-max", type=int, default=ERROR_MAX, help="largest L with a float64 error")
    parser.add_argument("--budget", type=float, default=0.5,
                        help="seconds of fwd+bwd above which a variant is not run at larger L")
    parser.add_argument("--pairs", type=int, nargs="+", help=f"MQAR pair counts (default {list(MQAR_PAIRS)})")
    parser.add_argument("--steps", type=int, help="MQAR training steps per contender (default 600)")
    parser.add_argument("--no-mqar", action="store_true", help="only the scaling measurement")
    parser.add_argument("--out", help="write the results JSON here")
    parser.add_argument("--write", action="store_true",
                        help=f"write {RESULTS_IN_REPO} (unless --out) and the "
                        "arena sections of benchmarks/README.md and README.md under --root")
    parser.add_argument("--root", default=".", help="the repository, for --write (default: .)")
    args = parser.parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    pairs = args.pairs or ((2, 4) if args.quick else MQAR_PAIRS)
    steps = args.steps or (30 if args.quick else 600)
    command = " ".join(["python -m tinyattn.arena"] + list(sys.argv[1:] if argv is None else argv))
    data = run(sorted(sizes), args.error_max, args.budget, pairs, steps, not args.no_mqar, command)
    print(markdown(data))
    out = args.out or (os.path.join(args.root, RESULTS_IN_REPO) if args.write else None)
    if out:
        atomic_write(out, lambda f: f.write((json.dumps(data, indent=1) + "\n").encode("utf-8")))
        _progress(f"wrote {out}")
    if args.write:
        write_sections(args.root, data)
        _progress(f"wrote the arena sections of {args.root}/benchmarks/README.md and README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
