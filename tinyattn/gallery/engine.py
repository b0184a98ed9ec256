"""Figures of the autograd engine: a computation graph, and gradient-check errors per op."""

from __future__ import annotations

import numpy as np

from .. import autograd as ag
from .. import viz
from ..nn import functional as F
from .registry import figure

EPS = 1e-6  # central-difference step, float64


@figure("computation_graph", "the graph behind one tanh neuron and its squared-error loss")
def computation_graph():
    rng = np.random.default_rng(0)
    x = ag.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    w = ag.tensor(rng.standard_normal(3), requires_grad=True)
    b = ag.tensor(0.1, dtype=np.float64, requires_grad=True)
    target = ag.tensor(rng.standard_normal(4))
    y = (x @ w + b).tanh()  # (4,)
    loss = ((y - target) ** 2).mean()
    names = {x: "x", w: "w", b: "b", target: "target", y: "y", loss: "L"}
    fig = viz.computation_graph(loss, names, title="y = tanh(x w + b),  L = mean((y - target)²)   "
                                                   "(blue: leaves that require grad, grey: constants)")
    fig.axes[0].title.set_fontsize(10)
    return fig


def _relative_error(fn, inputs: list) -> float:
    """max|autograd - central difference| / max|central difference| of L = Σ r ∘ fn(inputs).

    inputs: float64 ndarrays (all differentiated); r is a fixed random array of fn's output shape.
    """
    tensors = [ag.tensor(a, requires_grad=True) for a in inputs]
    out = fn(*tensors)
    r = np.random.default_rng(1).standard_normal(out.shape)
    (out * ag.tensor(r)).sum().backward()
    worst, scale = 0.0, 0.0
    with ag.no_grad():
        for t in tensors:
            numeric = ag.numerical_gradient(lambda: float(np.sum(r * fn(*tensors).data)), t, EPS)
            worst = max(worst, float(np.max(np.abs(t.grad - numeric))))
            scale = max(scale, float(np.max(np.abs(numeric))))
    return worst / scale


def _away_from_zero(rng, *shape) -> np.ndarray:
    """Normal-ish values with |x| >= 0.2, so kinks (relu, abs) are never straddled."""
    return np.sign(rng.standard_normal(shape)) * (0.2 + rng.random(shape))


def _positive(rng, *shape) -> np.ndarray:
    return 0.5 + rng.random(shape)


