"""Interactive attention views: one self-contained HTML page per view, for a browser or Jupyter.

``head_view`` draws, for one layer, a line from each query token (left) to each key token (right)
per head, in that head's colour with opacity = the weight P[i, j]; a selector picks the layer,
coloured toggles show or hide heads, and hovering a token keeps only its lines (a query: its row
P[i, :]; a key: its column P[:, j]). ``model_view`` draws every layer x head as a thumbnail; a
click opens that head in a head view. The page carries its JavaScript and CSS inline (from
``tinyattn/web/``) and fetches nothing, so it works offline and from a saved file.

    view = viz.head_view(tokens, attn)     # attn (layers, H, L, S), a list of (N, H, L, S), ...
    view                                   # in Jupyter: shown inline (an iframe)
    view.save("view.html")                 # the same page as a file

The weights are stored rounded to ``DECIMALS`` places, as integers (P · 10⁴), so a page with
6 layers x 12 heads on 40 tokens is about 380 KiB and opens in about 0.3 s (benchmarks/interactive.py).
At rest each head's lines are drawn into a canvas with the opacity rounded to 1/32; a hovered
token's lines are SVG elements with opacity = the stored weight.
"""

from __future__ import annotations

import html
import json
from importlib import resources

import numpy as np

from .autograd import Tensor
from .serialization import atomic_write

__all__ = ["AttentionView", "head_view", "model_view", "stack_attention", "thumb_height_px", "HEAD_COLORS",
           "DECIMALS"]

DECIMALS = 4

# one colour per head (matplotlib's tab10, then darker shades of tab20b), repeated beyond 20 heads
HEAD_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#5254a3",
               "#8ca252", "#bd9e39", "#ad494a", "#a55194")

ROW_PX, THUMB_WIDTH_PX = 20, 64  # px per token row and per model-view thumbnail (the page reads them)


def thumb_height_px(L: int, S: int) -> int:
    """The height (px) of a model-view thumbnail: 3 px per token row, between 48 and 100."""
    return min(100, max(48, 3 * max(L, S)))


def _weights_array(x, what: str) -> np.ndarray:
    arr = x.data if isinstance(x, Tensor) else np.asarray(x)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{what} must be an array of numbers, got dtype {arr.dtype}")
    return arr


def stack_attention(attn, batch: int | None = None) -> np.ndarray:
    """Attention weights in any of tinyattn's layouts as one (layers, H, L, S) float64 array.

    attn: (L, S) one head; (H, L, S) one layer; (layers, H, L, S); (layers, N, H, L, S) as the
    pretrained model returns; or a list of per-layer (N, H, L, S) / (H, L, S) arrays, as
    ``nn.record_attention`` records them. With a batch axis N, ``batch`` picks the example (it
    may be omitted when N = 1).
    """
    if isinstance(attn, (list, tuple)):
        if not attn:
            raise ValueError("attn is an empty list; expected one (N, H, L, S) or (H, L, S) array per layer")
        layers = [_weights_array(a, f"attn[{k}]") for k, a in enumerate(attn)]
        shapes = {a.shape for a in layers}
        if len(shapes) != 1 or layers[0].ndim not in (3, 4):
            raise ValueError(f"attn is a list of arrays of shapes {sorted(shapes)}; expected one shape, "
                             f"(N, H, L, S) or (H, L, S), for every layer")
        arr = np.stack(layers)  # (layers, N, H, L, S) or (layers, H, L, S)
    else:
        arr = _weights_array(attn, "attn")
    if arr.ndim == 5:
        n = arr.shape[1]
        if batch is None and n != 1:
            raise ValueError(f"attn has a batch of N = {n} examples (shape {arr.shape}); pass batch=i to "
                             f"pick one")
        b = 0 if batch is None else batch
        if not 0 <= b < n:
            raise ValueError(f"batch={b} but attn has N = {n} examples (shape {arr.shape})")
        arr = arr[:, b]  # (layers, H, L, S)
    elif batch is not None:
        raise ValueError(f"batch={batch} given but attn of shape {arr.shape} has no batch axis")
    if arr.ndim == 2:
        arr = arr[None, None]  # (1, 1, L, S)
    elif arr.ndim == 3:
        arr = arr[None]  # (1, H, L, S)
    if arr.ndim != 4:
        raise ValueError(f"attn has shape {arr.shape}; expected (L, S), (H, L, S), (layers, H, L, S), "
                         f"(layers, N, H, L, S) or a list of per-layer (N, H, L, S) arrays")
    arr = arr.astype(np.float64)
    if arr.size == 0:
        raise ValueError(f"attn has shape {arr.shape} (layers, H, L, S) with no weights; expected at least "
                         f"one layer, one head, one query and one key")
    if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0 + 1e-6:
        raise ValueError(f"attn must hold attention weights in [0, 1], got values in "
                         f"[{np.nanmin(arr):.3g}, {np.nanmax(arr):.3g}]; pass softmax weights, not scores")
    return arr


