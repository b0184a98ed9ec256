"""Teaching helpers the notebooks import: the labelled example sentence with its hand-set
weights, small experiments, and access to the committed training runs and measurements.

    from tinyattn import examples
    tokens, P = examples.toy_attention()      # "the cat sat on ...": P (10, 10)

Nothing here is a figure (those are in ``tinyattn.gallery``, which uses these helpers too).
The sentence's word vectors are one-hot word kinds (animal, place, verb, ...), and the
projection weights are set by hand, so every pattern in the pictures has a reason that can be
read off the code.
"""

from __future__ import annotations

import inspect
import json
import math
from importlib import resources

import numpy as np

from . import autograd as ag
from . import data, nn
from . import efficient as eff
from .nn import functional as F
from .train import attention_maps, build_model, checkpoint_path, ideal_overlap, load_checkpoint

BENCHMARK_RESULTS = resources.files("tinyattn") / "measurements" / "efficient.json"


# ----------------------------------------------------------------------------------------------
# the labelled sentence (notebooks 00, 03, 04): word kinds, hand-set W_q and heads
# ----------------------------------------------------------------------------------------------

SENTENCE = "the cat sat on the mat because it was tired".split()


KINDS = ["animal", "place", "pronoun", "verb", "preposition", "determiner", "conjunction", "adjective"]


KIND_OF = {"the": "determiner", "cat": "animal", "sat": "verb", "on": "preposition", "mat": "place",
           "because": "conjunction", "it": "pronoun", "was": "verb", "tired": "adjective"}


# what a word of one kind looks for: (query kind, key kind) -> score
RELATIONS = {
    ("pronoun", "animal"): 5.0,  # "it" refers to "cat"
    ("verb", "animal"): 3.5, ("verb", "pronoun"): 2.0,  # a verb looks for an animal, less for a pronoun
    ("preposition", "place"): 4.0, ("place", "preposition"): 3.0,  # "on" <-> "mat"
    ("determiner", "animal"): 3.0, ("determiner", "place"): 3.0,  # "the" looks for a noun
    ("adjective", "pronoun"): 3.0, ("adjective", "animal"): 3.0,  # "tired" describes "it"/"cat"
    ("animal", "verb"): 2.5, ("animal", "adjective"): 1.5,  # "cat" -> what it does / is
    ("conjunction", "verb"): 2.5,  # "because" links the two verbs
}


def word_kinds(tokens=SENTENCE) -> np.ndarray:
    """One-hot word kinds, tokens as rows: (T, len(KINDS))."""
    x = np.zeros((len(tokens), len(KINDS)))  # (T, 8)
    x[np.arange(len(tokens)), [KINDS.index(KIND_OF[t]) for t in tokens]] = 1.0
    return x


def relation_matrix() -> np.ndarray:
    """R[a, b] = score of a query of kind a for a key of kind b (1 on the diagonal: self)."""
    r = np.eye(len(KINDS))  # (8, 8)
    for (a, b), score in RELATIONS.items():
        r[KINDS.index(a), KINDS.index(b)] = score
    return r


def toy_attention(tokens=SENTENCE):
    """Attention weights of the hand-built example: (tokens, P (L, L)).

    X = one-hot word kinds (L, 8); Q = X W_qᵀ with W_q = √8 · Rᵀ, K = X W_kᵀ with W_k = I, so
    the score q_i · k_j / √8 = R[kind(i), kind(j)], and P = softmax over keys.
    """
    x = ag.tensor(word_kinds(tokens))  # (L, 8)
    d = x.shape[-1]
    q = F.linear(x, ag.tensor(math.sqrt(d) * relation_matrix().T))  # (L, 8)
    k = F.linear(x, ag.tensor(np.eye(d)))  # (L, 8)
    _, weights = F.scaled_dot_product_attention(q, k, x, return_weights=True)  # (L, L)
    return tokens, weights.data


