"""Figures for notebook 10: the attention heads of a real pretrained BERT (all-MiniLM-L6-v2).

The measurements behind the pictures (``attention_of``, ``head_scores``, ``example_heads``,
``coreference``, ``head_changes``, ``similarity``) are plain functions, so the notebook prints
the numbers the figures draw. Each figure needs the model on disk: when it is not available
offline the figure raises ``FigureSkipped`` and ``python -m tinyattn.figures`` reports it as
skipped (``tinyattn.pretrained.load()`` fetches the model once).
"""

from __future__ import annotations

import functools

import numpy as np

from .. import browser, pretrained, viz
from .registry import FigureSkipped, figure

README_SENTENCE = "the cat sat on the mat because it was tired"
TIRED = "The animal didn't cross the street because it was too tired."
WIDE = "The animal didn't cross the street because it was too wide."
SUBWORDS = "Tokenization splits unbelievably long words into sub-words like playfulness."
SIMILARITY_SENTENCES = (
    "A man is playing a guitar.",
    "Someone is strumming a musical instrument.",
    "The cat sleeps on the sofa.",
    "A kitten is napping on the couch.",
    "Stock markets fell sharply today.",
    "Shares dropped as investors panicked.",
    "How do I bake bread at home?",
    "A simple recipe for homemade loaves.",
)
SHORT_LABELS = ("man + guitar", "strumming", "cat + sofa", "kitten + couch", "markets fell",
                "shares dropped", "bake bread?", "loaf recipe")


@functools.lru_cache(maxsize=1)
def model_and_tokenizer():
    """(model, tokenizer) of all-MiniLM-L6-v2, loaded once; ``FigureSkipped`` if not on disk."""
    if not pretrained.is_available():
        raise FigureSkipped(f"model not available: {pretrained.MODEL_NAME} is not on disk; fetch it "
                            f"once with `python -c \"import tinyattn.pretrained as p; p.load()\"`")
    return pretrained.load()


def attention_of(text: str):
    """(tokens, attention (layers, H, L, L)) of one text, [CLS] and [SEP] included."""
    model, tok = model_and_tokenizer()
    batch = tok([text])
    _, attn = model(batch["input_ids"], batch["attention_mask"], output_attentions=True)
    return tok.convert_ids_to_tokens(batch["input_ids"][0]), attn[:, 0]  # L tokens, (layers, H, L, L)


def word_ids(tokens) -> np.ndarray:
    """The word each token belongs to: a "##" piece continues the word before it. (L,)"""
    return np.cumsum([not t.startswith("##") for t in tokens]) - 1


def head_scores(tokens, attn: np.ndarray) -> dict:
    """Per-head summaries of one text's attention (layers, H, L, L); each value (layers, H).

    previous:  mean over queries i ≥ 1 of P[i, i−1] (the weight on the token just before)
    next:      mean over queries i < L−1 of P[i, i+1] (the weight on the token just after)
    to_cls:    mean over queries of P[i, 0] (on [CLS]); to_sep: of P[i, L−1] (on [SEP])
    same_word: mean, over tokens of words cut into several pieces, of the weight on the word's
               other pieces (NaN when no word is cut)
    entropy:   mean over queries of −Σ_j P[i, j] ln P[i, j], divided by ln L (1 = uniform)
    """
    L = attn.shape[-1]
    i = np.arange(1, L)
    word = word_ids(tokens)
    same = (word[:, None] == word[None, :]) & ~np.eye(L, dtype=bool)  # (L, L)
    pieces = same.any(axis=1)  # (L,): tokens of multi-piece words
    plogp = np.where(attn > 0, attn * np.log(np.where(attn > 0, attn, 1.0)), 0.0)  # (layers, H, L, L)
    return {
        "previous": attn[..., i, i - 1].mean(axis=-1),
        "next": attn[..., i - 1, i].mean(axis=-1),
        "to_cls": attn[..., :, 0].mean(axis=-1),
        "to_sep": attn[..., :, L - 1].mean(axis=-1),
        "same_word": (attn * same).sum(axis=-1)[..., pieces].mean(axis=-1) if pieces.any()
        else np.full(attn.shape[:2], np.nan),
        "entropy": -plogp.sum(axis=-1).mean(axis=-1) / np.log(L),
    }


def example_heads(scores: dict) -> dict:
    """kind -> (layer, head) of the clearest head of each kind.

    previous token: highest ``previous``; sink: most weight on [CLS] + [SEP]; same word: highest
    ``same_word`` among heads whose ``previous`` and ``next`` are below 0.5 (a head that looks at
    a neighbour covers the pieces of a word trivially); broad: highest entropy.
    """
    def best(values):
        return tuple(int(v) for v in np.unravel_index(np.nanargmax(values), values.shape))

    neighbour = np.maximum(scores["previous"], scores["next"])
    same = np.where(neighbour < 0.5, scores["same_word"], np.nan)
    return {"previous token": best(scores["previous"]), "sink ([CLS] + [SEP])": best(scores["to_cls"] + scores["to_sep"]),
            "same word": best(same), "broad": best(scores["entropy"])}


