"""A real JupyterHub with configurable-http-proxy on loopback, for any service's tests.

Free ports, its own scratch directory, service tokens with chosen scopes, everything torn down
at the end; fails loudly with the hub's log when it cannot start. Two parameters:
- `spawner`: "simple" runs a real jupyterhub-singleuser per user (SimpleLocalProcessSpawner);
  "responder" gives every user the same shared responder process (see responder.py), so
  thousands of real running servers in the hub cost nothing.
- `version`: "6" (the main .venv), "5" or "4" (.venv-hub5 / .venv-hub4, which ./scripts/test
  creates): the JupyterHub major version the hub and its single-user servers run.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests

from realparts.net import free_port
from realparts.process import ManagedProcess
from realparts.proctree import command_line

REPO = Path(__file__).resolve().parents[1]
PROXY = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
VENV_BIN = Path(sys.executable).parent
HUB_VERSIONS = {"6": VENV_BIN, "5": REPO / ".venv-hub5" / "bin", "4": REPO / ".venv-hub4" / "bin"}
SPAWNERS = ("simple", "responder")
PAGINATION = "application/jupyterhub-pagination+json"


@dataclass
class HubService:
    """A JupyterHub service with its own token and the scopes it is granted."""

    name: str
    scopes: list[str]
    token: str = field(default_factory=lambda: secrets.token_hex(24))


class RealHub:
    def __init__(
        self,
        workdir: Path,
        services: list[HubService],
        extra_config: str = "",
        *,
        spawner: str = "simple",
        version: str = "6",
        cleanup_servers: bool = True,
        command_prefix: tuple[str, ...] = (),
        extra_env: dict[str, str] | None = None,
    ) -> None:
        if spawner not in SPAWNERS:
            raise ValueError(f"spawner must be one of {SPAWNERS}, not {spawner!r}")
        if version not in HUB_VERSIONS:
            raise ValueError(f"version must be one of {sorted(HUB_VERSIONS)}, not {version!r}")
        self.workdir = workdir
        self.services = {service.name: service for service in services}
        self.extra_config = extra_config
        self.spawner = spawner
        self.version = version
        self.bin = HUB_VERSIONS[version]
        # False keeps running servers across a hub restart (the responder's survive it).
        self.cleanup_servers = cleanup_servers
        # e.g. nsenter into a network namespace (realparts/swarm.py), and what it needs
        self.command_prefix = tuple(command_prefix)
        self.extra_env = dict(extra_env or {})
        self.proxy_port, self.proxy_api_port, self.hub_port = free_port(), free_port(), free_port()
        self.responder_port = free_port()
        self.url = f"http://127.0.0.1:{self.proxy_port}"
        self.api_url = f"{self.url}/hub/api"
        self.log_path = workdir / "jupyterhub.log"
        self.process: ManagedProcess | None = None
        self.responder: ManagedProcess | None = None
        self.start_seconds = 0.0  # how long the last start took, until the API answered

    def spawner_config(self) -> str:
        if self.spawner == "responder":
            return f"""
