"""Loopback networking helpers: free ports and a tiny HTTP client for TCP or unix sockets."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import random
import socket
from dataclasses import dataclass

# Under pytest-xdist each worker takes ports from a block of its own, below the kernel's
# ephemeral range (32768-60999 by default), where neither another worker nor an outgoing
# connection can take a port between our probe and the service's bind.
PORTS_PER_WORKER = 1000
FIRST_WORKER_PORT = 20000
# Each process starts at a random place in its block: a second test run on the same machine
# has workers with the same names, and starting both at the block's first port made them take
# the same ports at the same moments (a hub's responder failed to bind beside another run).
_next_port = itertools.count(random.randrange(PORTS_PER_WORKER))


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]
    first = FIRST_WORKER_PORT + int(worker[2:]) * PORTS_PER_WORKER
    for _ in range(PORTS_PER_WORKER):
        port = first + next(_next_port) % PORTS_PER_WORKER
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port left in {first}-{first + PORTS_PER_WORKER - 1}")


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # A blocking connect waits while the listen backlog is full; with a timeout set,
        # Python's unix-socket connect fails at once with EAGAIN instead.
        self.sock.connect(self.socket_path)
        self.sock.settimeout(self.timeout)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass(frozen=True)
class Endpoint:
    """Where a service listens: `unix` is a socket path, else `host`:`port` over TCP."""

    unix: str = ""
    host: str = "127.0.0.1"
    port: int = 0

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        if self.unix:
            return UnixHTTPConnection(self.unix, timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 30.0,
    ) -> Reply:
        """Send `path` exactly as given (no normalisation), return status, headers, body."""
        conn = self.connection(timeout)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for key, value in (headers or {}).items():
                conn.putheader(key, value)
            conn.putheader("Content-Length", str(len(body or b"")))
            conn.endheaders(body)
            response = conn.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()


def open_slow_connections(endpoint: Endpoint, count: int) -> list[socket.socket]:
    """`count` connections that never finish a request: half send nothing at all, half stop
    in the middle of the headers (the client a slow-loris attack or a stuck hub would be)."""
    opened = []
    for index in range(count):
        if endpoint.unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(endpoint.unix)
        else:
            sock = socket.create_connection((endpoint.host, endpoint.port))
        if index % 2:
            sock.sendall(b"GET /users/alice HTTP/1.1\r\nHost: restuser\r\nX-Slow: ")
        opened.append(sock)
    return opened
