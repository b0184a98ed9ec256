"""The interactive attention views (``viz.head_view`` / ``viz.model_view``), tested in a real browser.

The three views ``python -m tinyattn.figures`` writes (the hand-set heads on the labelled sentence,
the translator's cross-attention, all-MiniLM-L6-v2's model view) are generated into a temporary
folder and opened in headless Chromium through ``tinyattn.browser``. The tests read what the page
drew — elements, computed styles, positions, pixels — after real (dispatched) mouse events, and
compare it with the attention arrays computed here from the models, not with the page's data.
They skip when no Chromium is installed, except under TINYATTN_REQUIRE_CHROMIUM=1 (CI, which
installs Debian's ``chromium``), where a missing browser fails them. One browser serves the
whole module.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import tinyattn as ta
from tinyattn import browser, figures, pretrained, viz
from tinyattn.interactive import HEAD_COLORS, stack_attention, thumb_height_px
from tinyattn.examples import SENTENCE, hand_set_heads
from tinyattn.gallery import make
from tinyattn.gallery import pretrained as pretrained_gallery
from tinyattn.gallery import translation

TOL = 1e-3  # the page stores weights rounded to 1e-4; what it draws must match the arrays to 1e-3
LEVELS = 32  # lines at rest are drawn with opacity in steps of 1/32: weights below 1/64 draw nothing


def sentence_case():
    mha, x = hand_set_heads()
    _, w = mha(x[None], x[None], x[None], average_attn_weights=False)  # (1, 4, T, T)
    return {"tokens": list(SENTENCE), "keys": list(SENTENCE), "weights": w.data[None, 0].astype(np.float64)}


def translation_case():
    model, _, _, test = translation.committed()
    i = test.formats.index(translation.VIEW_FORMAT)
    return {"tokens": list(test.targets[i]) + ["</s>"],
            "keys": ["␣" if c == " " else c for c in test.sources[i]],
            "weights": translation.example_maps(test, i, model).astype(np.float64)}  # (2, 4, 11, S)


def pretrained_case():
    if not pretrained.is_available():
        pytest.skip(f"{pretrained.MODEL_NAME} is not on disk (fetch it with tinyattn.pretrained.load())")
    tokens, attn = pretrained_gallery.attention_of(pretrained_gallery.TIRED)
    return {"tokens": tokens, "keys": tokens, "weights": np.asarray(attn, dtype=np.float64)}  # (6, 12, L, L)


CASES = {"sentence_head_view": sentence_case, "translation_head_view": translation_case,
         "pretrained_model_view": pretrained_case}
HEAD_VIEWS = ("sentence_head_view", "translation_head_view")


@pytest.fixture(scope="module")
def b():
    if browser.find_chromium() is None:
        if os.environ.get("TINYATTN_REQUIRE_CHROMIUM") == "1":  # CI: a missing browser is an error
            pytest.fail("TINYATTN_REQUIRE_CHROMIUM=1 but no Chromium is installed")
        pytest.skip("no Chromium installed (on Debian: apt-get install chromium); CI installs it")
    with browser.Browser(width=1400, height=1000) as driver:
        yield driver


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("views")


@pytest.fixture(scope="module")
def cases(folder):
    """name -> {"tokens", "keys", "weights" (layers, H, L, S), "path"}, each view saved by the gallery."""
    made = {}

    def get(name):
        if name not in made:
            case = CASES[name]()
            case["path"] = folder / f"{name}.html"
            view = make(name)
            view.save(case["path"])
            case["height"] = view.height  # of the iframe Jupyter shows it in
            made[name] = case
        return made[name]

    return get


def load(b, case, timeout: float = 10.0) -> None:
    """Open a view and wait until it is drawn; fail at once if its script throws."""
    b.open(case["path"])
    deadline = time.monotonic() + timeout
    while not b.evaluate("document.getElementById('tinyattn-view').dataset.ready === '1'"):
        assert b.errors == [], f"{case['path'].name}: {b.errors}"
        assert time.monotonic() < deadline, f"{case['path'].name} not drawn after {timeout:g} s"
        time.sleep(0.01)


def js(b, body: str):
    """The value of a block of JavaScript (with ``return``) run in the page."""
    return b.evaluate(f"(() => {{ {body} }})()")


def settle(b) -> None:
    b.evaluate("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def hover(b, side: str, index: int) -> None:
    b.mouse("move", *b.center(f'.ta-token[data-side="{side}"][data-index="{index}"]'))
    settle(b)


def unhover(b) -> None:
    b.mouse("move", 1, 1)
    settle(b)


def drawn_lines(b) -> list:
    """[head, i, j, computed stroke-opacity, y1 - y(query i), y2 - y(key j)] of every focus line drawn:
    the y offsets (px) between a line's ends and the centres of the tokens it should join."""
    return js(b, """
        const tokens = side => [...document.querySelectorAll(`.ta-token[data-side="${side}"]`)]
            .map(t => { const r = t.getBoundingClientRect(); return r.y + r.height / 2; });
        const q = tokens("queries"), k = tokens("keys");
        return [...document.querySelectorAll(".ta-focus-lines line")].map(line => {
          const top = line.ownerSVGElement.getBoundingClientRect().y;
          const i = +line.dataset.i, j = +line.dataset.j;
          return [+line.parentNode.dataset.head, i, j, +getComputedStyle(line).strokeOpacity,
                  top + line.y1.baseVal.value - q[i], top + line.y2.baseVal.value - k[j]];
        });""")