def _names(names, n: int, default: str, what: str) -> list:
    if names is None:
        return [f"{default} {k}" for k in range(n)]
    names = [str(x) for x in names]
    if len(names) != n:
        raise ValueError(f"{what} has {len(names)} entries but attn has {n} {default}s")
    return names


def _tokens(tokens, n: int, what: str, axis: str) -> list:
    tokens = [str(t) for t in tokens]
    if len(tokens) != n:
        raise ValueError(f"{what} has {len(tokens)} tokens but attn has {axis} = {n}")
    return tokens


class AttentionView:
    """An interactive view as one HTML document.

    ``html``: the page (str); ``save(path)`` writes it; in Jupyter ``_repr_html_`` shows it in an
    iframe of its own (``srcdoc``), so several views on one page never share ids or styles.
    """

    suffix = ".html"

    def __init__(self, page: str, kind: str, shape: tuple, height: int):
        self.html, self.kind, self.shape, self.height = page, kind, shape, height

    def save(self, path) -> None:
        """Write the page to ``path`` (through a temporary file and a rename)."""
        atomic_write(path, lambda f: f.write(self.html.encode("utf-8")))

    def screenshot(self, open_head=None, hover=None, width: int = 1400, height: int = 900):
        """A PNG of the view drawn by headless Chromium (``tinyattn.browser``), as a ``Screenshot``.

        open_head (layer, head): click that thumbnail first (model view); hover (side, index):
        then rest the mouse on a token, side "queries" or "keys". Raises ``BrowserError`` when no
        Chromium is installed.
        """
        import tempfile

        from .browser import Browser, Screenshot

        with tempfile.TemporaryDirectory(prefix="tinyattn-view-") as folder, \
                Browser(width=width, height=height) as b:
            path = f"{folder}/view.html"
            self.save(path)
            b.open(path)
            b.wait_for("document.getElementById('tinyattn-view').dataset.ready === '1'")
            if open_head is not None:
                layer, head = open_head
                b.mouse("click", *b.center(f'.ta-thumb[data-layer="{layer}"][data-head="{head}"]'))
            if hover is not None:
                side, index = hover
                b.mouse("move", *b.center(f'.ta-token[data-side="{side}"][data-index="{index}"]'))
            b.evaluate("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
            if b.errors:
                raise RuntimeError(f"the view logged errors in the browser: {b.errors}")
            return Screenshot(b.screenshot("#tinyattn-view"))

    def _repr_html_(self) -> str:
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" sandbox="allow-scripts" '
                f'style="width: 100%; height: {self.height}px; border: 0;"></iframe>')

    def __repr__(self) -> str:
        layers, heads, L, S = self.shape
        return f"<AttentionView: {self.kind} view, {layers} layer(s) x {heads} head(s), L = {L}, S = {S}>"


