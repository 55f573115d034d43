"""A small real HTTP server on loopback that misbehaves on purpose, for attack tests.

It plays two parts. Behind a real hub's proxy (as every user's server, through the responder
spawner's `responder_url`), it answers `/user/NAME/...` as a single-user server would, or as
a hostile or broken one: per user, `api/kernels` can stall, dribble, send half a body, HTML,
garbage or a gigantic answer. Alone, it plays a hostile or broken hub: `hub_routes` maps a
path (`/hub/api/users`) to a behaviour.

Every request is recorded (method, path, headers), so a test can see what the culler sent to
a server its user controls. A behaviour is a function `(handler) -> None` that writes the raw
answer itself; `Stalled` and `Dribble` end when the server is closed or the client goes away.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from realparts.net import free_port

Behaviour = Callable[[BaseHTTPRequestHandler], None]


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes,
         content_type: str = "application/json", extra: dict | None = None,
         as_hub: bool = True) -> None:  # fmt: skip
    """`as_hub`: with the header every JupyterHub answer carries (False: a plain server's)."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    if as_hub:
        handler.send_header("X-JupyterHub-Version", "6.1.1")
    for key, value in (extra or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


def answer_json(payload, status: int = 200, extra: dict | None = None) -> Behaviour:
    data = json.dumps(payload).encode()
    return lambda handler: send(handler, status, data, extra=extra)


def answer_raw(body: bytes, status: int = 200, content_type: str = "text/html",
               as_hub: bool = True) -> Behaviour:  # fmt: skip
    return lambda handler: send(handler, status, body, content_type, as_hub=as_hub)


class Stalled:
    """Accept the request, never answer (until the server closes)."""

    def __init__(self, closed: threading.Event) -> None:
        self.closed = closed

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        self.closed.wait()


class Dribble:
    """Headers and a promise of a big body, then one byte every `every` seconds: each read
    is quick, so a per-read timeout never fires."""

    def __init__(self, closed: threading.Event, every: float = 0.5) -> None:
        self.closed = closed
        self.every = every

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(10**9))
        handler.send_header("X-JupyterHub-Version", "6.1.1")
        handler.end_headers()
        handler.wfile.write(b"[")
        handler.wfile.flush()
        while not self.closed.wait(self.every):
            try:
                handler.wfile.write(b" ")
                handler.wfile.flush()
            except OSError:
                return


class DribbleHeaders:
    """The status line, then one header byte every `every` seconds, never the end of the
    headers: each read is quick, so a per-read timeout never fires."""

    def __init__(self, closed: threading.Event, every: float = 0.3) -> None:
        self.closed = closed
        self.every = every

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        handler.wfile.flush()
        while not self.closed.wait(self.every):
            try:
                handler.wfile.write(b"x")
                handler.wfile.flush()
            except OSError:
                return


def half_body(handler: BaseHTTPRequestHandler) -> None:
    """Promise 1000 bytes, send 12, close the connection."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "1000")
    handler.send_header("X-JupyterHub-Version", "6.1.1")
    handler.end_headers()
    handler.wfile.write(b'[{"id": "k1"')
    handler.wfile.flush()
    handler.close_connection = True
    handler.connection.shutdown(socket.SHUT_RDWR)


class Gigantic:
    """A valid JSON answer of `size` bytes (one long string in a list), sent as fast as the
    client reads; `sent` counts the bytes the client took before it went away."""

    CHUNK = 64 * 1024

    def __init__(self, size: int) -> None:
        self.size = size
        self.sent = 0
        self.lock = threading.Lock()

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(self.size))
        handler.end_headers()
        chunk = b"x" * self.CHUNK
        try:
            handler.wfile.write(b'["')
            left = self.size - 4
            while left > 0:
                piece = chunk[: min(left, self.CHUNK)]
                handler.wfile.write(piece)
                left -= len(piece)
                with self.lock:
                    self.sent += len(piece)
            handler.wfile.write(b'"]')
        except OSError:
            return


class HostileServer:
    """The server. `users[name]` maps a path under /user/NAME/ (e.g. "api/kernels") to a
    behaviour; anything else answers like a quiet single-user server (no kernels)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.closed = threading.Event()
        self.users: dict[str, dict[str, Behaviour]] = {}
        self.hub_routes: dict[tuple[str, str], Behaviour] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", self.port), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> HostileServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.closed.set()
        self._server.shutdown()
        self._server.server_close()

    def stalled(self) -> Stalled:
        return Stalled(self.closed)

    def dribble(self, every: float = 0.5) -> Dribble:
        return Dribble(self.closed, every)

    def dribble_headers(self, every: float = 0.3) -> DribbleHeaders:
        return DribbleHeaders(self.closed, every)

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def requests_to(self, prefix: str) -> list[Seen]:
        with self._lock:
            return [seen for seen in self.seen if seen.path.startswith(prefix)]

    def behaviour(self, method: str, path: str) -> Behaviour:
        bare = path.split("?", 1)[0]
        if (method, bare) in self.hub_routes:
            return self.hub_routes[(method, bare)]
        if bare.startswith("/user/"):
            _, _, user, *rest = bare.split("/", 3)
            rest = (rest[0] if rest else "").strip("/")
            own = self.users.get(user, {})
            if rest in own:
                return own[rest]
            if rest.endswith(("api/kernels", "api/terminals")):  # a named server's too
                return answer_json([])
            return answer_json({"version": "2.14.0"})
        return answer_json({"message": f"no route {method} {bare}"}, 404)


def _handler(server: HostileServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            server.record(Seen(self.command, self.path,
                             {key.lower(): value for key, value in self.headers.items()}))
            server.behaviour(self.command, self.path)(self)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        def log_message(self, format, *args):
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