HEAD_NAMES = ["previous word", "word relations", "nouns", "first token"]


def hand_set_heads(tokens=SENTENCE, head_dim: int = 12):
    """A 4-head MultiheadAttention whose packed weights are set by hand, one relation per head.

    Input x (L, E) = [one-hot word kind (8) | one-hot position (head_dim) | zeros], E = 4 head_dim.
    Head 0 attends to the previous word (positions), head 1 uses RELATIONS (word kinds), head 2
    looks for nouns whatever the query (a query bias), head 3 for the first token (a "sink").
    Returns (module, x); W_v = I and W_o = I, biases as described.
    """
    L, H, D = len(tokens), 4, head_dim
    E, nk = H * D, len(KINDS)
    if L > D:
        raise ValueError(f"{L} tokens but only head_dim = {D} one-hot positions; use a larger head_dim")
    pos = nk + np.arange(L)  # input column of each position's one-hot
    strong = 6.0 * math.sqrt(D)  # a score of 6 after the 1/√D scale
    w_q, w_k, b_q = np.zeros((E, E)), np.zeros((E, E)), np.zeros(E)  # rows: head h uses h·D..(h+1)·D
    w_q[np.maximum(np.arange(L) - 1, 0), pos] = strong  # head 0: query at i asks for position i - 1
    w_k[np.arange(L), pos] = 1.0
    w_q[D:D + nk, :nk] = math.sqrt(D) * relation_matrix().T  # head 1: the relation matrix
    w_k[D:D + nk, :nk] = np.eye(nk)
    b_q[2 * D + KINDS.index("animal")] = b_q[2 * D + KINDS.index("place")] = strong  # head 2: nouns
    w_k[2 * D:2 * D + nk, :nk] = np.eye(nk)
    b_q[3 * D] = strong  # head 3: every query asks for position 0
    w_k[3 * D, pos[0]] = 1.0
    mha = nn.MultiheadAttention(E, H, batch_first=True, dtype=np.float64)
    mha.load_state_dict({
        "in_proj_weight": np.concatenate([w_q, w_k, np.eye(E)]),  # (3E, E): W_q, W_k, W_v
        "in_proj_bias": np.concatenate([b_q, np.zeros(2 * E)]),  # (3E,)
        "out_proj.weight": np.eye(E), "out_proj.bias": np.zeros(E),
    })
    x = np.zeros((L, E))  # (L, E)
    x[:, :nk] = word_kinds(tokens)
    x[np.arange(L), pos] = 1.0
    return mha, x


# ----------------------------------------------------------------------------------------------
# experiments: why divide by √d_k (notebook 03), post-norm vs pre-norm across depth (notebook 05)
# ----------------------------------------------------------------------------------------------

SCALING_D_K = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


DEPTHS = (2, 4, 8, 16, 32)


def scaling_stats(d_ks=SCALING_D_K, num_keys: int = 16, num_queries: int = 256, seed: int = 0) -> dict:
    """Score variance and softmax saturation for random q, k ~ N(0, I), for each d_k.

    For each d_k: num_queries queries (N, 1, d_k), each with its own num_keys keys (N, S, d_k).
    Scores a = q·k unscaled and q·k/√d_k. Returns arrays over d_k: ``var_*`` (variance of a;
    theory d_k and 1), ``max_weight_*`` (mean largest softmax weight of a row: 1/S = uniform,
    1 = one-hot) and ``jacobian_*`` (mean Frobenius norm of the softmax Jacobian diag(p) − p pᵀ,
    which goes to 0 as the softmax saturates: no gradient reaches the scores).
    """
    rng = np.random.default_rng(seed)
    out = {name: [] for name in ("var_unscaled", "var_scaled", "max_weight_unscaled",
                                 "max_weight_scaled", "jacobian_unscaled", "jacobian_scaled")}
    for d_k in d_ks:
        q = ag.tensor(rng.standard_normal((num_queries, 1, d_k)))  # (N, 1, d_k)
        k = ag.tensor(rng.standard_normal((num_queries, num_keys, d_k)))  # (N, S, d_k)
        raw = (q @ k.transpose(-2, -1)).data  # (N, 1, S)
        for tag, scale in (("unscaled", 1.0), ("scaled", d_k ** -0.5)):
            p = F.softmax(ag.tensor(raw * scale), dim=-1).data[:, 0]  # (N, S)
            jac = np.eye(num_keys) * p[:, :, None] - p[:, :, None] * p[:, None, :]  # (N, S, S)
            out[f"var_{tag}"].append(np.var(raw * scale))
            out[f"max_weight_{tag}"].append(p.max(axis=-1).mean())
            out[f"jacobian_{tag}"].append(np.linalg.norm(jac, axis=(1, 2)).mean())
    return {"d_k": np.array(d_ks), **{name: np.array(v) for name, v in out.items()}}


