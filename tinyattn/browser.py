"""A small headless-Chromium driver over the Chrome DevTools Protocol, with no dependency.

Chromium started with ``--remote-debugging-pipe`` reads protocol commands from its file
descriptor 3 and writes replies and events to descriptor 4: JSON messages, each ended by a NUL
byte. That is all this module speaks; no websocket, no browser download. It drives the Debian
``chromium`` package (``find_chromium``), for the tests of the interactive views and the figures'
screenshot; nothing else in tinyattn needs it, and when no Chromium is installed the callers
skip.

    with Browser() as b:
        b.open("view.html")               # waits for the load event
        b.wait_for("document.getElementById('tinyattn-view').dataset.ready === '1'")
        b.evaluate("document.title")      # -> the value, as JSON
        png = b.screenshot()              # PNG bytes

The browser runs with a fresh profile, no network services (no sync, updates or QUIC) and every
host name resolving to nothing, so a page can only load what is on disk.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import select
import shutil
import subprocess
import sys
import tempfile
import time

from .serialization import atomic_write

__all__ = ["Browser", "BrowserError", "Screenshot", "find_chromium", "CHROMIUM_NAMES"]

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--remote-debugging-pipe")


# run in the child: put the pipe ends on the descriptors 3 (commands in) and 4 (replies out) that
# --remote-debugging-pipe reads and writes, then become Chromium
_TRAMPOLINE = ("import os, sys; r, w = map(int, sys.argv[1:3]); os.dup2(r, 3); os.dup2(w, 4); "
               "os.close(r); os.close(w); os.execv(sys.argv[3], sys.argv[3:])")


class BrowserError(RuntimeError):
    """The browser could not be started, did not answer in time, or a command failed."""


def find_chromium() -> str | None:
    """The path of a Chromium to drive: $TINYATTN_CHROMIUM, else the first of CHROMIUM_NAMES on
    PATH; None when there is none."""
    chosen = os.environ.get("TINYATTN_CHROMIUM")
    if chosen:
        return shutil.which(chosen)
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Screenshot:
    """PNG bytes of a page: ``save(path)`` writes them; Jupyter shows them (``_repr_png_``)."""

    suffix = ".png"

    def __init__(self, png: bytes):
        self.png = png

    def save(self, path) -> None:
        """Write the PNG to ``path`` (through a temporary file and a rename)."""
        atomic_write(path, lambda f: f.write(self.png))

    def _repr_png_(self) -> bytes:
        return self.png


class Browser:
    """One headless Chromium with one page, driven over the DevTools pipe; a context manager.

    ``events``: every protocol event received so far (dicts with "method" and "params");
    ``errors``: the console errors and uncaught exceptions of the page, as strings.
    """

    def __init__(self, executable: str | None = None, width: int = 1200, height: int = 900,
                 timeout: float = 30.0):
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError(f"no Chromium found (looked for {', '.join(CHROMIUM_NAMES)} on PATH and "
                               f"$TINYATTN_CHROMIUM); on Debian: apt-get install chromium")
        try:
            import fcntl  # POSIX only: imported here so that the module (and the figures) import anywhere
        except ImportError:
            raise BrowserError("the DevTools pipe needs a POSIX system (fcntl); this one has none") from None
        self.timeout = timeout
        self.events: list = []
        self._next_id = 0
        self._buffer = b""
        self._profile = tempfile.mkdtemp(prefix="tinyattn-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # the child's ends, above 9 so that putting them on 3 and 4 clobbers neither
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser_r, from_browser_w)]
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)
        self._process = subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE, *map(str, ends), self.executable, *FLAGS,
             f"--user-data-dir={self._profile}", f"--window-size={width},{height}", "about:blank"],
            pass_fds=ends, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in ends:
            os.close(fd)
        try:
            target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
            self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                      session=False)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.send(f"{domain}.enable")
            self.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.close()
            raise

    # -- the protocol ---------------------------------------------------------------------------

    def _write(self, message: dict) -> None:
        data = json.dumps(message).encode("utf-8") + b"\0"
        while data:
            data = data[os.write(self._to_browser, data):]

    def _read(self, deadline: float) -> dict:
        """The next message from the browser, waiting until ``deadline`` (time.monotonic())."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise BrowserError(f"Chromium did not answer within {self.timeout:g} s")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise BrowserError(f"Chromium closed the pipe (exit code {self._process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        """Send one command (to the page's session, or with ``session=False`` to the browser) and
        return its result; events that arrive meanwhile go to ``events``."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        self._write(message)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, since: int = 0, timeout: float | None = None) -> dict:
        """The params of the first event ``method`` in ``events[since:]``, waiting for it to come."""
        for event in self.events[since:]:
            if event["method"] == method:
                return event["params"]
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            message = self._read(deadline)
            if "method" in message:
                self.events.append(message)
                if message["method"] == method:
                    return message["params"]

    # -- pages ----------------------------------------------------------------------------------

    def open(self, path) -> None:
        """Navigate to a local file (or a URL) and wait for its load event."""
        url = str(path) if "://" in str(path) else pathlib.Path(path).resolve().as_uri()
        self.events.clear()
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"could not open {url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired", since=0)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited), as JSON."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"{expression[:80]!r} threw: "
                               f"{details.get('exception', {}).get('description', details.get('text'))}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None):
        """Evaluate ``expression`` every 10 ms until it is truthy; return its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"{expression!r} still false after {timeout or self.timeout:g} s")
            time.sleep(0.01)

    def mouse(self, kind: str, x: float, y: float) -> None:
        """A real mouse event at page coordinates: kind "move" or "click" (press and release)."""
        if kind not in ("move", "click"):
            raise ValueError(f"Browser.mouse: kind {kind!r} is not one of 'move', 'click'")
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        if kind == "click":
            for phase in ("mousePressed", "mouseReleased"):
                self.send("Input.dispatchMouseEvent",
                          {"type": phase, "x": x, "y": y, "button": "left", "clickCount": 1})

    def center(self, selector: str) -> tuple:
        """(x, y) of the centre of the first element matching a CSS selector, in the viewport (the
        page is scrolled to bring the element into view first)."""
        box = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                            f"e.scrollIntoView({{block: 'nearest', inline: 'nearest'}}); "
                            f"const r = e.getBoundingClientRect(); "
                            f"return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        return tuple(box)

    def screenshot(self, selector: str | None = None) -> bytes:
        """A PNG of the whole page, or of the box of the element matching ``selector``."""
        params = {"format": "png", "captureBeyondViewport": True}
        box = self.evaluate(
            "(() => { const e = %s; const r = e.getBoundingClientRect();"
            " return [r.x + scrollX, r.y + scrollY, r.width, r.height]; })()"
            % (f"document.querySelector({json.dumps(selector)})" if selector else "document.documentElement"))
        x, y, w, h = box
        if not selector:
            w = max(w, self.evaluate("document.documentElement.scrollWidth"))
            h = max(h, self.evaluate("document.documentElement.scrollHeight"))
        params["clip"] = {"x": x, "y": y, "width": w, "height": h, "scale": 1}
        return base64.b64decode(self.send("Page.captureScreenshot", params)["data"])

    @property
    def errors(self) -> list:
        """The page's console errors, uncaught exceptions and error log entries so far, as strings."""
        out = []
        for e in self.events:
            p = e["params"]
            if e["method"] == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"exception: {d.get('exception', {}).get('description', d.get('text'))}")
            elif e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                out.append("console.error: " + " ".join(str(a.get("value", a.get("description")))
                                                        for a in p["args"]))
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry']['text']}")
        return out

    @property
    def requests(self) -> list:
        """The URLs the page asked the network layer for since it was opened."""
        return [e["params"]["request"]["url"] for e in self.events
                if e["method"] == "Network.requestWillBeSent"]

    # -- the end ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Ask the browser to quit, kill it if it does not, and remove its profile."""
        if self._process.poll() is None:
            try:
                self._write({"id": self._next_id + 1, "method": "Browser.close", "params": {}})
                self._process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