def _page(payload: dict) -> str:
    """The HTML document: inline CSS, the data as JSON, inline JavaScript."""
    web = resources.files("tinyattn") / "web"
    css = (web / "attention_view.css").read_text(encoding="utf-8")
    js = (web / "attention_view.js").read_text(encoding="utf-8")
    data = json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")  # no "</script>" inside
    title = html.escape(payload["title"] or f"tinyattn {payload['mode']} view")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>\n'
            f'<style>\n{css}</style></head>\n<body><div class="ta-view" id="tinyattn-view"></div>\n'
            f'<script type="application/json" id="tinyattn-data">{data}</script>\n'
            f'<script>\n{js}</script>\n</body></html>\n')


def _view(mode, tokens, attn, key_tokens, layer_names, head_names, title, batch, layer=0, heads=None):
    w = stack_attention(attn, batch)  # (layers, H, L, S)
    n_layers, H, L, S = w.shape
    queries = _tokens(tokens, L, "tokens", "L")
    if key_tokens is None and L != S:
        raise ValueError(f"attn has L = {L} queries but S = {S} keys (cross-attention); pass key_tokens")
    keys = queries if key_tokens is None else _tokens(key_tokens, S, "key_tokens", "S")
    visible = list(range(H)) if heads is None else list(heads)
    for what, k in [("layer", layer)] + [("heads", h) for h in visible]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"{what} must hold ints (indices), got {k!r} of type {type(k).__name__}")
    visible = [int(h) for h in visible]
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer={layer} but attn has {n_layers} layer(s)")
    if any(not 0 <= h < H for h in visible):
        raise ValueError(f"heads={visible} but attn has {H} heads (0 to {H - 1})")
    scale = 10 ** DECIMALS
    payload = {
        "mode": mode, "title": title, "queries": queries, "keys": keys,
        "layers": _names(layer_names, n_layers, "layer", "layer_names"),
        "heads": _names(head_names, H, "head", "head_names"),
        "colors": [HEAD_COLORS[h % len(HEAD_COLORS)] for h in range(H)],
        "scale": scale, "layer": int(layer), "visible": visible,
        "layout": {"row": ROW_PX, "thumb_width": THUMB_WIDTH_PX, "thumb_height": thumb_height_px(L, S)},
        "weights": np.rint(w * scale).astype(np.int64).reshape(n_layers, H, L * S).tolist(),
    }
    height = max(L, S) * ROW_PX + 90  # the iframe in Jupyter: a head view's controls + token rows
    if mode == "model":
        height += 60 + n_layers * (thumb_height_px(L, S) + 6)  # the grid above the head view
    return AttentionView(_page(payload), mode, w.shape, height)


def head_view(tokens, attn, key_tokens=None, layer_names=None, head_names=None, title=None,
              batch=None, layer=0, heads=None) -> AttentionView:
    """An interactive view of one layer's heads: lines from each query to each key; see the module.

    tokens: L query tokens; attn: (layers, H, L, S) or any layout ``stack_attention`` takes (one
    ``MultiheadAttention``'s (N, H, L, S) weights: pass ``w[n]``, or ``[w]`` with ``batch=n``; a 4-d
    array is read as layers x heads); key_tokens: S key tokens (cross-attention; default: tokens).
    layer, heads: what is shown first (default: layer 0, every head). Line (i, j) of head h has
    opacity P[layer, h, i, j] (at rest rounded to 1/32; exact to 1e-4 for a hovered token's lines).
    """
    return _view("head", tokens, attn, key_tokens, layer_names, head_names, title, batch, layer, heads)


def model_view(tokens, attn, key_tokens=None, layer_names=None, head_names=None, title=None,
               batch=None) -> AttentionView:
    """An interactive layers x heads grid of thumbnails; a click opens that head in a head view.

    tokens: L query tokens; attn: (layers, H, L, S) or any layout ``stack_attention`` takes;
    key_tokens: S key tokens (cross-attention; default: tokens).
    """
    return _view("model", tokens, attn, key_tokens, layer_names, head_names, title, batch)