def coreference() -> dict:
    """Where "it" looks in the tired and the wide sentence, for the head whose preference for
    "animal" over "street" changes most between them.

    Returns tokens (of the tired sentence), it (index of "it"), head (layer, head), rows (2, L):
    that head's attention of "it" (tired, wide), and shift (layers, H): the change of
    P[it, animal] − P[it, street] from wide to tired, for every head.
    """
    tokens, tired = attention_of(TIRED)
    wide_tokens, wide = attention_of(WIDE)
    if len(tokens) != len(wide_tokens):
        raise ValueError(f"the two sentences tokenize to {len(tokens)} and {len(wide_tokens)} tokens; "
                         f"expected the same length")
    it, animal, street = tokens.index("it"), tokens.index("animal"), tokens.index("street")
    shift = (tired[..., it, animal] - tired[..., it, street]) - (wide[..., it, animal] - wide[..., it, street])
    head = tuple(int(v) for v in np.unravel_index(np.argmax(shift), shift.shape))
    rows = np.stack([tired[head][it], wide[head][it]])  # (2, L)
    return {"tokens": tokens, "it": it, "head": head, "rows": rows, "shift": shift}


def head_changes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How much each head's attention differs between two texts of equal length: (layers, H).

    The total-variation distance ½ Σ_j |P_a[i, j] − P_b[i, j]| (0 = same row, 1 = disjoint),
    averaged over the queries i.
    """
    return 0.5 * np.abs(a - b).sum(axis=-1).mean(axis=-1)


def similarity(sentences=SIMILARITY_SENTENCES) -> np.ndarray:
    """Cosine similarity of the sentence embeddings: (N, N) = E Eᵀ for unit-length rows of E."""
    model, _ = model_and_tokenizer()
    e = model.encode(list(sentences))  # (N, 384), unit length
    return e @ e.T  # (N, N)


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------

def _grid_labels():
    model, _ = model_and_tokenizer()
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    return [f"layer {i}" for i in range(layers)], [f"head {h}" for h in range(heads)]


@figure("pretrained_head_grid", "every layer x head of all-MiniLM-L6-v2 on one sentence (needs the model)")
def pretrained_head_grid():
    tokens, attn = attention_of(README_SENTENCE)
    layers, heads = _grid_labels()
    return viz.attention_grid(attn, tokens, row_titles=layers, col_titles=heads, vmin=0.0, vmax=1.0,
                              panel_size=1.45, title=f"all-MiniLM-L6-v2: 6 layers x 12 heads on "
                                                     f"\"{README_SENTENCE}\"")


@figure("pretrained_head_kinds", "four kinds of BERT heads: previous token, sink, same word, broad (needs the model)")
def pretrained_head_kinds():
    import matplotlib.pyplot as plt

    tokens, attn = attention_of(SUBWORDS)
    scores = head_scores(tokens, attn)
    fig, axes = plt.subplots(1, 4, figsize=(22, 6.2), constrained_layout=True)
    for ax, (kind, (layer, head)) in zip(axes, example_heads(scores).items()):
        viz.heatmap(attn[layer, head], tokens, ax=ax, vmin=0.0, vmax=1.0, colorbar=False,
                    title=f"{kind}: layer {layer}, head {head}")
    fig.colorbar(axes[-1].images[0], ax=axes, shrink=0.7, label="weight")
    return fig


@figure("pretrained_coreference", "where \"it\" looks: 'too tired' vs 'too wide' (needs the model)")
def pretrained_coreference():
    c = coreference()
    cols = [t if t != "tired" else "tired / wide" for t in c["tokens"]]
    layer, head = c["head"]
    return viz.heatmap(c["rows"], ["it (… too tired)", "it (… too wide)"], cols, annotate=True,
                       vmin=0.0, vmax=1.0, figsize=(12, 3.2), ylabel="query",
                       title=f"layer {layer}, head {head}: the attention of \"it\"")


@figure("pretrained_entropy", "entropy of every head's attention, 1 = uniform (needs the model)")
def pretrained_entropy():
    tokens, attn = attention_of(TIRED)
    layers, heads = _grid_labels()
    return viz.heatmap(head_scores(tokens, attn)["entropy"], layers, heads, annotate=True, vmin=0.0,
                       vmax=1.0, cmap="magma", xlabel="head", ylabel="layer", figsize=(11, 4.6),
                       title="normalized entropy of each head's attention (0 = one key, 1 = uniform)")


@figure("pretrained_similarity", "cosine similarity of sentence embeddings from all-MiniLM-L6-v2 (needs the model)")
def pretrained_similarity():
    return viz.heatmap(similarity(), SHORT_LABELS, annotate=True, vmin=0.0, vmax=1.0, cmap="viridis",
                       xlabel="sentence", ylabel="sentence", figsize=(8.4, 7),
                       title="cosine similarity of the sentence embeddings")


@figure("pretrained_model_view", "interactive model view (HTML): all 72 heads on the 'too tired' sentence (needs the model)")
def pretrained_model_view():
    tokens, attn = attention_of(TIRED)
    layers, heads = _grid_labels()
    return viz.model_view(tokens, attn, layer_names=layers, head_names=heads,
                          title=f"all-MiniLM-L6-v2 on \"{TIRED}\": click a head to open it")


@figure("pretrained_model_view_screenshot", "the model view in headless Chromium, the 'it' head opened "
                                            "(needs the model and Chromium)")
def pretrained_model_view_screenshot():
    if browser.find_chromium() is None:
        raise FigureSkipped("no Chromium: the screenshot is taken by headless Chromium (on Debian: apt-get "
                            "install chromium); the PNG already there, if any, is kept")
    view = pretrained_model_view()
    c = coreference()
    return view.screenshot(open_head=c["head"], hover=("queries", c["it"]))
