"""Headless Chromium driven over the DevTools protocol on a pipe: no websocket, no extra package.

`--remote-debugging-pipe` makes Chromium read commands from fd 3 and write replies and events to
fd 4, each a JSON object ended by a NUL byte. That is all a test needs to load a page, record
every request the page makes, read the DOM's geometry, and take a screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import selectors
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

CHROMIUM: Final = Path("/usr/bin/chromium")
INSTALL_HINT: Final = f"{CHROMIUM} is missing: run .ci/test-deps (installs Debian's chromium) first"
# Chromium starts in 1-2 s here; a busy 2-core machine can take several times that.
TIMEOUT_S: Final = 60.0
_FIRST_FREE_FD: Final = 10  # above 3 and 4, so the shell's redirections cannot clobber them
FLAGS: Final = (
    "--headless",
    "--no-sandbox",  # root, no user namespaces in the sandbox this runs in
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
)


class BrowserError(RuntimeError):
    """Chromium answered a command with an error, or not in time."""


@dataclass
class Browser:
    """One Chromium process; `send` a command, read `events` as they arrive."""

    proc: subprocess.Popen[bytes]
    to_fd: int
    from_fd: int
    events: list[dict[str, Any]] = field(default_factory=list)
    _buffer: bytes = b""
    _next_id: int = 0

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("chromium did not answer in time")
            with selectors.DefaultSelector() as sel:
                sel.register(self.from_fd, selectors.EVENT_READ)
                if not sel.select(left):
                    continue
            chunk = os.read(self.from_fd, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium closed the pipe (exit {self.proc.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        """Send one command and return its result; events that arrive meanwhile go to `events`."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self.to_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") != self._next_id:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise BrowserError(f"{method}: {reply['error']}")
            return reply.get("result", {})

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        """The first event `method` of `session`, already received or still to come."""
        deadline = time.monotonic() + TIMEOUT_S
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            seen = len(self.events)
            self.events.append(self._read_message(deadline))

    def events_of(self, method: str, session: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("method") == method and e.get("sessionId") == session]


@dataclass(frozen=True)
class Page:
    """A tab attached with its own session, recording network and console events."""

    browser: Browser
    session: str

    def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.browser.send(method, params, self.session)

    def load(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        self.browser.wait_event("Page.loadEventFired", self.session)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def requested_urls(self) -> list[str]:
        """Every request the page started (document, images, fonts, styles...), in order."""
        return [
            e["params"]["request"]["url"]
            for e in self.browser.events_of("Network.requestWillBeSent", self.session)
        ]

    def console_texts(self) -> list[str]:
        """Browser log entries, where Chromium reports every load a CSP refused."""
        return [e["params"]["entry"]["text"] for e in self.browser.events_of("Log.entryAdded", self.session)]

    def screenshot(self, path: Path) -> None:
        """The whole page, not just the viewport, as a PNG."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path.write_bytes(base64.b64decode(shot["data"]))


def _high_fd(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, _FIRST_FREE_FD)
    os.close(fd)
    return high


@contextlib.contextmanager
def chromium(profile_dir: Path) -> Iterator[Browser]:
    """A headless Chromium with a throw-away profile, closed (or killed) on the way out."""
    to_r, to_w = (_high_fd(fd) for fd in os.pipe())
    from_r, from_w = (_high_fd(fd) for fd in os.pipe())
    # bash (dash takes one-digit fds only) moves our pipe ends to fds 3 and 4, where
    # --remote-debugging-pipe expects them.
    script = f'exec "$@" 3<&{to_r} 4>&{from_w} {to_r}<&- {from_w}>&-'
    log = (profile_dir / "chromium.log").open("wb")
    proc = subprocess.Popen(
        ["/bin/bash", "-c", script, "bash", str(CHROMIUM), *FLAGS, f"--user-data-dir={profile_dir}",
         "--remote-debugging-pipe", "about:blank"],
        pass_fds=(to_r, from_w), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )  # fmt: skip
    os.close(to_r)
    os.close(from_w)
    browser = Browser(proc, to_w, from_r)
    try:
        yield browser
    finally:
        with contextlib.suppress(BrowserError, OSError):
            browser.send("Browser.close")
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(to_w)
        os.close(from_r)
        log.close()


def open_page(browser: Browser, width: int = 1100, height: int = 900) -> Page:
    """A new tab with network, page and log events on, at a fixed viewport size."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    page = Page(browser, session)
    for domain in ("Network", "Page", "Log"):
        page.send(f"{domain}.enable")
    page.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    return page
