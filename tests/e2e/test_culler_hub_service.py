"""docs/jupyterhub_config_culler.py against a real JupyterHub: the hub starts hub-culler itself
as a managed service (token and API URL in its environment, the documented role's scopes
only), and the culler stops an idle server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from realparts.hub import VENV_BIN, HubService
from realparts.restuser import REPO
from realparts.waiting import wait_until

pytestmark = pytest.mark.realhub

SNIPPET = (REPO / "docs" / "jupyterhub_config_culler.py").read_text()
MINIMAL_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers",
                  "tokens"]  # fmt: skip


def snippet_with(**constants: str) -> str:
    """The documented snippet with some constants set to Python expressions (each constant
    must be one line of it)."""
    text = SNIPPET
    for name, expression in constants.items():
        line = re.compile(rf"^{name} = .*$", re.MULTILINE)
        assert len(line.findall(text)) == 1, f"{name} is not one line of the snippet"
        text = line.sub(lambda _, name=name, expression=expression: f"{name} = {expression}", text)
    return text


def documented_scopes() -> list[str]:
    namespace: dict = {}
    exec(SNIPPET.split("if HUB_MANAGED:")[0], namespace)
    return namespace["CULLER_SCOPES"]


def test_the_documented_role_holds_the_minimal_scopes():
    assert documented_scopes() == MINIMAL_SCOPES
    for optional in ("read:users", "delete:users", "read:groups"):
        assert f'# "{optional}",' in SNIPPET, f"{optional} is not documented"


def hub_cullers(hub_port: int) -> list[int]:
    """hub-culler processes started by the hub listening on `hub_port` (other tests' cullers
    may run on this machine at the same time)."""
    api_url = f"JUPYTERHUB_API_URL=http://127.0.0.1:{hub_port}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(arg.endswith(b"/hub-culler") for arg in argv[:2]) and api_url in environ:
            found.append(int(entry.name))
    return found


def test_the_hub_runs_the_culler_and_it_stops_an_idle_server(start_hub, tmp_path):
    # The test's own values for what an admin edits; the rest runs as documented. The proxy's
    # ports are chosen when the hub starts: the config reads them from the hub's own settings.
    config = snippet_with(
        HUB_CULLER=repr(str(VENV_BIN / "hub-culler")),
        TIMEOUT='"5s"',
        CULL_EVERY='"2s"',
        PUBLIC_URL='f"http://{c.JupyterHub.ip}:{c.JupyterHub.port}"',
    )
    admin = HubService("admin", ["admin:users", "admin:servers", "read:services",
                                 "read:roles:services"])  # fmt: skip
    hub = start_hub([admin], extra_config=config, spawner="responder")
    hub.create_users(["idle-managed"], "admin")
    hub.start_servers(["idle-managed"], "admin")

    def server_gone() -> bool:
        servers = hub.api("GET", "/users/idle-managed", "admin").json().get("servers", {})
        return "" not in servers

    wait_until(server_gone, 40, f"the hub-managed culler to stop the server:\n{hub.log()[-4000:]}")

    # The culler's pass ends (and is logged) just after the hub has removed the server.
    def pass_that_culled() -> bool:
        return any(re.search(r"\bculled=1\b", line) for line in hub.log().splitlines()
                   if 'msg="pass done"' in line)  # fmt: skip

    wait_until(pass_that_culled, 10, lambda: f"the culler's log of its pass:\n{hub.log()[-4000:]}")
    assert "idle-managed" in hub.log()

    # It is the hub's child, with the documented role, and its token is not in its argv.
    started = hub_cullers(hub.hub_port)
    assert len(started) == 1, started
    argv = Path(f"/proc/{started[0]}/cmdline").read_bytes().split(b"\0")
    environ = Path(f"/proc/{started[0]}/environ").read_bytes().split(b"\0")
    url = next(v for v in environ if v.startswith(b"JUPYTERHUB_API_URL="))
    assert url == f"JUPYTERHUB_API_URL=http://127.0.0.1:{hub.hub_port}/hub/api".encode()
    token = next(v for v in environ if v.startswith(b"JUPYTERHUB_API_TOKEN=")).split(b"=", 1)[1]
    assert token and not any(token in arg for arg in argv)
    assert b"--status-file=" in argv  # no status file: the default path is hub-culler.service's
    service = hub.api("GET", "/services/culler", "admin").json()
    assert service["roles"] == ["hub-culler"], service

    # The hub stops its managed service with itself (SIGINT), and the culler stops cleanly.
    hub.stop()
    assert re.search(r'msg="?stopped"? ', hub.log()), hub.log()[-3000:]
