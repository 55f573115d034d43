"""A tiny HTTP server on 127.0.0.1 that answers the Docker SDK with recorded Engine API answers.

The answers are recorded, not live: tests/culler/recorded/README.md says which were captured
from a real engine and which were written from the API reference (Swarm services: no swarm can
run here). The real SDK talks to it over real HTTP (`tcp://127.0.0.1:PORT`), so everything
from the SDK's request building to the backend's error handling runs as in production.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker

RECORDED = Path(__file__).parent / "recorded"
API_VERSION = "1.41"


def recorded(name: str) -> Any:
    return json.loads((RECORDED / name).read_text())


Answer = tuple[int, Any]  # status, JSON body (None: empty body)


class ReplayEngine:
    """Routes: (method, path regex) -> an answer, a list of answers given in turn (the last
    repeats), or a function of the request's path match. Every request is kept in `requests`."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Any]] = []
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = urlsplit(self.path).path
                path = re.sub(r"^/v[0-9.]+", "", path)
                status, body = engine.answer(self.command, path, self.path)
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def route(self, method: str, path: str, answer: Any) -> ReplayEngine:
        self.routes.insert(0, (method, re.compile(path), answer))  # later routes win
        return self

    def answer(self, method: str, path: str, full: str) -> Answer:
        with self._lock:
            self.requests.append((method, full))
            for route_method, pattern, answer in self.routes:
                match = pattern.fullmatch(path)
                if route_method == method and match:
                    if callable(answer):
                        return answer(match)
                    if isinstance(answer, list):
                        return answer.pop(0) if len(answer) > 1 else answer[0]
                    return answer
        return 404, {"message": f"no recorded answer for {method} {path}"}

    def calls(self, method: str, prefix: str = "") -> list[str]:
        return [
            re.sub(r"^/v[0-9.]+", "", path)
            for m, path in self.requests
            if m == method and re.sub(r"^/v[0-9.]+", "", path).startswith(prefix)
        ]

    def client(self) -> docker.DockerClient:
        host, port = self.server.server_address[:2]
        return docker.DockerClient(base_url=f"tcp://{host}:{port}", version=API_VERSION, timeout=10)

    def __enter__(self) -> ReplayEngine:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
