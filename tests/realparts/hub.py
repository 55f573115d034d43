"""A real JupyterHub with configurable-http-proxy on loopback, for any service's tests.

Free ports, its own scratch directory, service tokens with chosen scopes, real single-user
servers (SimpleLocalProcessSpawner) and everything torn down at the end. Fails loudly with
the hub's log when it cannot start.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.realparts.net import free_port
from tests.realparts.process import ManagedProcess

REPO = Path(__file__).resolve().parents[2]
PROXY = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
VENV_BIN = Path(sys.executable).parent


@dataclass
class HubService:
    """A JupyterHub service with its own token and the scopes it is granted."""

    name: str
    scopes: list[str]
    token: str = field(default_factory=lambda: secrets.token_hex(24))


class RealHub:
    def __init__(self, workdir: Path, services: list[HubService], extra_config: str = "") -> None:
        self.workdir = workdir
        self.services = {service.name: service for service in services}
        self.extra_config = extra_config
        self.proxy_port, self.proxy_api_port, self.hub_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.proxy_port}"
        self.api_url = f"{self.url}/hub/api"
        self.log_path = workdir / "jupyterhub.log"
        self.process: ManagedProcess | None = None

    def config_text(self) -> str:
        services = [{"name": s.name, "api_token": s.token} for s in self.services.values()]
        roles = [
            {"name": f"{s.name}-role", "scopes": s.scopes, "services": [s.name]}
            for s in self.services.values()
        ]
        return f"""
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {self.proxy_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {self.hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{str(PROXY)!r}]
c.ConfigurableHTTPProxy.pid_file = {str(self.workdir / "proxy.pid")!r}
c.JupyterHub.db_url = "sqlite:///{self.workdir / "jupyterhub.sqlite"}"
c.JupyterHub.cookie_secret_file = {str(self.workdir / "cookie_secret")!r}
c.JupyterHub.pid_file = {str(self.workdir / "jupyterhub.pid")!r}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(self.workdir / "homes" / "{username}")!r}
c.Spawner.cmd = [{str(VENV_BIN / "jupyterhub-singleuser")!r}]
c.Spawner.args = ["--allow-root"]
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 90
c.JupyterHub.services = {services!r}
c.JupyterHub.load_roles = {roles!r}
c.JupyterHub.cleanup_servers = True
{self.extra_config}
"""

    def start(self, timeout: float = 60.0) -> "RealHub":
        if not PROXY.exists():
            raise RuntimeError(f"{PROXY} is missing: run ./scripts/test, which npm-installs it")
        config = self.workdir / "jupyterhub_config.py"
        config.write_text(self.config_text())
        config.chmod(0o600)  # it holds the service tokens
        env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        self.process = ManagedProcess([str(VENV_BIN / "jupyterhub"), "-f", str(config)],
                                      self.log_path, env=env, cwd=self.workdir)  # fmt: skip

        def answers() -> bool:
            try:
                return requests.get(f"{self.api_url}/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        self.process.start(answers, timeout, "jupyterhub")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, method: str, path: str, service: str, **kwargs) -> requests.Response:
        """Call the hub REST API as `service` (its token, with the pagination media type)."""
        headers = {"Accept": "application/jupyterhub-pagination+json", **kwargs.pop("headers", {})}
        return self.request(method, f"/hub/api{path}", service, headers=headers, **kwargs)

    def request(self, method: str, path: str, service: str, **kwargs) -> requests.Response:
        """Any path behind the proxy (e.g. a user's server) with `service`'s token."""
        headers = {
            "Authorization": f"token {self.services[service].token}",
            **kwargs.pop("headers", {}),
        }
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def login(self, username: str) -> requests.Session:
        """Log `username` in through the real login form (dummy authenticator)."""
        session = requests.Session()
        page = session.get(f"{self.url}/hub/login", timeout=30)
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        form = {"username": username, "password": "any"}
        if xsrf:
            form["_xsrf"] = xsrf.group(1)
        reply = session.post(f"{self.url}/hub/login", data=form, timeout=30, allow_redirects=False)
        if reply.status_code not in (200, 302):
            raise RuntimeError(
                f"login of {username} failed: {reply.status_code} {reply.text[:300]}"
            )
        return session

    def wait_for_server(self, username: str, service: str, timeout: float = 90.0) -> dict:
        """Wait until `username`'s default server is ready; return the user model."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api("GET", f"/users/{username}", service).json()
            server = model.get("servers", {}).get("")
            if server and server.get("ready"):
                return model
            if (
                server is None
                and model.get("server") is None
                and _spawn_failed(self.log(), username)
            ):
                break
            time.sleep(0.5)
        raise RuntimeError(
            f"server of {username} not ready within {timeout} s:\n{self.log()[-4000:]}"
        )

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.stop()
        # Single-user servers and the proxy run in their own sessions; the hub stops them on
        # a clean shutdown, and this catches any left over from an unclean one.
        for pid in _processes_with_env(f"JUPYTERHUB_API_URL=http://127.0.0.1:{self.hub_port}/"):
            _kill(pid)
        pid_file = self.workdir / "proxy.pid"
        if pid_file.exists() and pid_file.read_text().strip().isdigit():
            _kill(int(pid_file.read_text()))


def _processes_with_env(needle: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _spawn_failed(log: str, username: str) -> bool:
    return f"Unhandled error starting {username}" in log or f"{username}'s server failed" in log
