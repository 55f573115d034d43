"""A real headless Chromium (Debian's `chromium`) driven over the DevTools protocol, with
every non-loopback destination cut off: a page that needs the internet fails here.

Network: all traffic goes to a proxy at 127.0.0.1:9, where nothing listens; Chromium never
proxies loopback addresses, so only pages on 127.0.0.1 load. Every request the page makes is
recorded (`Page.requests`), and console messages and uncaught exceptions too (`Page.errors`).
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket

from realparts.process import ManagedProcess

DEAD_PROXY = "127.0.0.1:9"


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("chromium is not installed: apt-get install -y chromium "
                           "(scripts/test installs it)")  # fmt: skip
    return found


class HeadlessChromium:
    def __init__(self, workdir: Path, window: tuple[int, int] = (1100, 1900)) -> None:
        self.profile = workdir / "chromium-profile"
        self.profile.mkdir(parents=True, exist_ok=True)
        argv = [
            chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--mute-audio", "--hide-scrollbars",
            f"--proxy-server={DEAD_PROXY}", f"--user-data-dir={self.profile}",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
            f"--window-size={window[0]},{window[1]}", "about:blank",
        ]  # fmt: skip
        self.process = ManagedProcess(argv, workdir / "chromium.log")
        self.port = 0

    def start(self, timeout: float = 60) -> HeadlessChromium:
        port_file = self.profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)

        def ready() -> bool:
            if not port_file.exists():
                return False
            first = port_file.read_text().split("\n", 1)[0]
            if not first.isdigit():
                return False
            self.port = int(first)
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/version",
                                        timeout=2) as answer:  # fmt: skip
                return answer.status == 200

        self.process.start(ready, timeout, "chromium")
        return self

    def new_page(self) -> Page:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT"
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            target = json.load(answer)
        return Page(target["webSocketDebuggerUrl"])

    def stop(self) -> None:
        self.process.stop(timeout=10)


class Page:
    """One tab. Calls are synchronous: send a command, read events until its answer."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self._ids = itertools.count(1)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.responses: dict[str, int] = {}
        self.navigation_error = ""
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Network.responseReceived":
            self.responses[params["response"]["url"]] = params["response"]["status"]
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning"):
            texts = [str(arg.get("value", arg.get("description", ""))) for arg in params["args"]]
            self.errors.append(f"console.{params['type']}: {' '.join(texts)}")
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            self.errors.append(f"log: {params['entry'].get('text')}")

    def set_headers(self, headers: dict[str, str]) -> None:
        self.call("Network.setExtraHTTPHeaders", headers=headers)

    def navigate(self, url: str) -> str:
        """Load `url`; returns Chromium's error ('' when the page loaded), e.g.
        net::ERR_INVALID_AUTH_CREDENTIALS when a password was asked for and none would do."""
        self.navigation_error = self.call("Page.navigate", url=url).get("errorText", "")
        return self.navigation_error

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)  # fmt: skip
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None  # the page is still loading
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"{expression!r} stayed false for {timeout} s; page errors: "
                             f"{self.errors}; requests: {self.requests}")  # fmt: skip

    def screenshot(self, path: Path) -> Path:
        height = self.evaluate("document.documentElement.scrollHeight")
        width = self.evaluate("document.documentElement.scrollWidth")
        result = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                           clip={"x": 0, "y": 0, "width": width, "height": height,
                                 "scale": 1})  # fmt: skip
        path.write_bytes(base64.b64decode(result["data"]))
        return path

    def close(self) -> None:
        self.ws.close()
