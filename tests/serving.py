"""Serving an ASGI app with uvicorn on loopback for a test, and driving it in a real browser.

One helper for every test file: :func:`serve` runs an app on ``127.0.0.1`` (an ephemeral port)
in a thread. The browser tests (``tests/test_browser_*.py``) add :func:`launch_chromium`, which
drives Debian's Chromium (``/usr/bin/chromium``, or ``$SYNCRECON_CHROMIUM``) through Playwright
without downloading a browser of its own, :class:`Watch`, which collects what the browser
complains about (console errors, page errors, Content-Security-Policy violations), and
:func:`screenshot`, which saves a PNG under ``.artifacts/screenshots/`` (or
``$SYNCRECON_SCREENSHOTS``).

Without Chromium or Playwright the browser tests skip, each saying why; under CI (``CI`` set)
they fail instead, since ``.ci/run`` installs Chromium and a skip there would hide a gap.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

TIMEOUT = 10.0

ROOT = Path(__file__).resolve().parent.parent

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium calls home (updates, safe browsing, sync) on a closed network.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""What Chromium is started with. Playwright adds a new, empty ``--user-data-dir`` itself."""


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (an ephemeral port); yield its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_config=None, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "uvicorn to start")
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
        assert not thread.is_alive()


# -- a real browser ------------------------------------------------------------------------------


def _no_browser(reason: str) -> None:
    """Skip the test, loudly; under CI, fail it: CI installs Chromium (see ``.ci/run``)."""
    message = f"browser tests need {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI must run them", pytrace=False)
    pytest.skip(f"{message}; these tests did NOT run")


def chromium_path() -> str | None:
    """The Chromium to drive: ``$SYNCRECON_CHROMIUM``, or ``chromium`` on the ``PATH``."""
    named = os.environ.get("SYNCRECON_CHROMIUM")
    if named:
        return named if Path(named).exists() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@contextlib.contextmanager
def launch_chromium() -> Iterator[Any]:
    """A headless Chromium driven by Playwright (a ``Browser``); skips when there is none."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _no_browser("Playwright (pip install -e '.[dev]')")
        raise AssertionError("unreachable") from None
    executable = chromium_path()
    if executable is None:
        _no_browser("Chromium (apt-get install chromium, or set SYNCRECON_CHROMIUM)")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=executable, headless=True, args=list(CHROMIUM_FLAGS)
            )
        except Error as exc:
            _no_browser(f"a Chromium that starts ({executable}: {exc.message.splitlines()[0]})")
            raise AssertionError("unreachable") from None
        try:
            yield browser
        finally:
            browser.close()


_CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline"));
});
"""
_HTTP_STATUS = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")


class Watch:
    """What a page's browser complained about: console errors, page errors, CSP violations.

    ``http_errors`` keeps the statuses of the answers Chromium reported as failed loads (a
    form sent back with an error is answered 400 on purpose); ``problems`` everything else.
    """

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        self.http_errors: list[int] = []
        page.add_init_script(_CSP_LISTENER)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

    def _console(self, message: Any) -> None:
        if message.type not in ("error", "warning"):
            return
        text = str(message.text)
        status = _HTTP_STATUS.search(text)
        if status is not None:
            self.http_errors.append(int(status[1]))
            return
        self.problems.append(f"console {message.type}: {text}")

    def assert_clean(self, *, http_errors: tuple[int, ...] = ()) -> None:
        """No console error or warning, no page error, no CSP violation; only these statuses."""
        assert self.problems == []
        assert sorted(self.http_errors) == sorted(http_errors)
        self.http_errors.clear()


def screenshots_dir() -> Path:
    """Where screenshots go: ``$SYNCRECON_SCREENSHOTS``, or ``.artifacts/screenshots``."""
    named = os.environ.get("SYNCRECON_SCREENSHOTS")
    folder = Path(named) if named else ROOT / ".artifacts" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(page: Any, name: str) -> Path:
    """A full-page PNG of ``page`` named ``name`` plus its viewport width (``list-400.png``)."""
    width = page.viewport_size["width"]
    path = screenshots_dir() / f"{name}-{width}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


LAYOUT_PROBLEMS = """
(minimum) => {
  const width = document.documentElement.clientWidth;
  const out = [];
  if (document.documentElement.scrollWidth > width + 1) {
    out.push(`the page scrolls sideways: ${document.documentElement.scrollWidth} > ${width}`);
  }
  for (const table of document.querySelectorAll("table")) {
    const box = table.getBoundingClientRect();
    if (box.right > width + 1 || box.left < -1) {
      out.push(`a table (${table.className || "no class"}) overflows: ${box.left}..${box.right}`);
    }
  }
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const element = node.parentElement;
    if (!node.textContent.trim() || !element || element.closest("svg")) continue;
    const style = getComputedStyle(element);
    if (style.display === "none" || style.visibility === "hidden") continue;
    if (!element.getClientRects().length) continue;
    const size = parseFloat(style.fontSize);
    if (size < minimum) out.push(`text at ${size}px: ${node.textContent.trim().slice(0, 40)}`);
  }
  return out;
}
"""
"""A script for ``page.evaluate(LAYOUT_PROBLEMS, 12)``: sideways scrolling, tables wider than
the viewport, and visible text smaller than the given size (SVG text aside)."""

CHART_TEXT_SIZES = """
() => [...document.querySelectorAll("svg text")].map((t) => {
  const scale = t.ownerSVGElement.getScreenCTM().a;
  return parseFloat(getComputedStyle(t).fontSize) * scale;
})
"""
"""A script for ``page.evaluate``: each SVG text's rendered size in CSS pixels."""
