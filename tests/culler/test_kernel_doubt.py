"""When a server cannot say what its kernels do, and what a dry run leaves behind: real
single-user servers (jupyter_server with ipykernel) behind a real proxy, a real kernel running
`time.sleep(600)`.

Only a definite answer about the kernels may let an idle-looking server be stopped: a redirect
(the question reached the hub instead of the server) keeps it for the pass. A dry run asks no
server, so it moves no activity the daemon would then see, and writes no state file.
"""

from __future__ import annotations

import time

import pytest

from realparts.culler import CULLER_SCOPES, run_once, running
from realparts.hub import HubService
from realparts.kernels import UserServer

pytestmark = pytest.mark.realhub

TIMEOUT = 5
CONFIG = "c.JupyterHub.last_activity_interval = 2\n"


@pytest.fixture(scope="module")
def hub(start_module_hub):
    return start_module_hub([
        HubService("admin", ["admin:users", "admin:servers", "access:servers"]),
        HubService("culler", CULLER_SCOPES),
    ], CONFIG, spawner="simple")  # fmt: skip


def decisions(run) -> dict[str, str]:
    return {d["target"]: d["result"] for d in run.status["decisions"]}


def server_activity(hub, name: str) -> str:
    return hub.api("GET", f"/users/{name}", "admin").json()["servers"][""]["last_activity"]


def test_a_busy_kernel_is_kept_when_the_question_reaches_the_hub_instead(hub, tmp_path):
    """--url at the hub's own port (as $JUPYTERHUB_API_URL gives a hub-managed service) makes
    the default public URL the hub's: the hub answers the kernel question with a redirect.
    The old culler took that for "gone" and stopped a server computing for ten minutes."""
    hub.create_users(["rho"], "admin")
    hub.start_servers(["rho"], "admin", timeout=120)
    server = UserServer.direct(hub, "rho", "admin")  # behind the proxy's back
    kernel = server.start_kernel()
    server.wait_ready(kernel["id"])
    server.make_busy(kernel["id"])  # time.sleep(600)
    time.sleep(TIMEOUT + 1)

    own = f"http://127.0.0.1:{hub.hub_port}/hub/api"
    run = run_once(hub, "culler", tmp_path, "--url", own, "--timeout", str(TIMEOUT),
                   JUPYTERHUB_API_URL=own)  # fmt: skip

    assert run.returncode == 0, run.log
    assert decisions(run) == {"rho": "kept-busy"}, run.log
    assert running(hub, "rho")
    assert server.kernel(kernel["id"])["execution_state"] == "busy"
    [warning] = [line for line in run.lines("cannot ask a server about its kernels")
                 if "level=warning" in line]  # fmt: skip
    assert "target=rho" in warning and "kind=redirect" in warning and "302" in warning
    # said at start, before any pass: the public URL is the hub's own, not the proxy's
    [start] = run.lines("public URL is the hub API's own address")
    assert "level=warning" in start
    assert run.log.index(start) < run.log.index(warning)

    # through the proxy, the same server answers: its kernel is busy, kept for that reason
    asked = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT))
    assert decisions(asked) == {"rho": "kept-busy"}, asked.log
    assert "1 kernel(s) busy" in asked.lines("target=rho")[0]
    assert asked.lines("public URL is the hub API's own address") == []
    server.interrupt(kernel["id"])


def test_a_dry_run_moves_no_activity_and_writes_no_state(hub, tmp_path, docker_engine):
    """A dry run scheduled more often than --timeout used to keep idle servers alive for the
    daemon: its kernel questions went through the proxy, which the hub counts as activity."""
    hub.create_users(["dee"], "admin")
    hub.start_servers(["dee"], "admin", timeout=120)
    time.sleep(TIMEOUT + 1)
    before = server_activity(hub, "dee")

    state = tmp_path / "docker-state.json"
    dry = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--dry-run",
                   "--exclude-users", "rho", "--docker", "--docker-state-file", str(state))  # fmt: skip
    assert dry.returncode == 0, dry.log
    assert decisions(dry)["dee"] == "would-cull", dry.log
    assert "kernels not asked" in dry.lines("target=dee")[0]
    assert not state.exists(), "the dry run wrote a Docker state file"
    assert not (tmp_path / "probe-marks.json").exists()
    time.sleep(3)  # the hub copies the proxy's activity every 2 s
    assert server_activity(hub, "dee") == before, "the dry run counted as dee's activity"

    # so the daemon's next pass culls the server, whose user did nothing
    real = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--exclude-users", "rho")
    assert decisions(real)["dee"] == "culled", real.log
    assert not running(hub, "dee")
