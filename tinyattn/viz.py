"""Pictures of attention: score matrices, head grids, masks, positional encodings, graphs.

Every function takes NumPy arrays or tinyattn Tensors, draws with matplotlib and returns the
``matplotlib.figure.Figure``. matplotlib is imported inside the functions, so ``import tinyattn``
never loads it. Score matrices carry the tokens on both axes: queries down the side (rows),
keys along the bottom (columns).

    from tinyattn import viz
    out, w = ta.nn.functional.scaled_dot_product_attention(q, k, v, return_weights=True)
    viz.heatmap(w[0], tokens, tokens, title="attention weights")

``head_view`` and ``model_view`` (from ``tinyattn.interactive``) are the interactive kind: an HTML
page that shows inline in Jupyter and saves with ``.save("view.html")``.
"""

from __future__ import annotations

import numpy as np

from .autograd import Tensor, reverse_topological
from .interactive import head_view, model_view

__all__ = ["heatmap", "attention_grid", "mask_picture", "positional_encoding_picture",
           "computation_graph", "curves", "token_vectors", "head_view", "model_view"]

ATTEND_COLOR = "#2a9d8f"
BLOCKED_COLOR = "#e6e6e6"


def _array(x, what: str) -> np.ndarray:
    """The ndarray behind a Tensor, array or nested list."""
    if isinstance(x, Tensor):
        return x.data
    arr = np.asarray(x)
    if arr.dtype == object:
        raise TypeError(f"{what} must be a Tensor or an array of numbers, got {type(x).__name__}")
    return arr


def _check_labels(labels, n: int, what: str):
    """``labels`` as a list of strings of length n (or None)."""
    if labels is None:
        return None
    labels = [str(t) for t in labels]
    if len(labels) != n:
        raise ValueError(f"{what} has {len(labels)} entries but the matrix has {n} along that axis")
    return labels


def _default_cols(row_labels, col_labels, shape):
    """Self-attention convenience: a square matrix with row labels only reuses them as columns."""
    if col_labels is None and row_labels is not None and shape[0] == shape[1]:
        return row_labels
    return col_labels


def _finite_range(arr: np.ndarray):
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return 0.0, 1.0
    return float(finite.min()), float(finite.max())


def _colormap(cmap):
    """A copy of ``cmap`` that paints -inf/NaN (masked scores) light grey."""
    import matplotlib

    base = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    return base.with_extremes(bad="#d0d0d0")


def _set_ticks(ax, row_labels, col_labels, shape, fontsize) -> None:
    if col_labels is not None:
        ax.set_xticks(range(shape[1]))
        ax.set_xticklabels(col_labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=fontsize)
    if row_labels is not None:
        ax.set_yticks(range(shape[0]))
        ax.set_yticklabels(row_labels, fontsize=fontsize)


def _tick_fontsize(n: int) -> float:
    return 9 if n <= 12 else 7 if n <= 24 else 5


def _annotate(ax, m: np.ndarray, image, fontsize: float) -> None:
    """Write each value in its cell, in white on dark cells and black on light ones."""
    rgba = image.cmap(image.norm(m))  # (L, S, 4): the colour of each cell
    luminance = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])  # (L, S)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = m[i, j]
            text = "-∞" if v == -np.inf else f"{v:.2f}"
            color = "white" if np.isfinite(v) and luminance[i, j] < 0.5 else "black"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize)