def check_focus(b, P, layer: int, heads, side: str, index: int) -> None:
    """The focus lines are exactly the hovered token's row (query) or column (key) of P[layer] for
    each visible head, with opacity = the weight, joining the right tokens."""
    lines = drawn_lines(b)
    L, S = P.shape[-2:]
    n = S if side == "queries" else L
    got = sorted((h, i, j) for h, i, j, *_ in lines)
    want = sorted((h, index, k) if side == "queries" else (h, k, index) for h in heads for k in range(n))
    assert got == want, f"lines drawn for {side} {index}: {len(got)}, expected {len(want)}"
    opacity = np.array([o for *_, o, _, _ in lines])
    expected = np.array([P[layer, h, i, j] for h, i, j, *_ in lines])
    err = np.abs(opacity - expected).max()
    assert err <= TOL, f"drawn opacity differs from the weights by {err:.2e} (> {TOL})"
    offsets = np.abs([[dy1, dy2] for *_, dy1, dy2 in lines])
    assert offsets.max() < 1.0, f"a line ends {offsets.max():.1f} px away from its token's centre"


def check_rest(b, P, layer: int, heads) -> None:
    """No focus lines; the canvas of each visible head shown and drawn for ``layer`` with the lines of
    weight >= 1/64 (up to the 1e-3 rounding at the threshold); hidden heads' canvases not shown."""
    state = js(b, """return [...document.querySelectorAll(".ta-head-lines")].map(c =>
        [+c.dataset.head, getComputedStyle(c).display, c.dataset.layer, +c.dataset.lines]);""")
    assert js(b, 'return document.querySelectorAll(".ta-focus-lines line").length;') == 0
    assert len(state) == P.shape[1], "one canvas per head"
    threshold = 0.5 / LEVELS
    for h, display, drawn_layer, count in state:
        if h not in heads:
            assert display == "none", f"head {h} is hidden but its lines are shown"
            continue
        assert display != "none" and drawn_layer == str(layer), \
            f"head {h}: display {display}, layer {drawn_layer}"
        lo, hi = (P[layer, h] >= threshold + TOL).sum(), (P[layer, h] >= threshold - TOL).sum()
        assert lo <= count <= hi, f"head {h} drew {count} lines, expected {lo} to {hi}"


def set_layer(b, layer: int) -> None:
    js(b, f'const s = document.querySelector(".ta-layer"); s.value = "{layer}"; '
          f's.dispatchEvent(new Event("change")); return 0;')
    settle(b)


