"""Many "running servers" for a real JupyterHub at no cost: one shared responder process.

`ResponderSpawner` is a Spawner whose start() hands the hub the URL of ONE responder process
started by the test fixture, so the hub, its database and the proxy hold real running servers
(routes, pending/ready, activity) while no per-user process exists. The hub imports this module
by its dotted name (the fixture puts the repository on the hub's PYTHONPATH), under whichever
JupyterHub version the hub runs, so it uses only the Spawner API that 4, 5 and 6 share.

Run as a script (`python responder.py PORT`), it is the responder: every path answers 200 with
JSON. Behind the proxy, requests keep their `/user/NAME/...` path, and these answer as a
single-user server would: `api` (version), `api/status`, `api/kernels`, `api/terminals`.
`PUT /_responder/users/NAME/kernels` (a JSON list) sets what NAME's `api/kernels` returns, and
`GET /_responder/requests` gives how many requests each user's server got, for tests.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:  # the responder process does not need JupyterHub; the hub process does
    from jupyterhub.spawner import Spawner
    from traitlets import Dict, Unicode
except ImportError:  # pragma: no cover - only when run by a Python without JupyterHub
    Spawner = None

if Spawner is not None:

    class ResponderSpawner(Spawner):
        """A server that is 'running' as soon as it starts: its URL is the shared responder."""

        responder_url = Unicode("", config=True, help="Base URL of the shared responder process")
        stop_delays = Dict(
            config=True, help="Seconds stop() takes, per user name (to make the hub answer 202)"
        )

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.running = False

        def load_state(self, state):
            super().load_state(state)
            self.running = bool(state.get("responder_running"))

        def get_state(self):
            state = super().get_state()
            if self.running:
                state["responder_running"] = True
            return state

        def clear_state(self):
            super().clear_state()
            self.running = False

        async def start(self):
            if not self.responder_url:
                raise RuntimeError("ResponderSpawner.responder_url is not configured")
            self.running = True
            return self.responder_url

        async def stop(self, now=False):
            delay = self.stop_delays.get(self.user.name, 0)
            if delay:
                await asyncio.sleep(delay)
            self.running = False

        async def poll(self):
            # A restarted hub keeps these servers (cleanup_servers=False) because the state
            # says they run; 0 means "exited" to the hub.
            return None if self.running else 0


_USER_PATH = re.compile(r"^/user/([^/]+)/?(.*)$")


class _Responses:
    """What the responder answers per user, and how often each user's server was asked."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kernels: dict[str, list] = {}
        self.requests: dict[str, int] = {}
        self.started = _now()

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        path = path.split("?", 1)[0]
        if path.startswith("/_responder/"):
            return self._control(method, path, body)
        match = _USER_PATH.match(path)
        if not match:
            return 200, {"responder": True, "path": path}
        user, rest = match.groups()
        with self.lock:
            self.requests[user] = self.requests.get(user, 0) + 1
            kernels = list(self.kernels.get(user, []))
        rest = rest.strip("/")
        server, _, below = rest.partition("/")
        if server != "api" and (below == "api" or below.startswith("api/")):
            rest = below  # a named server's API answers as the default server's
        if rest == "api":
            return 200, {"version": "2.0.0-responder"}
        if rest == "api/status":
            return 200, {"started": self.started, "last_activity": self.started,
                         "connections": 0, "kernels": len(kernels)}  # fmt: skip
        if rest == "api/kernels":
            return 200, kernels
        if rest == "api/terminals":
            return 200, []
        return 200, {"responder": True, "user": user, "path": path}

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        parts = path.strip("/").split("/")
        if method == "GET" and parts == ["_responder", "requests"]:
            with self.lock:
                return 200, dict(self.requests)
        if method == "PUT" and len(parts) == 4 and parts[1] == "users" and parts[3] == "kernels":
            with self.lock:
                self.kernels[parts[2]] = json.loads(body or b"[]")
            return 200, self.kernels[parts[2]]
        return 404, {"message": f"no control route {method} {path}"}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _handler(responses: _Responses):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, payload = responses.answer(self.command, self.path, self.rfile.read(length))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _reply

        def log_message(self, format, *args):
            pass  # thousands of wait_up probes would flood the log

    return Handler


class _Server(ThreadingHTTPServer):
    # A restarted hub checks all its servers at once: with the default listen backlog of 5 the
    # dropped connection attempts are retried after 1, 3, 7... s, and a restart with 500
    # servers took two minutes instead of ten seconds.
    request_queue_size = 1024
    daemon_threads = True


def main(argv: list[str]) -> None:
    port = int(argv[1])
    server = _Server(("127.0.0.1", port), _handler(_Responses()))
    print(f"responder listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