def heatmap(matrix, row_labels=None, col_labels=None, ax=None, title=None, cmap="viridis",
            vmin=None, vmax=None, annotate=False, colorbar=True, xlabel="key", ylabel="query",
            figsize=None):
    """Draw one score or weight matrix with token labels and a colorbar; return the Figure.

    matrix (L, S) ndarray or Tensor; row_labels L tokens (queries), col_labels S tokens (keys;
    default: row_labels when the matrix is square). -inf entries (masked scores) are grey.
    With ``ax`` given, draws into it and returns ``ax.figure``.
    """
    import matplotlib.pyplot as plt

    m = np.asarray(_array(matrix, "matrix"), dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D matrix (L, S), got shape {m.shape}; "
                         f"index one batch/head first, e.g. weights[0, 0]")
    col_labels = _default_cols(row_labels, col_labels, m.shape)
    row_labels = _check_labels(row_labels, m.shape[0], "row_labels")
    col_labels = _check_labels(col_labels, m.shape[1], "col_labels")
    lo, hi = _finite_range(m)
    vmin = lo if vmin is None else vmin
    vmax = hi if vmax is None else vmax
    if ax is None:
        n = max(m.shape)
        side = min(2.5 + 0.42 * n, 9.0)
        fig, ax = plt.subplots(figsize=figsize or (side + (1.0 if colorbar else 0.0), side),
                               constrained_layout=True)
    image = ax.imshow(np.ma.masked_invalid(m), cmap=_colormap(cmap), vmin=vmin, vmax=vmax)
    fontsize = _tick_fontsize(max(m.shape))
    _set_ticks(ax, row_labels, col_labels, m.shape, fontsize)
    if annotate:
        _annotate(ax, m, image, fontsize - 1.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, shrink=0.85)
    return ax.figure


