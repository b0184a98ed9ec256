"""Autograd overhead: an MLP block forward + backward, tinyattn vs the same math hand-written in
NumPy (vs PyTorch CPU when installed), medians and ratios from one run.

Block: y = LayerNorm(GELU(x W1ᵀ + b1) W2ᵀ + b2), x (4096, 256), hidden 1024, float32; the loss
is sum(y * c) for a fixed c, so backward starts from dL/dy = c.

    python benchmarks/engine.py            # prints the table and rewrites benchmarks/README.md
"""

from __future__ import annotations

import argparse
import math

import numpy as np

import tinyattn as ta
import tinyattn.nn.functional as F
from _common import interleaved_medians, machine_line, progress, try_torch, write_section

M, D, HIDDEN, EPS = 4096, 256, 1024, 1e-5


def make_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    f32 = lambda *s, scale=1.0: (rng.standard_normal(s) * scale).astype(np.float32)  # noqa: E731
    return dict(x=f32(M, D), w1=f32(HIDDEN, D, scale=D ** -0.5), b1=f32(HIDDEN, scale=0.1),
                w2=f32(D, HIDDEN, scale=HIDDEN ** -0.5), b2=f32(D, scale=0.1),
                g=np.ones(D, np.float32), beta=np.zeros(D, np.float32), c=f32(M, D))


def tinyattn_step(a):
    """Forward + backward with the engine; returns every gradient."""
    x = ta.Tensor(a["x"], requires_grad=True)
    w1, b1, w2, b2, g, beta = (ta.Tensor(a[k], requires_grad=True) for k in ("w1", "b1", "w2", "b2", "g", "beta"))
    y = F.layer_norm(F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2), D, g, beta, EPS)
    y.backward(a["c"])
    return x.grad, w1.grad, b1.grad, w2.grad, b2.grad, g.grad, beta.grad


def numpy_step(a):
    """The same forward and backward written out by hand in NumPy."""
    x, w1, b1, w2, b2, g, beta, c = (a[k] for k in ("x", "w1", "b1", "w2", "b2", "g", "beta", "c"))
    h = x @ w1.T + b1  # (M, HIDDEN)
    cdf = 0.5 * (1.0 + F.erf(h * (1.0 / math.sqrt(2.0))))
    z = h * cdf
    u = z @ w2.T + b2  # (M, D)
    mu = u.mean(-1, keepdims=True)
    uc = u - mu
    rstd = 1.0 / np.sqrt((uc * uc).mean(-1, keepdims=True) + EPS)
    xhat = uc * rstd
    y = xhat * g + beta  # noqa: F841 (the output; the loss only needs its gradient c)
    dg, dbeta = (c * xhat).sum(0), c.sum(0)
    gh = c * g
    du = rstd * (gh - gh.mean(-1, keepdims=True) - xhat * (gh * xhat).mean(-1, keepdims=True))
    dw2, db2 = du.T @ z, du.sum(0)
    dz = du @ w2
    pdf = np.exp(-0.5 * h * h) * (1.0 / math.sqrt(2.0 * math.pi))
    dh = dz * (cdf + h * pdf)
    dw1, db1 = dh.T @ x, dh.sum(0)
    dx = dh @ w1
    return dx, dw1, db1, dw2, db2, dg, dbeta


def matmuls_only(a):
    """Just the six GEMMs of forward + backward: the floor any implementation pays."""
    x, w1, w2, c = a["x"], a["w1"], a["w2"], a["c"]
    h = x @ w1.T
    _ = h @ w2.T
    _ = c.T @ h, c @ w2
    _ = h.T @ x, h @ w1


def torch_step(torch, a):
    t = {k: torch.tensor(v, requires_grad=k != "c") for k, v in a.items()}
    TF = torch.nn.functional
    y = TF.layer_norm(TF.linear(TF.gelu(TF.linear(t["x"], t["w1"], t["b1"])), t["w2"], t["b2"]),
                      (D,), t["g"], t["beta"], EPS)
    y.backward(t["c"])
    return tuple(t[k].grad for k in ("x", "w1", "b1", "w2", "b2", "g", "beta"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--no-write", action="store_true", help="do not rewrite benchmarks/README.md")
    args = parser.parse_args(argv)
    a = make_inputs()
    for ours, ref in zip(tinyattn_step(a), numpy_step(a)):  # same math, same numbers
        np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=2e-3)
    torch = try_torch()
    progress("tinyattn and NumPy ...")
    times = interleaved_medians({"tinyattn (autograd)": lambda: tinyattn_step(a),
                                 "hand-written NumPy": lambda: numpy_step(a),
                                 "NumPy GEMMs only": lambda: matmuls_only(a)}, repeat=args.repeat)
    if torch:
        progress("PyTorch ...")
        times.update(interleaved_medians({"PyTorch CPU": lambda: torch_step(torch, a)}, repeat=args.repeat))
    rows = list(times.items())
    base = dict(rows)["hand-written NumPy"]
    lines = [f"MLP block Linear({D}→{HIDDEN}) → GELU → Linear({HIDDEN}→{D}) → LayerNorm on x ({M}, {D}), "
             f"float32, forward + backward; medians of {args.repeat} interleaved runs (PyTorch timed after the rest).", "",
             f"Machine: {machine_line()}.", "", "| implementation | median ms | vs hand-written NumPy |",
             "|---|---:|---:|"]
    lines += [f"| {name} | {t * 1e3:.1f} | {t / base:.2f}× |" for name, t in rows]
    lines += ["", f"Autograd overhead: **{dict(rows)['tinyattn (autograd)'] / base:.2f}×** hand-written NumPy "
                  f"(target ≤ 1.3×).", "", "Command: `python benchmarks/engine.py`"]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("engine", text)


if __name__ == "__main__":
    main()
