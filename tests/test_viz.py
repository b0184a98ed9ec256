"""tinyattn.viz: every function returns a Figure that shows exactly the data it was given, with
the tokens on the axes; and `import tinyattn` does not load matplotlib."""

from __future__ import annotations

import subprocess
import sys

import matplotlib
import numpy as np
import pytest

import tinyattn as ta
from tinyattn import viz

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

TOKENS = ["the", "cat", "sat", "on", "the", "mat"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def ticks(axis_labels) -> list:
    return [t.get_text() for t in axis_labels]


def image_of(ax) -> np.ndarray:
    return np.ma.getdata(ax.images[0].get_array())


def test_import_tinyattn_does_not_import_matplotlib():
    code = "import sys, tinyattn, tinyattn.nn, tinyattn.viz; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_viz_and_its_interactive_views_are_reached_from_import_tinyattn():
    code = ("import sys, tinyattn as ta, tinyattn.interactive as i; "
            "print(ta.viz.head_view is i.head_view, ta.viz.model_view is i.model_view, "
            "'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "False"], out.stdout + out.stderr


# ----------------------------------------------------------------------------------------------
# heatmap
# ----------------------------------------------------------------------------------------------

def test_heatmap_shows_the_matrix_with_token_ticks_and_a_colorbar():
    rng = np.random.default_rng(0)
    w = rng.random((6, 6))
    fig = viz.heatmap(ta.tensor(w), TOKENS, title="weights")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2, "the matrix and its colorbar"
    ax = fig.axes[0]
    assert ticks(ax.get_xticklabels()) == TOKENS
    assert ticks(ax.get_yticklabels()) == TOKENS
    np.testing.assert_allclose(image_of(ax), w.astype(np.float32))
    assert ax.images[0].get_clim() == pytest.approx((w.min(), w.max()))
    assert ax.get_title() == "weights"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("key", "query")


def test_heatmap_cross_attention_has_different_row_and_column_tokens():
    queries, keys = ["le", "chat"], ["the", "black", "cat"]
    fig = viz.heatmap(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]), queries, keys, colorbar=False)
    ax = fig.axes[0]
    assert len(fig.axes) == 1
    assert ticks(ax.get_yticklabels()) == queries
    assert ticks(ax.get_xticklabels()) == keys


def test_heatmap_draws_into_a_given_axes_and_annotates_values():
    fig, axes = plt.subplots(1, 2)
    m = np.array([[0.25, -np.inf], [0.5, 0.125]])
    out = viz.heatmap(m, ["a", "b"], ax=axes[1], annotate=True, colorbar=False)
    assert out is fig
    texts = [t.get_text() for t in axes[1].texts]
    assert texts == ["0.25", "-∞", "0.50", "0.12"]
    colors = [t.get_color() for t in axes[1].texts]
    assert (colors[2], colors[3]) == ("black", "white"), "black on viridis yellow, white on dark purple"
    assert np.ma.getmaskarray(axes[1].images[0].get_array()).tolist() == [[False, True], [False, False]]
    assert axes[1].images[0].get_clim() == (0.125, 0.5), "the colour range ignores -inf"
    assert not axes[0].images


def test_heatmap_rejects_wrong_shapes_and_label_counts():
    with pytest.raises(ValueError, match=r"2-D matrix .*\(2, 3, 3\)"):
        viz.heatmap(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="row_labels has 2 entries but the matrix has 3"):
        viz.heatmap(np.zeros((3, 3)), ["a", "b"])


# ----------------------------------------------------------------------------------------------
# attention_grid
# ----------------------------------------------------------------------------------------------

def test_attention_grid_layers_by_heads_share_one_colour_range():
    rng = np.random.default_rng(1)
    w = rng.random((2, 3, 6, 6))
    w[1, 2] *= 3.0
    fig = viz.attention_grid(ta.tensor(w), TOKENS, title="grid")
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 6
    assert len(fig.axes) == 7, "six panels and one shared colorbar"
    lo, hi = w.min(), w.max()
    for i, ax in enumerate(panels):
        r, c = divmod(i, 3)
        assert ax.images[0].get_clim() == pytest.approx((lo, hi))
        np.testing.assert_allclose(image_of(ax), w[r, c].astype(np.float32))
        assert ticks(ax.get_xticklabels()) == TOKENS
        assert ticks(ax.get_yticklabels()) == TOKENS
    assert [ax.get_title() for ax in panels[:3]] == ["head 0", "head 1", "head 2"]
    assert panels[0].get_ylabel().startswith("layer 0") and panels[3].get_ylabel().startswith("layer 1")
    assert fig._suptitle.get_text() == "grid"


