"""A small counting reverse proxy for benchmarks: forwards every request to one upstream and
records when each was answered, so that two clients are counted and timed the same way."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Per-connection headers (RFC 9110 7.6.1) are not forwarded; the body is re-framed.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
               "trailer", "upgrade", "content-length"}  # fmt: skip


@dataclass(frozen=True)
class Exchange:
    """One forwarded request: monotonic times it arrived and its answer came from upstream."""

    method: str
    path: str
    status: int
    arrived: float
    answered: float

    @property
    def kind(self) -> str:
        """'hub' for the hub's REST API, 'server' for a user's server, else 'other'."""
        if self.path.startswith("/hub/api"):
            return "hub"
        if self.path.startswith("/user/"):
            return "server"
        return "other"


class CountingProxy:
    """Listens on 127.0.0.1:`port` and forwards to 127.0.0.1:`upstream_port`, Host header
    kept (the hub builds its pagination links from it, so they come back through here)."""

    def __init__(self, port: int, upstream_port: int) -> None:
        self.port = port
        self.upstream_port = upstream_port
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def take(self) -> list[Exchange]:
        """The exchanges recorded since the last take(), oldest first."""
        with self._lock:
            taken, self._exchanges = self._exchanges, []
        return taken

    def snapshot(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self._exchanges.append(exchange)

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            upstream: http.client.HTTPConnection | None = None

            def _forward(self) -> None:
                arrived = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                status, reply_headers, data = self._upstream_request(headers, body)
                # Timed before the client can see the answer, so its next request never looks
                # as if it overlapped this one.
                answered = time.monotonic()
                # Recorded before the answer goes out: once a client has its answer, take()
                # holds the exchange (a pass that just ended is counted whole).
                proxy._record(Exchange(self.command, self.path, status, arrived, answered))
                self.send_response(status)
                for key, value in reply_headers:
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

            def _upstream_request(self, headers: dict, body: bytes | None):
                # One kept-alive upstream connection per client connection; a connection the
                # upstream closed meanwhile is opened again once.
                for attempt in (1, 2):
                    if self.upstream is None:
                        self.upstream = http.client.HTTPConnection(
                            "127.0.0.1", proxy.upstream_port, timeout=120
                        )
                    try:
                        self.upstream.request(self.command, self.path, body=body,
                                              headers=headers)  # fmt: skip
                        reply = self.upstream.getresponse()
                        data = reply.read()
                        if reply.will_close:
                            self.upstream.close()
                            self.upstream = None
                        return reply.status, reply.getheaders(), data
                    except (http.client.RemoteDisconnected, ConnectionError):
                        self.upstream.close()
                        self.upstream = None
                        if attempt == 2:
                            raise
                raise AssertionError("unreachable")

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward

            def log_message(self, format, *args):
                pass

        return Handler