def depth_stats(norm_first: bool, num_layers: int, d_model: int = 32, nhead: int = 4,
                dim_feedforward: int = 128, seq_len: int = 10, batch: int = 4, seed: int = 0,
                init=None) -> dict:
    """Gradient norms, layer by layer, of a freshly initialized stack of encoder layers.

    ``num_layers`` independently initialized ``TransformerEncoderLayer``s (float64, dropout 0,
    PyTorch's default initialization), a final LayerNorm when ``norm_first`` (as pre-norm models
    use), input x (batch, seq_len, d_model) ~ N(0, 1), loss = mean((out − y)²) for a random y.
    Returns arrays over layers: ``param_grad`` (norm of the gradients of the layer's four weight
    matrices: in_proj_weight, out_proj.weight, linear1.weight, linear2.weight),
    ``input_grad`` (norm of dloss/d(layer input)) and ``residual_rms`` (root mean square of the
    layer's input: the residual stream). ``init(layer)``, when given, is called on every layer
    after PyTorch's initialization (e.g. to re-initialize its feed-forward weights: notebook 05's
    exercise 2).
    """
    ag.manual_seed(seed)
    layers = [nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0, batch_first=True,
                                         norm_first=norm_first).double() for _ in range(num_layers)]
    for layer in layers if init is not None else ():
        init(layer)
    final_norm = nn.LayerNorm(d_model).double() if norm_first else nn.Identity()
    rng = np.random.default_rng(seed)
    h = ag.tensor(rng.standard_normal((batch, seq_len, d_model)), requires_grad=True)
    target = ag.tensor(rng.standard_normal((batch, seq_len, d_model)))
    inputs = []
    for layer in layers:
        inputs.append(h.retain_grad())
        h = layer(h)
    loss = ((final_norm(h) - target) ** 2).mean()
    loss.backward()
    return {
        "param_grad": np.array([np.sqrt(sum(np.sum(p.grad ** 2) for p in layer.parameters()
                                            if p.ndim == 2)) for layer in layers]),
        "input_grad": np.array([np.linalg.norm(x.grad) for x in inputs]),
        "residual_rms": np.array([np.sqrt(np.mean(x.data ** 2)) for x in inputs]),
    }


def depth_sweep(norm_first: bool, depths=DEPTHS, seeds=(0, 1, 2)) -> np.ndarray:
    """Gradient norm of the last layer's weight matrices vs the depth of the stack (mean over seeds)."""
    return np.array([np.mean([depth_stats(norm_first, n, seed=s)["param_grad"][-1] for s in seeds])
                     for n in depths])


# ----------------------------------------------------------------------------------------------
# the committed training runs (notebook 06): test sets, attention of the answer slots, logs
# ----------------------------------------------------------------------------------------------

STAGES = ("before training", "after training")


def test_set(task: str) -> data.Split:
    """The held-out set of the committed run of ``task`` (the same examples it was scored on)."""
    _, config = load_checkpoint(checkpoint_path(task))
    return data.make_splits(task, 1, config.n_test, config.seed)[1]  # the test set is drawn first