def test_attention_grid_of_one_row_and_custom_titles():
    w = np.full((4, 2, 3), 0.5)
    fig = viz.attention_grid(w, ["q1", "q2"], ["k1", "k2", "k3"], col_titles=list("ABCD"))
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 4
    assert [ax.get_title() for ax in panels] == list("ABCD")
    assert ticks(panels[0].get_xticklabels()) == ["k1", "k2", "k3"]
    with pytest.raises(ValueError, match=r"\(R, C, L, S\) or \(C, L, S\)"):
        viz.attention_grid(np.zeros((1, 2, 3, 3, 3)))


def test_attention_grid_of_recorded_encoder_weights():
    ta.manual_seed(0)
    layer = ta.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    model = ta.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    x = ta.randn(1, 6, 8)
    with ta.nn.record_attention(model) as rec:
        model(x)
    weights = np.stack([w[0] for w in rec.weights])  # (layers, heads, L, S)
    fig = viz.attention_grid(weights, TOKENS)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 4
    for i, ax in enumerate(panels):
        np.testing.assert_allclose(image_of(ax).sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(image_of(ax), weights[i // 2, i % 2], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# mask_picture
# ----------------------------------------------------------------------------------------------

def test_mask_picture_draws_both_polarities_as_the_same_picture():
    block = ta.nn.causal_mask(4)  # MultiheadAttention polarity: True = may NOT attend
    attend = np.tril(np.ones((4, 4), dtype=bool))  # SDPA polarity: True = may attend
    labels = ["a", "b", "c", "d"]
    fig_a = viz.mask_picture(attend, labels, polarity="attend")
    fig_b = viz.mask_picture(ta.tensor(block), labels, polarity="block")
    img_a, img_b = image_of(fig_a.axes[0]), image_of(fig_b.axes[0])
    np.testing.assert_array_equal(img_a, attend.astype(np.int8))
    np.testing.assert_array_equal(img_b, img_a)
    legend_a = [t.get_text() for t in fig_a.axes[0].get_legend().get_texts()]
    legend_b = [t.get_text() for t in fig_b.axes[0].get_legend().get_texts()]
    assert legend_a == ["may attend (True)", "blocked (False)"]
    assert legend_b == ["may attend (False)", "blocked (True)"]
    assert ticks(fig_a.axes[0].get_xticklabels()) == labels
    assert ticks(fig_a.axes[0].get_yticklabels()) == labels
    assert len(fig_a.axes) == 1


def test_mask_picture_drops_leading_unit_dims_and_checks_dtype_and_polarity():
    padding = np.array([True, True, True, False])[None, None, None, :]  # (1, 1, 1, S)
    fig = viz.mask_picture(np.broadcast_to(padding, (1, 1, 3, 4)), ["q0", "q1", "q2"], list("wxyz"))
    np.testing.assert_array_equal(image_of(fig.axes[0]), np.tile([1, 1, 1, 0], (3, 1)))
    with pytest.raises(TypeError, match="must be bool"):
        viz.mask_picture(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="polarity must be"):
        viz.mask_picture(np.ones((3, 3), dtype=bool), polarity="allow")


# ----------------------------------------------------------------------------------------------
# positional encodings
# ----------------------------------------------------------------------------------------------

def test_positional_encoding_picture_shows_table_and_its_gram_matrix():
    pe = ta.nn.sinusoidal_table(20, 16, dtype=np.float64)
    fig = viz.positional_encoding_picture(ta.tensor(pe))
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2 and len(fig.axes) == 4, "two panels, two colorbars"
    np.testing.assert_allclose(image_of(panels[0]), pe)
    sim = image_of(panels[1])
    np.testing.assert_allclose(sim, pe @ pe.T)
    np.testing.assert_allclose(np.diag(sim), 8.0, rtol=1e-12), "sin² + cos² = 1 for each of d/2 pairs"
    fig1 = viz.positional_encoding_picture(pe, similarity=False)
    assert len([ax for ax in fig1.axes if ax.images]) == 1


# ----------------------------------------------------------------------------------------------
# computation graphs
# ----------------------------------------------------------------------------------------------

def graph_nodes(fig) -> list:
    return [t for t in fig.axes[0].texts if type(t).__name__ != "Annotation"]


def graph_arrows(fig) -> list:
    return [t for t in fig.axes[0].texts if type(t).__name__ == "Annotation"]


def test_computation_graph_draws_every_node_and_edge_of_a_neuron():
    rng = np.random.default_rng(0)
    x = ta.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    w = ta.tensor(rng.standard_normal(3), requires_grad=True)
    b = ta.tensor(0.5, requires_grad=True)
    y = (x @ w + b).tanh()
    fig = viz.computation_graph(y, names={x: "x", id(w): "w", b: "b", y: "y"})
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert sorted(t.get_text() for t in graph_nodes(fig)) == sorted(["x\n(4, 3)", "w\n(3,)", "b\nscalar", "matmul\n(4,)",
                                        "add\n(4,)", "y = tanh\n(4,)"])
    edges = sorted((a.anncoords.get_text(), a.xycoords.get_text()) for a in graph_arrows(fig))
    assert edges == sorted([("x\n(4, 3)", "matmul\n(4,)"), ("w\n(3,)", "matmul\n(4,)"),
                            ("matmul\n(4,)", "add\n(4,)"), ("b\nscalar", "add\n(4,)"),
                            ("add\n(4,)", "y = tanh\n(4,)")])


def test_computation_graph_columns_follow_topological_depth():
    a = ta.tensor([1.0, 2.0], requires_grad=True)
    out = ((a * 2.0).exp() + a).sum()
    fig = viz.computation_graph(out, names={a: "a"})
    x_of = {t.get_text(): t.get_position()[0] for t in graph_nodes(fig)}
    assert x_of["mul\n(2,)"] < x_of["exp\n(2,)"] < x_of["add\n(2,)"] < x_of["sum\nscalar"]
    assert x_of["a\n(2,)"] < x_of["mul\n(2,)"]
    assert x_of["2"] == x_of["mul\n(2,)"] - 1, "a constant sits just left of the op that uses it"


def test_computation_graph_needs_a_graph():
    with pytest.raises(ValueError, match="no graph"):
        viz.computation_graph(ta.tensor([1.0, 2.0]) * 2.0)
    with pytest.raises(TypeError, match="tinyattn Tensor"):
        viz.computation_graph(np.ones(3))


# ----------------------------------------------------------------------------------------------
# curves
# ----------------------------------------------------------------------------------------------

def test_curves_plots_each_series_with_its_name():
    x = np.array([1.0, 10.0, 100.0])
    fig = viz.curves({"pre-norm": (x, ta.tensor([3.0, 2.0, 1.0])), "post-norm": [1.0, 4.0, 9.0]},
                     "depth", "grad norm", title="t", logx=True, logy=True)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["pre-norm", "post-norm"]
    np.testing.assert_allclose(lines[0].get_xdata(), x)
    np.testing.assert_allclose(lines[0].get_ydata(), [3.0, 2.0, 1.0])
    np.testing.assert_allclose(lines[1].get_xdata(), [0, 1, 2])
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["pre-norm", "post-norm"]
    with pytest.raises(ValueError, match="same length"):
        viz.curves({"bad": ([1, 2], [1, 2, 3])}, "x", "y")


# ----------------------------------------------------------------------------------------------
# token_vectors
# ----------------------------------------------------------------------------------------------

def test_token_vectors_draws_each_panel_with_token_labels_on_shared_axes():
    x = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
    w = np.array([[0.0, -1.0], [1.0, 0.0]])  # a rotation by 90 degrees
    fig = viz.token_vectors([x, ta.tensor(x @ w.T)], ["cat", "mat", "sat"], titles=["X", "X Wᵀ"])
    assert len(fig.axes) == 2
    for ax, points in zip(fig.axes, [x, x @ w.T]):
        np.testing.assert_allclose(ax.collections[-1].get_offsets(), points)
        assert [t.get_text() for t in ax.texts] == ["cat", "mat", "sat"]
    assert fig.axes[0].get_xlim() == fig.axes[1].get_xlim() == pytest.approx((-2.3, 2.3))
    assert [ax.get_title() for ax in fig.axes] == ["X", "X Wᵀ"]
    with pytest.raises(ValueError, match=r"\(T, 2\) arrays with T = 2"):
        viz.token_vectors(x, ["a", "b"])