c.JupyterHub.spawner_class = "realparts.responder.ResponderSpawner"
c.ResponderSpawner.responder_url = "http://127.0.0.1:{self.responder_port}"
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
"""
        return f"""
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(self.workdir / "homes" / "{username}")!r}
c.Spawner.cmd = [{str(self.bin / "jupyterhub-singleuser")!r}]
c.Spawner.args = ["--allow-root"]
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 90
"""

    def config_text(self) -> str:
        services = [{"name": s.name, "api_token": s.token} for s in self.services.values()]
        roles = [
            {"name": f"{s.name}-role", "scopes": s.scopes, "services": [s.name]}
            for s in self.services.values()
        ]
        # allow_all appeared in JupyterHub 5; 4 lets everyone in with the dummy authenticator.
        allow_all = "c.Authenticator.allow_all = True" if self.version != "4" else ""
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
{allow_all}
{self.spawner_config()}
c.JupyterHub.services = {services!r}
c.JupyterHub.load_roles = {roles!r}
c.JupyterHub.cleanup_servers = {self.cleanup_servers!r}
{self.extra_config}
"""

    def start(self, timeout: float = 60.0) -> RealHub:
        if not PROXY.exists():
            raise RuntimeError(f"{PROXY} is missing: run ./scripts/test, which npm-installs it")
        if not (self.bin / "jupyterhub").exists():
            raise RuntimeError(
                f"{self.bin / 'jupyterhub'} is missing: run ./scripts/test, which creates the "
                f"JupyterHub {self.version} venv"
            )
        if self.spawner == "responder" and self.responder is None:
            self._start_responder()
        config = self.workdir / "jupyterhub_config.py"
        config.write_text(self.config_text())
        config.chmod(0o600)  # it holds the service tokens
        env = {
            **os.environ,
            "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            # the hub imports realparts.responder by name, whichever venv it runs from
            "PYTHONPATH": str(REPO),
            **self.extra_env,
        }
        self.process = ManagedProcess([*self.command_prefix, str(self.bin / "jupyterhub"), "-f",
                                       str(config)],
                                      self.log_path, env=env, cwd=self.workdir)  # fmt: skip

        def answers() -> bool:
            try:
                return requests.get(f"{self.api_url}/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        started = time.monotonic()
        self.process.start(answers, timeout, f"jupyterhub {self.version}")
        self.start_seconds = time.monotonic() - started
        return self

    def _start_responder(self) -> None:
        script = Path(__file__).with_name("responder.py")
        self.responder = ManagedProcess(
            [sys.executable, str(script), str(self.responder_port)],
            self.workdir / "responder.log",
        )

        def answers() -> bool:
            url = f"http://127.0.0.1:{self.responder_port}/"
            return requests.get(url, timeout=2).status_code == 200

        try:
            self.responder.start(answers, 20, "shared responder")
        except Exception:
            self.responder = None
            raise

    def responder_url(self, path: str = "") -> str:
        """The shared responder's own URL (its /_responder/ control routes, see responder.py)."""
        return f"http://127.0.0.1:{self.responder_port}{path}"

    def token(self, service: str) -> str:
        return self.services[service].token

    def create_users(
        self, names: list[str], service: str, chunk: int = 100, concurrency: int = 4
    ) -> None:
        """Create users in bulk: POST /users with `chunk` names per request, `concurrency`
        requests at a time."""

        def create(batch: list[str]) -> None:
            reply = self.api("POST", "/users", service, json={"usernames": batch})
            if reply.status_code != 201:
                raise RuntimeError(f"creating users: {reply.status_code} {reply.text[:300]}")

        batches = [names[start : start + chunk] for start in range(0, len(names), chunk)]
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(create, batches))

    def start_servers(
        self,
        names: list[str],
        service: str,
        server_name: str = "",
        concurrency: int = 16,
        timeout: float = 300.0,
    ) -> None:
        """Start the servers of `names` through the API, `concurrency` requests at a time,
        and wait until the hub says every one is ready."""
        local = threading.local()
        headers = {"Authorization": f"token {self.token(service)}"}

        def spawn(name: str) -> None:
            if not hasattr(local, "session"):
                local.session = requests.Session()
                local.session.headers.update(headers)
            suffix = f"/servers/{server_name}" if server_name else "/server"
            reply = local.session.post(f"{self.api_url}/users/{name}{suffix}", timeout=timeout)
            if reply.status_code not in (201, 202, 400):
                raise RuntimeError(f"starting {name}: {reply.status_code} {reply.text[:300]}")
            if reply.status_code == 400 and "already running" not in reply.text:
                raise RuntimeError(f"starting {name}: {reply.status_code} {reply.text[:300]}")

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(spawn, names))
        self.wait_ready(names, service, server_name, timeout)

    def wait_ready(
        self, names: list[str], service: str, server_name: str = "", timeout: float = 300.0
    ) -> None:
        """Wait until the hub says the servers of `names` are ready (after start_servers, or
        after a restart: the hub re-checks its servers for a while after it answers)."""
        wanted = set(names)
        deadline = time.monotonic() + timeout
        while True:
            ready = {
                user["name"]
                for user in self.list_users(service, state="ready")
                if server_name in user.get("servers", {})
                and user["servers"][server_name].get("ready")
            }
            if wanted <= ready:
                return
            log = self.log()
            failed = sorted(name for name in wanted - ready if _spawn_failed(log, name))
            if failed:
                raise RuntimeError(f"spawn of {failed[:5]} failed:\n{log[-4000:]}")
            if time.monotonic() > deadline:
                missing = sorted(wanted - ready)
                raise RuntimeError(
                    f"{len(missing)} servers not ready within {timeout} s (first: "
                    f"{missing[:5]}):\n{self.log()[-4000:]}"
                )
            time.sleep(0.5)

    def list_users(self, service: str, **params) -> list[dict]:
        """Every user model, following the hub's pagination."""
        users, offset = [], 0
        while True:
            reply = self.api("GET", "/users", service, params={**params, "offset": offset,
                                                                 "limit": 200})  # fmt: skip
            reply.raise_for_status()
            page = reply.json()
            users.extend(page["items"])
            following = page["_pagination"].get("next")
            if not following:
                return users
            offset = following["offset"]

    def save_db(self, destination: Path) -> None:
        """Copy the hub's database (stop the hub first): restore it with restore_db() to start
        again with the same users and, with cleanup_servers=False, the same running servers."""
        destination.write_bytes((self.workdir / "jupyterhub.sqlite").read_bytes())

    def restore_db(self, source: Path) -> None:
        (self.workdir / "jupyterhub.sqlite").write_bytes(source.read_bytes())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, method: str, path: str, service: str, **kwargs) -> requests.Response:
        """Call the hub REST API as `service` (its token, with the pagination media type)."""
        headers = {"Accept": PAGINATION, **kwargs.pop("headers", {})}
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
        """Stop the hub, its proxy and its single-user servers (the responder stays up until
        close(), so a restarted hub finds its servers again)."""
        if self.process is None:
            return
        self.process.stop()
        self.process = None
        # Single-user servers and the proxy run in their own sessions; the hub stops them on
        # a clean shutdown, and this catches any left over from an unclean one.
        for pid in _processes_with_env(f"JUPYTERHUB_API_URL=http://127.0.0.1:{self.hub_port}/"):
            _kill(pid)
        pid_file = self.workdir / "proxy.pid"
        if pid_file.exists() and pid_file.read_text().strip().isdigit():
            pid = int(pid_file.read_text())
            # a stale file's pid may belong to another process by now
            if b"configurable-http-proxy" in command_line(pid):
                _kill(pid)

    def close(self) -> None:
        """Stop everything, the shared responder included."""
        self.stop()
        if self.responder is not None:
            self.responder.stop()
            self.responder = None


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