def check_shading(b, P, layer: int, heads, index: int) -> None:
    """With query ``index`` hovered, each key token is shaded by its mean weight over the visible heads."""
    shade = js(b, 'return [...document.querySelectorAll(\'.ta-token[data-side="keys"]\')].map(t => '
                  '+t.dataset.weight);')
    err = np.abs(np.array(shade) - P[layer, list(heads), index].mean(axis=0)).max()
    assert err <= TOL, f"key shading differs from the mean weights by {err:.2e}"


# -- pure Python ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_page_is_self_contained(cases, name):
    page = cases(name)["path"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""\b(?:src|href)\s*=""", page, re.I), "the page loads no file (no src= / href=)"
    assert not re.search(r"@import|url\(|<link\b", page, re.I), "no stylesheet or font is fetched"
    assert len(re.findall(r"https?://", page)) == 1 and "http://www.w3.org/2000/svg" in page, \
        "the only URL is the SVG namespace name, which is never fetched"
    assert page.count("<script") == 2 and page.count("<style") == 1, \
        "the data, the script and the style inline"


def test_stack_attention_takes_every_layout_of_the_library():
    ta.manual_seed(0)
    layer = ta.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    model = ta.nn.TransformerEncoder(layer, 2)
    x = ta.tensor(np.random.default_rng(0).standard_normal((3, 5, 16)).astype(np.float32))  # (N, L, E)
    with ta.nn.record_attention(model) as rec:
        model(x)
    assert len(rec.weights) == 2 and rec.weights[0].shape == (3, 2, 5, 5)
    want = np.stack([np.asarray(w)[1] for w in rec.weights])  # (layers, H, L, S) of example 1
    np.testing.assert_array_equal(stack_attention(rec.weights, batch=1), want)
    stacked = np.stack(rec.weights)  # (layers, N, H, L, S), as the pretrained model returns
    np.testing.assert_array_equal(stack_attention(stacked, batch=1), want)
    np.testing.assert_array_equal(stack_attention(want), want)
    np.testing.assert_array_equal(stack_attention(want[0]), want[:1])  # (H, L, S): one layer
    np.testing.assert_array_equal(stack_attention(want[0, 1]), want[:1, 1:2])  # (L, S): one head
    view = viz.head_view(list("abcde"), rec.weights, batch=2)
    assert view.shape == (2, 2, 5, 5) and "<AttentionView: head view, 2 layer(s) x 2 head(s)" in repr(view)

    with pytest.raises(ValueError, match=r"batch of N = 3 .*pass batch=i"):
        stack_attention(rec.weights)
    with pytest.raises(ValueError, match=r"batch=3 but attn has N = 3"):
        stack_attention(rec.weights, batch=3)
    with pytest.raises(ValueError, match=r"not scores"):
        stack_attention(want - 0.5)
    with pytest.raises(ValueError, match=r"attn has shape \(1, 2, 0, 0\) \(layers, H, L, S\) with no weights"):
        viz.head_view([], np.zeros((1, 2, 0, 0)))
    with pytest.raises(ValueError, match=r"tokens has 4 tokens but attn has L = 5"):
        viz.head_view(list("abcd"), want)
    with pytest.raises(ValueError, match=r"S = 3 keys \(cross-attention\); pass key_tokens"):
        viz.model_view(list("abcde"), want[..., :3] / want[..., :3].sum(-1, keepdims=True))
    with pytest.raises(ValueError, match=r"heads=\[2\] but attn has 2 heads"):
        viz.head_view(list("abcde"), want, heads=[2])
    with pytest.raises(TypeError, match=r"heads must hold ints \(indices\), got 1.5 of type float"):
        viz.head_view(list("abcde"), want, heads=[0, 1.5])
    with pytest.raises(TypeError, match=r"layer must hold ints \(indices\), got True of type bool"):
        viz.head_view(list("abcde"), want, layer=True)
    picked = viz.head_view(list("abcde"), want, layer=np.int64(1), heads=[np.int64(0)])  # NumPy ints are ints
    assert picked.shape == want.shape and '"layer":1,"visible":[0]' in picked.html
    with pytest.raises(ValueError, match=r"layer_names has 1 entries but attn has 2 layers"):
        viz.head_view(list("abcde"), want, layer_names=["only one"])


def test_browser_refuses_an_unknown_mouse_event(b):
    with pytest.raises(ValueError, match=r"kind 'hover' is not one of 'move', 'click'"):
        b.mouse("hover", 10, 10)


def test_the_figures_import_without_fcntl_and_the_browser_says_why_it_cannot_start():
    """On a system without fcntl (Windows) the gallery still imports; only starting a Browser fails."""
    code = ("import sys; sys.modules['fcntl'] = None; import tinyattn.figures, tinyattn.gallery\n"
            "from tinyattn import browser\n"
            "try:\n    browser.Browser(executable=sys.executable)\n"
            "except browser.BrowserError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "the DevTools pipe needs a POSIX system (fcntl); this one has none", out.stderr


def test_figures_cli_without_chromium_skips_the_screenshot_and_keeps_the_png(tmp_path, monkeypatch, capsys):
    committed = b"\x89PNG\r\n\x1a\n committed screenshot"
    (tmp_path / "pretrained_model_view_screenshot.png").write_bytes(committed)
    monkeypatch.setattr(browser, "find_chromium", lambda: None)
    assert figures.main(["--only", "pretrained_model_view_screenshot", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\[1/1\] pretrained_model_view_screenshot: skipped: no Chromium", out, re.M), out
    assert "0 figure(s) written" in out
    assert (tmp_path / "pretrained_model_view_screenshot.png").read_bytes() == committed
    assert [p.name for p in tmp_path.iterdir()] == ["pretrained_model_view_screenshot.png"]


# -- in the browser ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_page_loads_without_errors_or_requests(b, cases, name):
    case = cases(name)
    load(b, case)
    assert b.errors == [], b.errors
    assert b.requests == [case["path"].resolve().as_uri()], "the page fetched nothing but itself"


@pytest.mark.parametrize("name", HEAD_VIEWS)
def test_head_view_draws_the_tokens_and_every_heads_lines(b, cases, name):
    case = cases(name)
    P = case["weights"]
    load(b, case)
    for side, tokens in (("queries", case["tokens"]), ("keys", case["keys"])):
        texts = js(b, f'return [...document.querySelectorAll(\'.ta-token[data-side="{side}"]\')]'
                      f'.map(t => t.textContent);')
        assert texts == tokens, f"{side}: {texts}"
    assert js(b, 'return [...document.querySelectorAll(".ta-head-toggle")].length;') == P.shape[1]
    check_rest(b, P, 0, range(P.shape[1]))
    assert b.errors == []


@pytest.mark.parametrize("name", HEAD_VIEWS)
def test_hovering_a_query_draws_its_row_of_weights(b, cases, name):
    case = cases(name)
    P = case["weights"]
    heads = range(P.shape[1])
    load(b, case)
    for i in (0, P.shape[2] // 2, P.shape[2] - 1):
        hover(b, "queries", i)
        check_focus(b, P, 0, heads, "queries", i)
        check_shading(b, P, 0, heads, i)
        assert js(b, 'return [...document.querySelectorAll(".ta-head-lines")]'
                     '.every(c => getComputedStyle(c).display === "none");'), "the rest lines are hidden"
    unhover(b)
    check_rest(b, P, 0, heads)
    assert b.errors == []


def test_cross_attention_hovering_a_source_character_draws_its_column(b, cases):
    case = cases("translation_head_view")
    P = case["weights"]
    L, S = P.shape[-2:]
    assert L == len(case["tokens"]) == 11 and S == len(case["keys"]) > L, "separate target and source tokens"
    load(b, case)
    j = case["keys"].index(case["tokens"][0])  # the source character the first output copies
    hover(b, "keys", j)
    check_focus(b, P, 0, range(P.shape[1]), "keys", j)
    assert len(drawn_lines(b)) == P.shape[1] * L
    assert b.errors == []


def test_switching_layer_draws_that_layers_weights(b, cases):
    case = cases("translation_head_view")
    P = case["weights"]
    heads = range(P.shape[1])
    assert not np.allclose(P[0], P[1], atol=0.05), "the two layers must differ for this test to mean anything"
    load(b, case)
    set_layer(b, 1)
    check_rest(b, P, 1, heads)
    hover(b, "queries", 3)
    check_focus(b, P, 1, heads, "queries", 3)
    unhover(b)
    set_layer(b, 0)
    hover(b, "queries", 3)
    check_focus(b, P, 0, heads, "queries", 3)
    assert b.errors == []


def test_head_toggles_hide_and_show_a_heads_lines(b, cases):
    case = cases("sentence_head_view")
    P = case["weights"]
    load(b, case)
    toggle = '.ta-head-toggle[data-head="1"]'
    b.mouse("click", *b.center(toggle))
    settle(b)
    assert js(b, f'return document.querySelector(\'{toggle}\').classList.contains("ta-off");')
    check_rest(b, P, 0, [0, 2, 3])
    hover(b, "queries", 7)  # "it"
    check_focus(b, P, 0, [0, 2, 3], "queries", 7)
    check_shading(b, P, 0, [0, 2, 3], 7)
    unhover(b)
    b.mouse("click", *b.center(toggle))
    settle(b)
    check_rest(b, P, 0, [0, 1, 2, 3])
    assert b.errors == []


def test_model_view_thumbnails_and_a_click_opens_that_head(b, cases):
    case = cases("pretrained_model_view")
    P = case["weights"]
    layers, H, L, _ = P.shape
    load(b, case)
    thumbs = js(b, 'return [...document.querySelectorAll(".ta-thumb")].map(c => '
                   '[+c.dataset.layer, +c.dataset.head, +c.dataset.lines, c.width > 0 && c.height > 0]);')
    assert sorted((k, h) for k, h, *_ in thumbs) == [(k, h) for k in range(layers) for h in range(H)]
    threshold = 0.5 / LEVELS
    for k, h, count, sized in thumbs:
        lo, hi = (P[k, h] >= threshold + TOL).sum(), (P[k, h] >= threshold - TOL).sum()
        assert sized and lo <= count <= hi, f"thumbnail ({k}, {h}) drew {count} lines, expected {lo} to {hi}"
    assert js(b, 'return document.querySelector(".ta-detail").hidden;'), "no head is open before a click"

    for layer, head in ((4, 9), (1, 2)):  # a second click re-uses the open head view
        b.mouse("click", *b.center(f'.ta-thumb[data-layer="{layer}"][data-head="{head}"]'))
        settle(b)
        state = js(b, """const d = document.querySelector(".ta-detail");
            return [d.hidden, document.getElementById("tinyattn-view").dataset.open,
                    document.querySelector(".ta-layer").value,
                    [...document.querySelectorAll(".ta-head-toggle:not(.ta-off)")].map(t => +t.dataset.head),
                    [...document.querySelectorAll(".ta-thumb.ta-selected")]
                      .map(c => c.dataset.layer + "," + c.dataset.head)];""")
        assert state == [False, f"{layer},{head}", str(layer), [head], [f"{layer},{head}"]], state
        selector = '.ta-detail .ta-token[data-side="queries"]'
        assert js(b, f"return document.querySelectorAll('{selector}').length;") == L
        check_rest(b, P, layer, [head])
        i = case["tokens"].index("it")
        hover(b, "queries", i)
        check_focus(b, P, layer, [head], "queries", i)
        unhover(b)
    assert b.errors == []


@pytest.mark.parametrize("name", list(CASES))
def test_the_view_fits_the_height_of_its_jupyter_iframe(b, cases, name):
    """``AttentionView.height`` (the iframe's) holds the whole view as drawn — for the model view with
    a head opened under the grid — and the thumbnails have the height the page was told."""
    case = cases(name)
    load(b, case)
    if name == "pretrained_model_view":
        b.mouse("click", *b.center('.ta-thumb[data-layer="0"][data-head="0"]'))
        settle(b)
        L, S = case["weights"].shape[-2:]
        heights = js(b, 'return [...document.querySelectorAll(".ta-thumb")].map(c => '
                        'c.getBoundingClientRect().height);')
        assert set(heights) == {thumb_height_px(L, S) + 2}, "thumbnail + its 1 px border"
    bottom = js(b, 'const r = document.getElementById("tinyattn-view").getBoundingClientRect(); '
                   'return r.bottom + scrollY + parseFloat(getComputedStyle(document.body).marginBottom);')
    assert bottom <= case["height"], f"the view is {bottom:.0f} px tall, its iframe {case['height']} px"
    assert b.errors == []


def png_pixels(png: bytes) -> np.ndarray:
    from matplotlib import image

    return image.imread(io.BytesIO(png), format="png")[..., :3]  # (height, width, RGB) in [0, 1]


def head_colours_drawn(pixels, heads: int) -> list:
    """The head colours of which some pixel is within 0.02 of the exact colour (a toggle at least)."""
    found = []
    for colour in HEAD_COLORS[:heads]:
        rgb = np.array([int(colour[k:k + 2], 16) for k in (1, 3, 5)]) / 255
        if (np.abs(pixels - rgb).max(axis=-1) < 0.02).any():
            found.append(colour)
    return found


@pytest.mark.parametrize("name", ["sentence_head_view", "pretrained_model_view"])
def test_screenshot_is_not_blank(b, cases, name):
    case = cases(name)
    load(b, case)
    pixels = png_pixels(b.screenshot("#tinyattn-view"))
    colours = np.unique((pixels * 255).round().astype(np.uint8).reshape(-1, 3), axis=0)
    inked = (pixels < 0.9).any(axis=-1).mean()
    assert pixels.shape[0] > 100 and pixels.shape[1] > 300, pixels.shape
    assert pixels.std() > 0.05 and len(colours) > 200 and inked > 0.02, \
        f"std {pixels.std():.3f}, {len(colours)} colours, {inked:.1%} inked"
    if name in HEAD_VIEWS:  # every head's colour is on the picture (its toggle at least), not only text
        H = case["weights"].shape[1]
        assert head_colours_drawn(pixels, H) == list(HEAD_COLORS[:H])
    assert b.errors == []


def test_two_views_inline_in_one_page_as_in_jupyter(b, cases, folder):
    """``_repr_html_`` (what Jupyter shows): each view in its own sandboxed iframe, both drawn."""
    views = [make(name) for name in HEAD_VIEWS]
    page = folder / "notebook.html"
    inline = "".join(v._repr_html_() for v in views)
    page.write_text(f"<!DOCTYPE html><html><body>{inline}</body></html>", encoding="utf-8")
    b.open(page)
    b.wait_for('document.querySelectorAll("iframe").length === 2')
    boxes = js(b, 'return [...document.querySelectorAll("iframe")].map(f => { '
                  'const r = f.getBoundingClientRect(); '
                  'return [r.x + scrollX, r.y + scrollY, r.width, r.height].map(Math.round); });')
    want = [list(HEAD_COLORS[:view.shape[1]]) for view in views]
    deadline = time.monotonic() + 10.0  # the sandboxed iframes draw on their own frames: poll, not sleep
    while True:
        settle(b)
        pixels = png_pixels(b.screenshot())
        drawn = [head_colours_drawn(pixels[y:y + h, x:x + w], len(colours))
                 for (x, y, w, h), colours in zip(boxes, want)]
        if drawn == want or time.monotonic() > deadline:
            break
    assert drawn == want, f"a view was not drawn within 10 s: head colours found {drawn}"
    assert b.errors == [] and b.requests == [page.resolve().as_uri()]
