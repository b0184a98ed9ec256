"""The interactive attention views at real size, in headless Chromium: how long until the page is
drawn, how long a hover and a layer switch take, and how large the HTML is.

all-MiniLM-L6-v2 (6 layers x 12 heads) on a 40-token sentence: its model view (72 thumbnails, then
a click opens one head) and its head view with all 12 heads shown. "Open" is the page's own clock:
``performance.now()`` (milliseconds since the navigation started) at the second animation frame
after the script ran, which the page stores in ``data-ready-ms`` — parsing, script, layout and the
first paint included. Hover and layer switch are timed in the page from the event to the second
animation frame after it. Medians over fresh loads of the saved file.

    python benchmarks/interactive.py              # prints the table, rewrites benchmarks/README.md
    python benchmarks/interactive.py --loads 15   # more loads per view (default 9)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

from _common import machine_line, progress, write_section
from tinyattn import browser, viz
from tinyattn.gallery.pretrained import attention_of

SENTENCE = ("The old lighthouse keeper climbed the narrow stairs every single evening, because the fishing "
            "ships that passed the steep rocky coast at night depended on the light that he kept burning "
            "until the cold grey dawn.")

TWO_FRAMES = "new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"

# milliseconds from an event (dispatched in the page) to the second frame after it
TIMED = """(async () => {
  const t0 = performance.now();
  %s;
  await new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
  return performance.now() - t0;
})()"""


def hover_ms(b, side: str, index: int) -> float:
    token = f'document.querySelector(\'.ta-token[data-side="{side}"][data-index="{index}"]\')'
    ms = b.evaluate(TIMED % f'{token}.dispatchEvent(new MouseEvent("mouseenter"))')
    b.evaluate(f'{token}.dispatchEvent(new MouseEvent("mouseleave"))')
    b.evaluate(TWO_FRAMES)
    return ms


def layer_ms(b, layer: int) -> float:
    select = "document.querySelector('.ta-layer')"
    return b.evaluate(TIMED % f'{select}.value = "{layer}"; {select}.dispatchEvent(new Event("change"))')


def measure(b, path: str, loads: int, model: bool) -> dict:
    """Medians (ms) of open, hover and layer switch over ``loads`` fresh loads of ``path``."""
    times = {"open": [], "open head": [], "hover": [], "layer": []}
    for k in range(loads):
        b.open(path)
        times["open"].append(float(b.wait_for("document.getElementById('tinyattn-view').dataset.readyMs")))
        if model:
            times["open head"].append(b.evaluate(TIMED % "document.querySelector("
                                                 "'.ta-thumb[data-layer=\"3\"][data-head=\"5\"]').click()"))
        times["hover"].append(hover_ms(b, "queries", 7 + k % 20))
        times["layer"].append(layer_ms(b, 1 + k % 5))
        if b.errors:
            raise RuntimeError(f"the view logged errors: {b.errors}")
    return {name: statistics.median(ts) for name, ts in times.items() if ts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=int, default=9)
    args = parser.parse_args()
    tokens, attn = attention_of(SENTENCE)  # L tokens, (6, 12, L, L)
    if len(tokens) != 40:
        raise RuntimeError(f"the sentence has {len(tokens)} tokens, expected 40")
    views = {"model view": viz.model_view(tokens, attn), "head view, 12 heads": viz.head_view(tokens, attn)}
    rows = []
    with tempfile.TemporaryDirectory() as folder, browser.Browser(width=1600, height=1000) as b:
        version = b.send("Browser.getVersion", session=False)["product"]
        for name, view in views.items():
            path = os.path.join(folder, "view.html")
            view.save(path)
            progress(f"{name}: {args.loads} loads")
            m = measure(b, path, args.loads, name == "model view")
            rows.append((name, len(view.html.encode("utf-8")), m))
    shape = " × ".join(map(str, attn.shape))
    lines = [f"all-MiniLM-L6-v2 on a 40-token sentence, attention ({shape}) = (layers, H, L, S); the saved "
             f"page opened {args.loads} times in headless {version} (one browser, fresh navigation each "
             f"time); medians in ms. *open*: navigation start to the second animation frame after the "
             f"script ran (the page's `data-ready-ms`); *open a head*: clicking a model-view thumbnail "
             f"(layer 3, head 5) until drawn; *hover*: a query token's mouseenter until drawn; *layer*: "
             f"switching the layer selector until drawn.", "",
             f"Machine: {machine_line()}.", "",
             "| view | HTML size | open ms | open a head ms | hover ms | layer ms |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, size, m in rows:
        head = f"{m['open head']:.1f}" if "open head" in m else "–"
        lines.append(f"| {name} | {size / 1024:,.0f} KiB | {m['open']:.1f} | {head} | {m['hover']:.1f} | "
                     f"{m['layer']:.1f} |")
    lines += ["", f"Target: the 6 × 12 × 40 model view opens in under 1000 ms: "
                  f"**{rows[0][2]['open']:.0f} ms**.", "",
              f"Command: `python benchmarks/interactive.py --loads {args.loads}`"]
    markdown = "\n".join(lines)
    print(markdown)
    write_section("interactive", markdown)


if __name__ == "__main__":
    main()
