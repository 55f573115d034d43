"""jupyterhub/jupyterhub#1498 against the real thing: real single-user servers (jupyter_server
with ipykernel) behind a real proxy, a kernel left running a long cell with no browser.

idle-culler stops such a server (the hub saw no network activity); hub-culler asks the server
and keeps it while the kernel works, stops it once the kernel is idle, and without the scope
to ask it falls back to the hub's view, saying so once.
"""

from __future__ import annotations

import time

import pytest

from realparts.culler import CULLER_SCOPES, run_once, running
from realparts.hub import HubService, idle_seconds
from realparts.kernels import UserServer
from realparts.waiting import wait_until

pytestmark = pytest.mark.realhub

TIMEOUT = 5
CONFIG = "c.JupyterHub.last_activity_interval = 2\n"
FALLBACK = "cannot ask servers about their kernels"


def services() -> list[HubService]:
    blind = [scope for scope in CULLER_SCOPES if scope != "tokens"]
    return [
        HubService("admin", ["admin:users", "admin:servers", "access:servers"]),
        HubService("culler", CULLER_SCOPES),
        HubService("blind-culler", blind),
    ]


def decisions(run) -> dict[str, str]:
    return {d["target"]: d["result"] for d in run.status["decisions"]}


def test_a_kernel_computing_with_no_browser_keeps_its_server_until_it_is_idle(
    start_module_hub, tmp_path
):
    hub = start_module_hub(services(), CONFIG, spawner="simple")
    hub.create_users(["kim", "lee", "max"], "admin")
    hub.start_servers(["kim", "lee", "max"], "admin", timeout=120)
    kernels = {}
    for name in ("kim", "lee", "max"):
        # set up behind the proxy's back: the hub sees no activity from it
        server = UserServer.direct(hub, name, "admin")
        kernel = server.start_kernel()
        server.wait_ready(kernel["id"])
        server.make_busy(kernel["id"])
        kernels[name] = (server, kernel["id"])
    time.sleep(TIMEOUT + 1)

    # 1. All look idle to the hub, but their kernels are busy: all kept.
    kept = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT))
    assert kept.returncode == 0, kept.log
    assert decisions(kept) == {"kim": "kept-busy", "lee": "kept-busy", "max": "kept-busy"}, kept.log
    [line] = kept.lines("target=kim")
    assert "1 kernel(s) busy" in line
    assert running(hub, "kim") and running(hub, "lee") and running(hub, "max")
    assert kept.lines(FALLBACK) == []

    # 2. Without the tokens scope the servers cannot be asked (the culler never sends its own
    #    token to a user's server): the hub's view decides (a busy kernel does not save lee),
    #    and the log says so once. (A dry run would not show it: it asks no server.)
    blind = run_once(hub, "blind-culler", tmp_path, "--timeout", str(TIMEOUT),
                     "--exclude-users", "kim,max")  # fmt: skip
    assert blind.returncode == 0, blind.log
    assert decisions(blind) == {"kim": "skipped", "lee": "culled", "max": "skipped"}, blind.log
    [warning] = [line for line in blind.lines(FALLBACK) if "level=warning" in line]
    assert "tokens scope" in warning
    assert running(hub, "kim") and not running(hub, "lee")

    # 3. With the check turned off, a busy kernel does not save its server.
    unchecked = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--no-check-kernels",
                         "--exclude-users", "kim")  # fmt: skip
    assert decisions(unchecked)["max"] == "culled", unchecked.log
    assert not running(hub, "max")

    # 4. kim's cell is interrupted: the kernel is idle, and once that is TIMEOUT old the
    #    same server is culled, although the culler's own questions went through the proxy.
    server, kernel_id = kernels["kim"]
    # This pass's timeout is longer than TIMEOUT, so that a culler slow to start on a loaded
    # machine does not find the interrupt already too old; kim's server is idle in the hub's
    # view for longer than that timeout.
    wait_until(lambda: idle_seconds(hub, "kim") > 4 * TIMEOUT, 60, "kim idle in the hub")
    server.interrupt(kernel_id)
    recent = run_once(hub, "culler", tmp_path, "--timeout", str(3 * TIMEOUT))
    assert decisions(recent)["kim"] == "kept-busy", recent.log
    assert "active" in recent.lines("target=kim")[0]
    time.sleep(TIMEOUT + 1)
    culled = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT))
    assert decisions(culled)["kim"] == "culled", culled.log
    assert "1 kernel(s) idle" in culled.lines("target=kim")[0]
    assert not running(hub, "kim")