def example(task: str, index: int = 0):
    """Test example ``index`` of the committed run of ``task``: (tokens (L,), answers (A,))."""
    test = test_set(task)
    return test.tokens[index], test.answers[index]


def head_overlaps(task: str, n: int = 200) -> dict:
    """``ideal_overlap`` of every head, (layers, H), before and after training, on n test examples."""
    trained, config = load_checkpoint(checkpoint_path(task))
    tokens = test_set(task).tokens[:n]  # (n, L)
    ideal = data.ideal_attention(task, tokens)  # (n, A, L)
    slots = data.task_spec(task).answer_positions
    return {stage: ideal_overlap(attention_maps(model, tokens), ideal, slots)
            for stage, model in zip(STAGES, (build_model(config), trained))}


def slot_attention(task: str, tokens: np.ndarray):
    """Attention of the answer slots over the given tokens and ``=``, per stage and layer.

    tokens (L,) -> {stage: (layers, H, A, input_len + 1)}, from the seeded initialization and
    from the committed checkpoint. The slot columns are left out: they are masked (zero).
    """
    trained, config = load_checkpoint(checkpoint_path(task))
    spec = data.task_spec(task)
    out = {}
    for stage, model in zip(STAGES, (build_model(config), trained)):
        maps = attention_maps(model, tokens[None])[:, 0]  # (layers, H, L, L)
        out[stage] = maps[:, :, spec.answer_positions, :spec.input_len + 1]  # (layers, H, A, T+1)
    return out


def slot_labels(task: str, answers: np.ndarray) -> list:
    """Row labels of the answer slots: ``?i→a`` (slot i, correct answer a)."""
    return [f"?{i}→{a}" for i, a in enumerate(data.decode(answers))]


def training_log(task: str) -> dict:
    """The JSON log of the committed run of ``task`` (next to its checkpoint): config, result, history."""
    with open(checkpoint_path(task).with_suffix(".json"), encoding="utf-8") as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------------
# efficient attention (notebook 07): flash round-off, linear vs softmax, the measured scaling
# ----------------------------------------------------------------------------------------------

