"""Headless Chromium driven over the DevTools protocol: open a page, wait, read it, screenshot it.

Only the Debian ``chromium`` binary is used (never a downloaded browser); the protocol goes over a
loopback WebSocket (``websocket-client``). WebGL, which OHIF's viewports need, runs on SwiftShader.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import websocket

__all__ = ["Chromium", "ChromiumError"]


class ChromiumError(RuntimeError):
    """Chromium did not start, or a page did not do what was waited for."""


class Chromium:
    """One headless Chromium with one page.

    Parameters
    ----------
    profile : pathlib.Path
        An empty folder for the browser profile (it also tells the DevTools port).
    size : tuple of int
        Window width and height in CSS pixels.
    """

    def __init__(self, profile: Path, size: tuple[int, int] = (1400, 900)) -> None:
        binary = shutil.which("chromium")
        if binary is None:
            raise ChromiumError("chromium is not installed (Debian package 'chromium')")
        self.profile = Path(profile)
        self.profile.mkdir(parents=True, exist_ok=True)
        self.console: list[str] = []
        self._ids = itertools.count(1)
        self._process = subprocess.Popen(
            [
                binary, "--headless=new", "--no-sandbox", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                f"--window-size={size[0]},{size[1]}", f"--user-data-dir={self.profile}",
                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._socket = websocket.create_connection(self._page_socket_url(), timeout=120)
            self.send("Runtime.enable")
            self.send("Page.enable")
        except BaseException:
            self.close()
            raise

    def _page_socket_url(self) -> str:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ChromiumError(f"chromium exited at start (code {self._process.returncode})")
            if port_file.is_file() and port_file.read_text().strip():
                port = int(port_file.read_text().split()[0])
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
                    pages = [t for t in json.load(answer) if t["type"] == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.2)
        raise ChromiumError("chromium did not open its DevTools port within 60 s")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call a DevTools method and return its result (events met on the way are kept)."""
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise ChromiumError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if message.get("method") == "Runtime.consoleAPICalled":
                args = message["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif message.get("method") == "Runtime.exceptionThrown":
                self.console.append(str(message["params"]["exceptionDetails"].get("text")))

    def open(self, url: str) -> None:
        """Navigate the page to `url`."""
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise ChromiumError(f"{expression!r} threw {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float, what: str) -> Any:
        """Poll `expression` until it is truthy; its value, or ChromiumError naming `what`."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise ChromiumError(f"{what} did not happen within {timeout_s:.0f} s")
            time.sleep(0.5)

    def screenshot(self, path: Path) -> Path:
        """Save the page as PNG."""
        data = self.send("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        """Close the connection and end the browser."""
        socket = getattr(self, "_socket", None)
        if socket is not None:
            socket.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