def attention_grid(weights, row_labels=None, col_labels=None, row_titles=None, col_titles=None,
                   title=None, cmap="viridis", vmin=None, vmax=None, panel_size=2.3):
    """Draw a grid of weight matrices (e.g. layers x heads) with one shared colorbar.

    weights (R, C, L, S) or (C, L, S) (one row); row_labels L query tokens, col_labels S key
    tokens (default: row_labels when L == S); row_titles R strings (default "layer r" when
    R > 1), col_titles C strings (default "head c"). All panels share vmin/vmax.
    """
    import matplotlib.pyplot as plt

    w = np.asarray(_array(weights, "weights"), dtype=np.float64)
    if w.ndim == 3:
        w = w[None]  # (1, C, L, S)
    if w.ndim != 4:
        raise ValueError(f"attention_grid needs weights (R, C, L, S) or (C, L, S), got shape {w.shape}; "
                         f"for a recorded (N, H, L, S) array pick one batch element: w[0]")
    R, C, L, S = w.shape
    col_labels = _check_labels(_default_cols(row_labels, col_labels, (L, S)), S, "col_labels")
    row_labels = _check_labels(row_labels, L, "row_labels")
    row_titles = _check_labels(row_titles, R, "row_titles")
    col_titles = _check_labels(col_titles, C, "col_titles")
    if row_titles is None and R > 1:
        row_titles = [f"layer {r}" for r in range(R)]
    if col_titles is None:
        col_titles = [f"head {c}" for c in range(C)]
    lo, hi = _finite_range(w)
    vmin = lo if vmin is None else vmin
    vmax = hi if vmax is None else vmax
    fig, axes = plt.subplots(R, C, squeeze=False, constrained_layout=True,
                             figsize=(panel_size * C + 1.2, panel_size * R + (0.5 if title else 0.2)))
    fontsize = _tick_fontsize(max(L, S)) - 1.5
    for r in range(R):
        for c in range(C):
            ax = axes[r, c]
            image = ax.imshow(np.ma.masked_invalid(w[r, c]), cmap=_colormap(cmap), vmin=vmin, vmax=vmax)
            _set_ticks(ax, row_labels, col_labels, (L, S), fontsize)
            if r == 0:
                ax.set_title(col_titles[c], fontsize=10)
            if c == 0 and row_titles is not None:
                ax.set_ylabel(f"{row_titles[r]}\nquery", fontsize=9)
            if r == R - 1:
                ax.set_xlabel("key", fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    if title:
        fig.suptitle(title)
    return fig


def mask_picture(mask, row_labels=None, col_labels=None, title=None, polarity="attend", ax=None,
                 legend=True):
    """Draw a bool attention mask as may-attend vs blocked cells, with a legend; return the Figure.

    mask (L, S) bool (leading size-1 dims are dropped). polarity "attend": True = may attend
    (``scaled_dot_product_attention``); "block": True = may NOT attend (``MultiheadAttention``,
    ``causal_mask``). The picture is the same either way; the legend says which value is which.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    if polarity not in ("attend", "block"):
        raise ValueError(f"polarity must be 'attend' (True = may attend, SDPA) or 'block' "
                         f"(True = may NOT attend, MultiheadAttention), got {polarity!r}")
    m = _array(mask, "mask")
    if m.dtype != np.bool_:
        raise TypeError(f"mask must be bool, got dtype {m.dtype}; a float mask is added to the "
                        f"scores: draw it with viz.heatmap")
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"mask_picture needs an (L, S) mask, got shape {_array(mask, 'mask').shape}")
    allowed = m if polarity == "attend" else ~m
    col_labels = _check_labels(_default_cols(row_labels, col_labels, m.shape), m.shape[1], "col_labels")
    row_labels = _check_labels(row_labels, m.shape[0], "row_labels")
    if ax is None:
        side = min(2.5 + 0.4 * max(m.shape), 8.0)
        fig, ax = plt.subplots(figsize=(side, side + 0.6), constrained_layout=True)
    ax.imshow(allowed.astype(np.int8), cmap=ListedColormap([BLOCKED_COLOR, ATTEND_COLOR]), vmin=0, vmax=1)
    ax.set_xticks(np.arange(m.shape[1] + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(m.shape[0] + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    _set_ticks(ax, row_labels, col_labels, m.shape, _tick_fontsize(max(m.shape)))
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title, pad=20 if legend else 6)
    if legend:
        attend_value, block_value = ("True", "False") if polarity == "attend" else ("False", "True")
        handles = [Patch(color=ATTEND_COLOR, label=f"may attend ({attend_value})"),
                   Patch(color=BLOCKED_COLOR, label=f"blocked ({block_value})")]
        ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2,
                  fontsize=8, frameon=False, borderaxespad=0.1, handlelength=1.2)
    return ax.figure


def positional_encoding_picture(pe, similarity=True, title=None):
    """Draw a positional-encoding table and, beside it, the dot-product similarity of positions.

    pe (P, d_model) ndarray or Tensor. Left: PE[pos, i]; right (if ``similarity``): the (P, P)
    matrix PE PEᵀ, whose entry (p, q) = Σ_i PE[p, i] PE[q, i] depends mostly on |p - q| for the
    sinusoidal table.
    """
    import matplotlib.pyplot as plt

    table = np.asarray(_array(pe, "pe"), dtype=np.float64)
    if table.ndim != 2:
        raise ValueError(f"pe must be (positions, d_model), got shape {table.shape}")
    ncols = 2 if similarity else 1
    fig, axes = plt.subplots(1, ncols, squeeze=False, figsize=(5.2 * ncols, 4.4), constrained_layout=True)
    ax = axes[0, 0]
    bound = float(np.abs(table).max()) or 1.0
    image = ax.imshow(table, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto", interpolation="nearest")
    ax.set_xlabel("dimension i")
    ax.set_ylabel("position")
    ax.set_title("PE[position, i]")
    fig.colorbar(image, ax=ax, shrink=0.85)
    if similarity:
        ax = axes[0, 1]
        sim = table @ table.T  # (P, P)
        image = ax.imshow(sim, cmap="viridis", interpolation="nearest")
        ax.set_xlabel("position q")
        ax.set_ylabel("position p")
        ax.set_title("PE PEᵀ: similarity of positions")
        fig.colorbar(image, ax=ax, shrink=0.85)
    if title:
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------------------------
# computation graphs
# ----------------------------------------------------------------------------------------------

def _columns(nodes: list) -> dict:
    """Column of each node: ops at 1 + their deepest parent, leaves just left of their first use."""
    col = {}
    for n in nodes:
        col[id(n)] = 1 + max(col[id(p)] for p in n.parents) if n.parents else 0
    first_use = {}
    for n in nodes:
        for p in n.parents:
            if not p.parents:
                first_use[id(p)] = min(first_use.get(id(p), col[id(n)]), col[id(n)])
    col.update({key: c - 1 for key, c in first_use.items()})
    return col


def _rows(nodes: list, col: dict) -> dict:
    """Vertical position: each node's parents fan out around it; overlaps pushed apart per column."""
    want = {id(nodes[-1]): 0.0}
    for n in reversed(nodes):
        k = len(n.parents)
        for i, p in enumerate(n.parents):
            want.setdefault(id(p), want[id(n)] + ((k - 1) / 2 - i))
    y = {}
    for c in set(col.values()):
        members = sorted((n for n in nodes if col[id(n)] == c), key=lambda n: -want[id(n)])
        placed = []
        for n in members:
            placed.append(min(want[id(n)], placed[-1] - 1.0) if placed else want[id(n)])
        shift = (sum(want[id(n)] for n in members) - sum(placed)) / len(members)
        y.update({id(n): v + shift for n, v in zip(members, placed)})
    return y


def _shape_text(t: Tensor) -> str:
    return "scalar" if t.ndim == 0 else str(tuple(t.shape))


def _node_label(t: Tensor, names: dict, is_output: bool) -> tuple:
    """(text, face colour) of one node."""
    name = names.get(id(t))
    if t.parents:
        head = f"{name} = {t.op}" if name else t.op
        return f"{head}\n{_shape_text(t)}", "#ffd166" if is_output else "#fbe3c2"
    if name:
        return f"{name}\n{_shape_text(t)}", "#bde0fe" if t.requires_grad else "#e9ecef"
    if t.data.size == 1:
        return f"{t.data.item():g}", "#e9ecef"
    return _shape_text(t), "#bde0fe" if t.requires_grad else "#e9ecef"


def computation_graph(output, names=None, title=None):
    """Draw the graph behind a Tensor expression, inputs on the left, ``output`` on the right.

    output: a Tensor computed with gradients on; names: {tensor or id(tensor): "x"} labels for
    leaves (and, optionally, intermediate results). Op nodes show ``Tensor.op`` and the shape;
    leaves that require grad are blue, constants grey. Columns follow topological depth.
    """
    import matplotlib.pyplot as plt

    if not isinstance(output, Tensor):
        raise TypeError(f"computation_graph needs a tinyattn Tensor, got {type(output).__name__}")
    if not output.parents:
        raise ValueError("output has no graph (it is a leaf, or was computed under no_grad() or "
                         "from inputs without requires_grad=True)")
    names = {id(k) if isinstance(k, Tensor) else k: v for k, v in (names or {}).items()}
    nodes = list(reverse_topological(output, grad_only=False))[::-1]  # parents first
    col = _columns(nodes)
    y = _rows(nodes, col)
    ncol = max(col.values()) + 1
    ys = list(y.values())
    fig, ax = plt.subplots(figsize=(1.55 * ncol + 0.6, 0.85 * (max(ys) - min(ys)) + 1.6),
                           constrained_layout=True)
    ax.set_xlim(-0.6, ncol - 0.4)
    ax.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    ax.axis("off")
    texts = {}
    for n in nodes:
        label, face = _node_label(n, names, n is output)
        texts[id(n)] = ax.text(col[id(n)], y[id(n)], label, ha="center", va="center", fontsize=8.5,
                               bbox=dict(boxstyle="round,pad=0.35", facecolor=face, edgecolor="#555555"))
    for n in nodes:
        for p in n.parents:
            ax.annotate("", xy=(0, 0.5), xycoords=texts[id(n)], xytext=(1, 0.5),
                        textcoords=texts[id(p)],
                        arrowprops=dict(arrowstyle="-|>", color="#555555", shrinkA=5, shrinkB=5,
                                        connectionstyle="arc3,rad=0.0"))
    if title:
        ax.set_title(title)
    return fig


def curves(series, xlabel, ylabel, title=None, logx=False, logy=False, ax=None, markers=True):
    """Line plot of several named series; return the Figure.

    series: {name: y} (x = 0, 1, 2, ...) or {name: (x, y)}; arrays, lists or Tensors.
    """
    import matplotlib.pyplot as plt

    if not series:
        raise ValueError("curves needs at least one series, got an empty dict")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 4.0), constrained_layout=True)
    for name, values in series.items():
        if isinstance(values, tuple):
            if len(values) != 2:
                raise ValueError(f"series {name!r}: a tuple must be (x, y), got {len(values)} items")
            x, yv = (np.asarray(_array(v, name), dtype=np.float64) for v in values)
        else:
            yv = np.asarray(_array(values, name), dtype=np.float64)
            x = np.arange(len(yv))
        if x.shape != yv.shape or yv.ndim != 1:
            raise ValueError(f"series {name!r}: x has shape {x.shape} and y has shape {yv.shape}; "
                             f"expected two 1-D arrays of the same length")
        ax.plot(x, yv, marker="o" if markers and len(yv) <= 30 else None, markersize=4, label=str(name))
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax.figure