def load_benchmark_results(path=BENCHMARK_RESULTS) -> dict:
    """The results of ``python benchmarks/efficient.py`` (a dict; see the script).

    By default the measurements shipped with the package (``tinyattn/measurements/``), which
    the script rewrites; pass the path of another run's JSON to plot that.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist; run `python benchmarks/efficient.py` "
                                f"to measure it") from None


def _attention_and_grads(fn, arrays, weights) -> list:
    """[out, dq, dk, dv] of L = Σ weights ∘ fn(q, k, v), as ndarrays."""
    q, k, v = (ag.tensor(a, requires_grad=True) for a in arrays)
    out = fn(q, k, v)
    (out * ag.tensor(weights.astype(out.dtype))).sum().backward()
    return [out.data, q.grad, k.grad, v.grad]


def flash_error_table(sizes=(100, 180, 330, 600, 1000), d: int = 32, block: int = 64, seed: int = 0) -> dict:
    """Relative errors max|x − ref| / max|ref| of output and gradients, per N (causal attention).

    "flash64": float64 flash vs float64 SDPA (pure round-off); "flash32" and "plain32": the
    float32 versions of flash and SDPA, each against float64 SDPA (the float32 truth gap).
    """
    rng = np.random.default_rng(seed)
    table = {key: {name: [] for name in ("output", "dq", "dk", "dv")}
             for key in ("flash64", "flash32", "plain32")}
    flash = lambda q, k, v: eff.flash_attention(q, k, v, is_causal=True, block_size=block)  # noqa: E731
    plain = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    for N in sizes:
        arrays = [rng.standard_normal((1, 2, N, d)) for _ in range(3)]
        w = rng.standard_normal((1, 2, N, d))
        ref = _attention_and_grads(plain, arrays, w)
        runs = {"flash64": _attention_and_grads(flash, arrays, w),
                "flash32": _attention_and_grads(flash, [a.astype(np.float32) for a in arrays], w),
                "plain32": _attention_and_grads(plain, [a.astype(np.float32) for a in arrays], w)}
        for key, got in runs.items():
            for name, a, e in zip(("output", "dq", "dk", "dv"), got, ref):
                table[key][name].append(float(np.max(np.abs(a - e)) / np.max(np.abs(e))))
    return {"sizes": list(sizes), **table}


def linear_vs_softmax_distance(scales, N: int = 64, d: int = 16, seed: int = 0) -> dict:
    """How far linear attention is from softmax attention as the logits grow.

    q, k, v ~ N(0, 1) of shape (N, d), q and k multiplied by each scale s. Returns per scale the
    mean total-variation distance ½ Σ_j |A_ij − P_ij| between the rows of linear attention's
    weights A and the softmax weights P, and the relative output error ‖A V − P V‖ / ‖P V‖.
    """
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((N, d)) for _ in range(3))
    tv, err = [], []
    for s in scales:
        a = eff.linear_attention_weights(q * s, k * s)  # (N, N)
        _, p = F.scaled_dot_product_attention(ag.tensor(q * s), ag.tensor(k * s), ag.tensor(v),
                                              return_weights=True)
        tv.append(float(0.5 * np.abs(a - p.data).sum(axis=-1).mean()))
        err.append(float(np.linalg.norm(a @ v - p.data @ v) / np.linalg.norm(p.data @ v)))
    return {"scales": list(scales), "tv": tv, "output_error": err}


# ----------------------------------------------------------------------------------------------
# multi-head attention as its formula (notebook 04)
# ----------------------------------------------------------------------------------------------

def multi_head_attention(x_q, x_kv, mha: nn.MultiheadAttention, attn_mask=None):
    """MultiheadAttention's math without its plumbing: batch-first input, no masks conversion.

    x_q (N, L, E), x_kv (N, S, E) -> (N, L, E). head_h = softmax(Q_h K_hᵀ / √D + mask) V_h with
    Q_h = columns h·D .. (h+1)·D − 1 of x_q W_qᵀ + b_q (likewise K_h, V_h), and the output is
    concat(head_1, .., head_H) W_oᵀ + b_o. attn_mask is in SDPA polarity (True = may attend).
    """
    (W_q, W_k, W_v), (b_q, b_k, b_v) = mha.projection_weights(), mha.projection_biases()
    H, D = mha.num_heads, mha.head_dim
    N, L, E = x_q.shape
    S = x_kv.shape[1]
    Q = F.linear(x_q, W_q, b_q).reshape(N, L, H, D).transpose(1, 2)  # (N, H, L, D)
    K = F.linear(x_kv, W_k, b_k).reshape(N, S, H, D).transpose(1, 2)  # (N, H, S, D)
    V = F.linear(x_kv, W_v, b_v).reshape(N, S, H, D).transpose(1, 2)  # (N, H, S, D)
    heads = F.scaled_dot_product_attention(Q, K, V, attn_mask=attn_mask)  # (N, H, L, D)
    concat = heads.transpose(1, 2).reshape(N, L, E)  # (N, L, E): the heads side by side
    return F.linear(concat, mha.out_proj.weight, mha.out_proj.bias)  # (N, L, E)


def head_bilinear_forms(mha: nn.MultiheadAttention) -> np.ndarray:
    """M_h = W_q,hᵀ W_k,h for every head h: (H, E, E), rank ≤ head_dim each.

    Without biases, head h's score of query x_i and key x_j is x_i M_h x_jᵀ / √D, with W_q,h
    the D rows h·D .. (h+1)·D − 1 of W_q (likewise W_k,h).
    """
    W_q, W_k, _ = (w.data for w in mha.projection_weights())
    D = mha.head_dim
    return np.stack([W_q[h * D:(h + 1) * D].T @ W_k[h * D:(h + 1) * D] for h in range(mha.num_heads)])


def source_lines(fn, first: str, last: str) -> str:
    """The lines of ``fn``'s source from the first line containing ``first`` to the next containing ``last``.

    For notebooks that show the math-bearing part of a function (a training step) and not its
    bookkeeping (logging, timing). A ValueError names the marker that is missing.
    """
    lines = inspect.getsource(fn).splitlines()
    start = next((i for i, line in enumerate(lines) if first in line), None)
    if start is None:
        raise ValueError(f"no line of {fn.__qualname__} contains {first!r}")
    end = next((i for i in range(start, len(lines)) if last in lines[i]), None)
    if end is None:
        raise ValueError(f"no line of {fn.__qualname__} after {first!r} contains {last!r}")
    return "\n".join(lines[start:end + 1])


# ----------------------------------------------------------------------------------------------
# the IO model of flash attention (notebook 07)
# ----------------------------------------------------------------------------------------------

def attention_io(L: int, D: int, M: int) -> dict:
    """Numbers moved between slow memory (HBM) and fast memory (SRAM) of size M numbers.

    One head, sequence length L (= S, self-attention), head dim D, forward pass, counted by walking
    the loops. ``standard`` runs A = Q Kᵀ, P = softmax(A), O = P V as three kernels, each reading
    its inputs from and writing its output to slow memory: 4LD + 4L².
    ``flash1``: FlashAttention-1 (Dao et al. 2022, Algorithm 1), key blocks outside, B_c = ⌈M / 4D⌉
    keys and B_r = min(B_c, D) queries: K_j, V_j read once; per (key block, query block) Q_i, O_i,
    ℓ_i, m_i read and O_i, ℓ_i, m_i written: 2LD + ⌈L/B_c⌉·L(3D + 4).
    ``flash2``: FlashAttention-2's loop order (Dao 2023; the order ``flash_attention`` runs), query
    blocks outside, B_r = ⌈M / 4D⌉ queries and B_c = min(B_r, D) keys: Q_i read once, O_i and
    lse_i written once (the running O_i, ℓ_i, m_i stay in fast memory); K_j, V_j read once per
    query block: 2LD + L + ⌈L/B_r⌉·2LD. Both are Θ(L²D²/M).
    """
    if M < 4 * D:
        raise ValueError(f"fast memory M = {M} numbers cannot hold one row of Q, K, V and O "
                         f"(4D = {4 * D}); expected M >= 4D")
    standard = (2 * L * D + L * L) + (L * L + L * L) + (L * L + L * D + L * D)  # QKᵀ, softmax, PV
    B = math.ceil(M / (4 * D))  # the large block: keys in FlashAttention-1, queries in FlashAttention-2
    small = min(B, D)  # the other block, so that a B x small tile fits in M / 4
    flash1 = 0
    for c0 in range(0, L, B):  # key blocks outside
        bc = min(B, L - c0)
        flash1 += 2 * bc * D  # read K_j, V_j
        for r0 in range(0, L, small):
            br = min(small, L - r0)
            flash1 += br * D + br * D + 2 * br  # read Q_i, O_i, ℓ_i, m_i
            flash1 += br * D + 2 * br  # write O_i, ℓ_i, m_i
    flash2 = 0
    for r0 in range(0, L, B):  # query blocks outside
        br = min(B, L - r0)
        flash2 += br * D  # read Q_i
        for c0 in range(0, L, small):
            bc = min(small, L - c0)
            flash2 += 2 * bc * D  # read K_j, V_j
        flash2 += br * D + br  # write O_i, lse_i
    return {"standard": standard, "flash1": flash1, "flash2": flash2, "large_block": B, "small_block": small}
