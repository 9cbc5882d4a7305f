"""Headless Chromium for the page tests (Serve's upload page, the judge's rating page), driven over the
DevTools protocol with the websockets sync client (websockets ships with ray[serve])."""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the Debian chromium package (/usr/bin/chromium)")


class Chromium:
    """Headless Chromium driven over the DevTools protocol (websockets sync client), one page."""

    def __init__(self, profile: Path):
        self.profile = profile
        self.process = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-quic", "--window-size=800,600", f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.ids = itertools.count(1)
        self.socket = None  # the page's DevTools websocket, once connected

    def page_socket_url(self) -> str:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            return next(target for target in json.load(response) if target["type"] == "page")["webSocketDebuggerUrl"]

    def call(self, method: str, **params):
        call_id = next(self.ids)
        self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == call_id:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.02)
        return value

    def click(self, selector: str) -> None:
        x, y = self.evaluate(f"""(() => {{
            const box = document.querySelector({json.dumps(selector)});
            box.scrollIntoView({{block: "center"}});
            const r = box.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2];
        }})()""")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def press(self, key: str) -> None:
        if len(key) == 1:
            code = f"Digit{key}" if key.isdigit() else f"Key{key.upper()}"
            typed = {"text": key, "windowsVirtualKeyCode": ord(key.upper())}
        else:
            code, typed = key, {"windowsVirtualKeyCode": {"ArrowLeft": 37, "ArrowRight": 39}[key]}
        self.call("Input.dispatchKeyEvent", type="keyDown", key=key, code=code, **typed)
        self.call("Input.dispatchKeyEvent", type="keyUp", key=key, code=code,
                  windowsVirtualKeyCode=typed["windowsVirtualKeyCode"])

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@contextlib.contextmanager
def open_chromium(profile: Path) -> Iterator[Chromium]:
    """A headless Chromium with its page connected; closed on the way out."""
    from websockets.sync.client import connect

    chromium = Chromium(profile)
    try:
        with connect(chromium.page_socket_url(), max_size=None) as socket:
            chromium.socket = socket
            yield chromium
    finally:
        chromium.close()
