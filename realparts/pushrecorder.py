"""A push monitor on 127.0.0.1 for hook tests: records every request (method, path, query,
body) and answers as told per path: 200, an error status, or not for a while (a hung monitor)."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class Push:
    method: str
    path: str
    query: str
    body: str


@dataclass
class Recorder:
    base: str  # http://127.0.0.1:PORT
    pushes: list[Push] = field(default_factory=list)
    # path -> ("status", code) or ("hang", seconds)
    behaviour: dict[str, tuple[str, float]] = field(default_factory=dict)

    def paths(self) -> list[str]:
        return [push.path for push in self.pushes]


@contextlib.contextmanager
def push_recorder():
    """Yield a Recorder whose server runs in a thread until the block ends."""
    recorder = Recorder("")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode(errors="replace") if length else ""
            parts = urlsplit(self.path)
            recorder.pushes.append(Push(self.command, parts.path, parts.query, body))
            kind, value = recorder.behaviour.get(parts.path, ("status", 200))
            if kind == "hang":
                time.sleep(value)
                code = 200
            else:
                code = int(value)
            try:
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")
            except OSError:
                pass  # the client gave up waiting

        do_GET = do_POST = do_HEAD = _answer

        def log_message(self, *args) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    recorder.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