def idle_seconds(hub, user: str, server: str = "", service: str = "admin") -> float:
    """How long ago the hub last saw activity on a user's server (its last_activity)."""
    model = hub.api("GET", f"/users/{user}", service).json()
    last = model["servers"][server]["last_activity"]
    then = datetime.fromisoformat(last.replace("Z", "+00:00"))
    return (datetime.now(UTC) - then).total_seconds()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _spawn_failed(log: str, username: str) -> bool:
    return f"Unhandled error starting {username}" in log or f"{username}'s server failed" in log


class HubStarter:
    """Starts real hubs in fresh directories under `parent`; close() stops every one of them.

    Call it as `start(services, extra_config="", spawner="simple", version="6", ...)`.
    """

    def __init__(self, parent: Path) -> None:
        self.parent = parent
        self.hubs: list[RealHub] = []

    def __call__(self, services: list[HubService], extra_config: str = "", **options) -> RealHub:
        workdir = self.parent / f"hub{len(self.hubs)}"
        workdir.mkdir()
        return self._start(RealHub(workdir, services, extra_config, **options))

    def _start(self, hub: RealHub) -> RealHub:
        """Start `hub`, kept for close(); stopped at once when it fails to start."""
        self.hubs.append(hub)
        try:
            return hub.start()
        except Exception:
            hub.close()
            raise

    def close(self) -> None:
        for hub in self.hubs:
            hub.close()