def _cases(rng) -> list:
    """(group, name, fn, inputs): every differentiable op of the engine and of nn.functional."""
    n = rng.standard_normal
    mask = np.array([[True, False, False, True], [False, True, False, False], [False, False, True, False]])
    idx = np.array([[0, 2, 2, 1], [1, 1, 0, 2]])
    target = np.array([1, 0, 3])
    causal = dict(is_causal=True)
    return [
        ("elementwise", "add (broadcast)", lambda a, b: a + b, [n((3, 4)), n(4)]),
        ("elementwise", "sub (broadcast)", lambda a, b: a - b, [n((3, 4)), n((3, 1))]),
        ("elementwise", "mul (broadcast)", lambda a, b: a * b, [n((3, 4)), n((1, 4))]),
        ("elementwise", "div", lambda a, b: a / b, [n((3, 4)), _positive(rng, 3, 4)]),
        ("elementwise", "pow (number)", lambda a: a ** 3, [n((3, 4))]),
        ("elementwise", "pow (tensor)", lambda a, b: a ** b, [_positive(rng, 3, 4), n((3, 4))]),
        ("elementwise", "neg", lambda a: -a, [n((3, 4))]),
        ("elementwise", "exp", lambda a: a.exp(), [n((3, 4))]),
        ("elementwise", "log", lambda a: a.log(), [_positive(rng, 3, 4)]),
        ("elementwise", "sqrt", lambda a: a.sqrt(), [_positive(rng, 3, 4)]),
        ("elementwise", "tanh", lambda a: a.tanh(), [n((3, 4))]),
        ("elementwise", "sigmoid", lambda a: a.sigmoid(), [n((3, 4))]),
        ("elementwise", "relu", lambda a: a.relu(), [_away_from_zero(rng, 3, 4)]),
        ("elementwise", "abs", lambda a: a.abs(), [_away_from_zero(rng, 3, 4)]),
        ("matmul", "matmul (batched)", lambda a, b: a @ b, [n((2, 3, 4)), n((4, 5))]),
        ("matmul", "matmul (vector)", lambda a, b: a @ b, [n((3, 4)), n(4)]),
        ("reduction", "sum(dim)", lambda a: a.sum(dim=1), [n((3, 4))]),
        ("reduction", "mean(dim, keepdim)", lambda a: a.mean(dim=0, keepdim=True), [n((3, 4))]),
        ("reduction", "amax(dim)", lambda a: a.amax(dim=1), [n((3, 4))]),
        ("shape", "reshape", lambda a: a.reshape(4, 3), [n((3, 4))]),
        ("shape", "transpose", lambda a: a.transpose(0, 2), [n((2, 3, 4))]),
        ("shape", "permute", lambda a: a.permute(2, 0, 1), [n((2, 3, 4))]),
        ("shape", "expand", lambda a: a.expand(3, 4), [n((1, 4))]),
        ("shape", "repeat_interleave", lambda a: a.repeat_interleave(2, dim=0), [n((3, 4))]),
        ("shape", "index (repeated)", lambda a: a[[0, 2, 2]], [n((3, 4))]),
        ("shape", "gather", lambda a: a.gather(1, idx), [n((2, 3))]),
        ("shape", "masked_fill", lambda a: a.masked_fill(mask, 0.0), [n((3, 4))]),
        ("shape", "cat", lambda a, b: ag.cat([a, b], dim=1), [n((3, 2)), n((3, 4))]),
        ("shape", "stack", lambda a, b: ag.stack([a, b], dim=1), [n((3, 4)), n((3, 4))]),
        ("shape", "where", lambda a, b: ag.where(mask, a, b), [n((3, 4)), n(4)]),
        ("nn.functional", "linear", F.linear, [n((2, 3, 4)), n((5, 4)), n(5)]),
        ("nn.functional", "gelu", F.gelu, [n((3, 4))]),
        ("nn.functional", "softmax", lambda a: F.softmax(a, dim=-1), [n((3, 4))]),
        ("nn.functional", "log_softmax", lambda a: F.log_softmax(a, dim=-1), [n((3, 4))]),
        ("nn.functional", "layer_norm", lambda a, w, b: F.layer_norm(a, (4,), w, b),
         [n((3, 4)), n(4), n(4)]),
        ("nn.functional", "cross_entropy", lambda a: F.cross_entropy(a, target), [n((3, 4))]),
        ("nn.functional", "scaled_dot_product_attention (causal)",
         lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **causal),
         [n((2, 4, 3)), n((2, 4, 3)), n((2, 4, 2))]),
    ]


def buggy_tanh(x):
    """tanh with a deliberately wrong backward, 1 - y instead of 1 - y²: what a bug looks like."""
    y = np.tanh(x.data)
    return ag.Tensor.from_op(y, (x,), lambda g: (g * (1 - y),), "buggy_tanh")


GROUP_COLORS = {"elementwise": "#4c78a8", "matmul": "#f58518", "reduction": "#54a24b",
                "shape": "#b279a2", "nn.functional": "#e45756", "a deliberate bug": "#333333"}


def gradcheck_table() -> list:
    """[(group, op name, relative error)] for every case, computed now in float64."""
    rng = np.random.default_rng(0)
    cases = _cases(rng) + [("a deliberate bug", "tanh with backward 1 - y", buggy_tanh,
                            [rng.standard_normal((3, 4))])]
    return [(group, name, _relative_error(fn, inputs)) for group, name, fn, inputs in cases]


@figure("gradcheck_errors", "autograd vs central finite differences, relative error per op (float64)")
def gradcheck_errors():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import NullFormatter

    rows = gradcheck_table()
    fig, ax = plt.subplots(figsize=(7.5, 0.2 * len(rows) + 1.3), constrained_layout=True)
    y = np.arange(len(rows))[::-1]
    ax.barh(y, [err for _, _, err in rows], color=[GROUP_COLORS[g] for g, _, _ in rows], log=True)
    ax.set_yticks(y)
    ax.set_yticklabels([name for _, name, _ in rows], fontsize=7.5)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlim(1e-13, 1.0)
    ax.set_xticks([10.0 ** k for k in range(-12, 1, 2)])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("max |autograd − finite difference| / max |finite difference|")
    ax.set_title(f"Gradient check of every op: float64, central differences, eps = {EPS:g}", fontsize=10)
    ax.grid(True, axis="x", which="major", alpha=0.3)
    ax.legend(handles=[Patch(color=c, label=g) for g, c in GROUP_COLORS.items()], fontsize=7.5,
              loc="center right")
    return fig
