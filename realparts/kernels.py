"""Kernels and terminals inside a real single-user server, for tests that need a server whose
kernel is busy (the culler's "never stop a server that is still computing").

`UserServer` talks to one user's jupyter_server with a service token holding `access:servers`.
Two ways in, because asking a server about itself can count as activity:
- `through_proxy` (the public URL, /user/NAME/ behind configurable-http-proxy): what the culler
  itself does. Every answer below 300 moves the route's activity, which the hub copies into the
  server's last_activity at its next `last_activity_interval`.
- `direct` (the server's own address, read from the hub's log): the proxy never sees the request,
  so setting up a busy kernel does not make the server look active to the hub.
Requests carry `no_track_activity=1` unless told otherwise, so jupyter_server's own
`api/status` last_activity is not moved either (the single-user server reports that one to
the hub every JUPYTERHUB_ACTIVITY_INTERVAL, 300 s by default).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import TYPE_CHECKING

import requests
import websocket

if TYPE_CHECKING:
    from realparts.hub import RealHub

LONG_CELL = "import time; time.sleep(600)"


class UserServer:
    """One user's running single-user server; every call raises on an unexpected answer."""

    def __init__(self, base_url: str, token: str, *, track_activity: bool = False,
                 timeout: float = 30.0) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/") + "/"  # e.g. http://127.0.0.1:PORT/user/ada/
        self.token = token
        self.track_activity = track_activity
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {token}"

    @classmethod
    def through_proxy(cls, hub: RealHub, username: str, service: str, server_name: str = "",
                      **options) -> UserServer:  # fmt: skip
        """The server at its public URL, as the culler reaches it."""
        return cls(f"{hub.url}{_prefix(username, server_name)}", hub.token(service), **options)

    @classmethod
    def direct(cls, hub: RealHub, username: str, service: str, server_name: str = "",
               **options) -> UserServer:  # fmt: skip
        """The server at the address the hub gave the proxy, bypassing the proxy."""
        prefix = _prefix(username, server_name)
        # The hub logs "Adding user ada to proxy /user/ada/ => http://127.0.0.1:PORT" per start.
        routes = re.findall(rf"to proxy {re.escape(prefix)} => (http://[^\s]+)", hub.log())
        if not routes:
            raise RuntimeError(f"no proxy route for {prefix} in the hub's log: is it running?")
        return cls(f"{routes[-1]}{prefix}", hub.token(service), **options)

    # -- raw requests --------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """`path` relative to the server (e.g. "api/kernels"); redirects are not followed."""
        params = dict(kwargs.pop("params", {}))
        if not self.track_activity:
            params.setdefault("no_track_activity", "1")
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("allow_redirects", False)
        return self.session.request(method, self.base_url + path, params=params, **kwargs)

    def json(self, method: str, path: str, expected: int = 200, **kwargs):
        reply = self.request(method, path, **kwargs)
        if reply.status_code != expected:
            raise RuntimeError(f"{method} {self.base_url}{path}: {reply.status_code} "
                               f"{reply.headers.get('Location', '')} {reply.text[:300]}")  # fmt: skip
        return reply.json() if reply.content else None

    # -- what the culler reads -----------------------------------------------------------------

    def status(self) -> dict:
        """api/status: connections, kernels, last_activity, started."""
        return self.json("GET", "api/status")

    def kernels(self) -> list[dict]:
        """api/kernels: id, name, last_activity, execution_state, connections per kernel."""
        return self.json("GET", "api/kernels")

    def kernel(self, kernel_id: str) -> dict:
        return self.json("GET", f"api/kernels/{kernel_id}")

    def terminals(self) -> list[dict]:
        """api/terminals: name and last_activity per terminal."""
        return self.json("GET", "api/terminals")

    # -- making things happen ------------------------------------------------------------------

    def start_kernel(self, name: str = "python3") -> dict:
        """A new kernel. Its execution_state says "starting" until a client first connects,
        however long it has been ready: use `wait_ready` for a kernel that reports idle."""
        return self.json("POST", "api/kernels", expected=201, json={"name": name})

    def wait_ready(self, kernel_id: str, timeout: float = 60.0) -> dict:
        """Connect once so the server learns the kernel's state, then wait for idle."""
        with self._channels(kernel_id):
            return self.wait_for_state(kernel_id, "idle", timeout)

    def make_busy(self, kernel_id: str, code: str = LONG_CELL, timeout: float = 60.0) -> dict:
        """Run `code` and leave it running with no client connected: returns the kernel model
        once the server reports it busy with 0 connections."""
        session = uuid.uuid4().hex
        request = _execute_request(code, session)
        with self._channels(kernel_id) as channels:
            channels.send(json.dumps(request))
            deadline = time.monotonic() + timeout
            while True:
                channels.settimeout(max(0.1, deadline - time.monotonic()))
                message = json.loads(channels.recv())
                if (
                    message.get("msg_type") == "status"
                    and message["parent_header"].get("msg_id") == request["header"]["msg_id"]
                    and message["content"]["execution_state"] == "busy"
                ):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"kernel {kernel_id} did not start running {code!r}")
        return self.wait_until(
            kernel_id,
            lambda k: k["execution_state"] == "busy" and k["connections"] == 0,
            "busy with no client",
            timeout,
        )

    def interrupt(self, kernel_id: str, timeout: float = 30.0) -> dict:
        """Interrupt the running cell; returns the kernel model once it is idle."""
        self.json("POST", f"api/kernels/{kernel_id}/interrupt", expected=204)
        return self.wait_for_state(kernel_id, "idle", timeout)

    def shutdown_kernel(self, kernel_id: str) -> None:
        self.json("DELETE", f"api/kernels/{kernel_id}", expected=204)

    def start_terminal(self) -> dict:
        """A new terminal (a shell under the server's terminado): name, last_activity."""
        return self.json("POST", "api/terminals")

    def shutdown_terminal(self, name: str) -> None:
        self.json("DELETE", f"api/terminals/{name}", expected=204)

    # -- waiting -------------------------------------------------------------------------------

    def wait_for_state(self, kernel_id: str, state: str, timeout: float = 30.0) -> dict:
        return self.wait_until(kernel_id, lambda k: k["execution_state"] == state, state, timeout)

    def wait_until(self, kernel_id: str, condition, what: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            model = self.kernel(kernel_id)
            if condition(model):
                return model
            if time.monotonic() > deadline:
                raise RuntimeError(f"kernel {kernel_id} not {what} within {timeout} s: {model}")
            time.sleep(0.1)

    def _channels(self, kernel_id: str) -> _Channels:
        url = re.sub(r"^http", "ws", self.base_url) + f"api/kernels/{kernel_id}/channels"
        return _Channels(url, self.token, self.timeout)


class _Channels:
    """A websocket to a kernel's channels, closed on leaving the `with` block."""

    def __init__(self, url: str, token: str, timeout: float) -> None:
        self.url, self.token, self.timeout = url, token, timeout

    def __enter__(self) -> websocket.WebSocket:
        self.socket = websocket.create_connection(
            self.url, header=[f"Authorization: token {self.token}"], timeout=self.timeout
        )
        return self.socket

    def __exit__(self, *exc) -> None:
        self.socket.close()


def _prefix(username: str, server_name: str) -> str:
    return f"/user/{username}/{server_name}/" if server_name else f"/user/{username}/"


def _execute_request(code: str, session: str) -> dict:
    """A Jupyter messaging execute_request in jupyter_server's JSON websocket format."""
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "session": session,
            "username": "test",
            "version": "5.3",
            "date": "",
        },
        "parent_header": {},
        "metadata": {},
        "channel": "shell",
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "buffers": [],
    }