def token_vectors(vectors, tokens, titles=None, title=None, arrows=True):
    """Scatter 2-D token vectors with their labels, one panel per array, on shared axes.

    vectors: one (T, 2) array/Tensor or a list of them (e.g. X, then X W_qᵀ, then X W_kᵀ);
    tokens: T labels; titles: one per panel. Arrows from the origin show each vector.
    """
    import matplotlib.pyplot as plt

    panels = [vectors] if isinstance(vectors, Tensor) or np.ndim(vectors) == 2 else list(vectors)
    arrays = [np.asarray(_array(v, "vectors"), dtype=np.float64) for v in panels]
    tokens = [str(t) for t in tokens]
    for a in arrays:
        if a.shape != (len(tokens), 2):
            raise ValueError(f"token_vectors needs (T, 2) arrays with T = {len(tokens)} tokens, got {a.shape}")
    titles = _check_labels(titles, len(arrays), "titles")
    bound = 1.15 * max(float(np.abs(a).max()) for a in arrays) or 1.0
    fig, axes = plt.subplots(1, len(arrays), squeeze=False, figsize=(3.6 * len(arrays), 3.7),
                             constrained_layout=True)
    colors = plt.get_cmap("tab10")(np.arange(len(tokens)) % 10)
    for i, (ax, a) in enumerate(zip(axes[0], arrays)):
        ax.axhline(0, color="#bbbbbb", linewidth=0.8)
        ax.axvline(0, color="#bbbbbb", linewidth=0.8)
        if arrows:
            ax.quiver(np.zeros(len(a)), np.zeros(len(a)), a[:, 0], a[:, 1], color=colors, angles="xy",
                      scale_units="xy", scale=1, width=0.006, alpha=0.6)
        ax.scatter(a[:, 0], a[:, 1], c=colors, s=25, zorder=3)
        for j, (t, (x, y)) in enumerate(zip(tokens, a)):
            ax.annotate(t, (x, y), xytext=(4, 4 if j % 2 == 0 else -12), textcoords="offset points",
                        fontsize=9)  # alternate above/below, so that collapsed points stay legible
        ax.set_xlim(-bound, bound)
        ax.set_ylim(-bound, bound)
        ax.set_aspect("equal")
        if titles:
            ax.set_title(titles[i], fontsize=10)
    if title:
        fig.suptitle(title)
    return fig
