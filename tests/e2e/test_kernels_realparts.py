"""The busy-kernel helpers (realparts/kernels.py) against a real JupyterHub 6 with real
single-user servers, and the facts about probing a server that the culler relies on."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from hubsidecars.hubapi import parse_time
from realparts.hub import HubService
from realparts.kernels import UserServer
from realparts.waiting import wait_steady

INTERVAL = 5  # the hub copies the proxy's activity every INTERVAL seconds
CONFIG = f"c.JupyterHub.last_activity_interval = {INTERVAL}\n"
PROBER_SCOPES = ["list:users", "read:users:activity", "read:servers", "access:servers"]


def services() -> list[HubService]:
    return [
        HubService("admin", ["admin:users", "admin:servers", "access:servers"]),
        HubService("prober", PROBER_SCOPES),
        HubService("blind", ["list:users", "read:users:activity", "read:servers"]),
    ]


@pytest.fixture(scope="module")
def hub(start_module_hub):
    hub = start_module_hub(services(), CONFIG, spawner="simple")
    hub.create_users(["ada"], "admin")
    hub.start_servers(["ada"], "admin", timeout=90)
    return hub


@pytest.fixture
def ada(hub):
    """ada's server, reached without the proxy so setting up kernels leaves the hub's view
    alone; every kernel and terminal started in a test is shut down after it."""
    server = UserServer.direct(hub, "ada", "prober")
    yield server
    for kernel in server.kernels():
        server.shutdown_kernel(kernel["id"])
    for terminal in server.terminals():
        server.shutdown_terminal(terminal["name"])


def hub_activity(hub, name: str = "ada") -> str:
    return hub.api("GET", f"/users/{name}", "prober").json()["servers"][""]["last_activity"]


def test_a_kernel_left_running_a_long_cell_with_no_client_stays_busy(ada):
    kernel = ada.start_kernel()
    ada.wait_ready(kernel["id"])
    busy = ada.make_busy(kernel["id"])
    assert busy["execution_state"] == "busy" and busy["connections"] == 0

    time.sleep(4)
    [listed] = ada.kernels()
    assert listed["execution_state"] == "busy" and listed["connections"] == 0
    assert ada.status()["kernels"] == 1

    idle = ada.interrupt(kernel["id"])
    assert idle["execution_state"] == "idle" and idle["connections"] == 0
    # the interrupt's messages are kernel activity
    assert parse_time(idle["last_activity"]) > parse_time(busy["last_activity"])


def test_a_kernel_nobody_connected_to_reports_starting_however_long_it_has_been_up(ada):
    kernel = ada.start_kernel()
    assert kernel["execution_state"] == "starting" and kernel["connections"] == 0
    time.sleep(5)  # a python3 kernel is up in about a second here
    assert ada.kernel(kernel["id"])["execution_state"] == "starting"
    assert ada.wait_ready(kernel["id"])["execution_state"] == "idle"


def test_listing_moves_no_kernel_or_terminal_last_activity(hub, ada):
    kernel = ada.make_busy(ada.wait_ready(ada.start_kernel()["id"])["id"])
    assert set(ada.start_terminal()) == {"name", "last_activity"}
    # the shell's prompt is terminal output: it moves last_activity once
    [terminal] = wait_steady(ada.terminals, 1.5, 30, "the terminal's last_activity")
    # asked the way a culler would, through the proxy, with activity tracking left on
    public = UserServer.through_proxy(hub, "ada", "prober", track_activity=True)
    for _ in range(3):
        time.sleep(1)
        assert public.kernels() == [kernel]
        assert public.terminals() == [terminal]
    assert kernel["last_activity"].endswith("Z") and parse_time(kernel["last_activity"])


def test_only_tracked_requests_move_the_servers_own_last_activity(hub, ada):
    before = ada.status()["last_activity"]
    time.sleep(0.5)
    ada.kernels()  # no_track_activity=1
    assert ada.status()["last_activity"] == before

    tracked = UserServer.direct(hub, "ada", "prober", track_activity=True)
    asked = datetime.now(UTC)
    tracked.kernels()
    assert parse_time(ada.status()["last_activity"]) >= asked


def test_a_probe_through_the_proxy_is_activity_unless_refused_or_unchanged(hub):
    """What moves the hub's last_activity of a server: a 2xx answer through the proxy does,
    a 403 (token without access:servers), a 304 (If-None-Match) or a request that bypasses
    the proxy do not."""
    public = UserServer.through_proxy(hub, "ada", "prober")
    blind = UserServer.through_proxy(hub, "ada", "blind")
    etag = public.request("GET", "api/kernels").headers["Etag"]
    # the hub has copied that request's activity from the proxy, and nothing moves it now
    quiet = wait_steady(lambda: hub_activity(hub), INTERVAL + 1, 60, "the hub's activity")

    assert blind.request("GET", "api/kernels").status_code == 403
    unchanged = public.request("GET", "api/kernels", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    UserServer.direct(hub, "ada", "prober").kernels()
    time.sleep(2 * INTERVAL + 1)
    assert hub_activity(hub) == quiet

    asked = datetime.now(UTC)
    assert public.request("GET", "api/kernels").status_code == 200
    answered = datetime.now(UTC)
    deadline = time.monotonic() + 2 * INTERVAL + 1
    while hub_activity(hub) == quiet:
        assert time.monotonic() < deadline, "the probe never showed in the hub"
        time.sleep(0.2)
    seen = parse_time(hub_activity(hub))
    # The proxy stamps the route (in milliseconds) once the answer is sent, which it may
    # notice a moment after the client has read it.
    assert asked.replace(microsecond=asked.microsecond // 1000 * 1000) <= seen
    assert seen <= answered + timedelta(seconds=2)


def test_what_a_probe_gets_without_access_and_from_a_stopped_server(hub):
    reply = UserServer.through_proxy(hub, "ada", "blind").request("GET", "api/kernels")
    assert reply.status_code == 403
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json() == {"message": "Forbidden", "reason": None}

    hub.create_users(["cyd"], "admin")
    hub.start_servers(["cyd"], "admin", timeout=90)
    assert UserServer.through_proxy(hub, "cyd", "prober").kernels() == []
    assert hub.api("DELETE", "/users/cyd/server", "admin").status_code in (202, 204)

    for service in ("prober", "blind"):
        stopped = UserServer.through_proxy(hub, "cyd", service)
        reply = stopped.request("GET", "api/kernels")
        assert reply.status_code == 302
        assert reply.headers["Location"] == "/hub/user/cyd/api/kernels?no_track_activity=1"
    followed = UserServer.through_proxy(hub, "cyd", "prober").request(
        "GET", "api/kernels", allow_redirects=True
    )
    assert followed.status_code == 424
    assert followed.json()["message"].startswith("JupyterHub server no longer running")
    hidden = UserServer.through_proxy(hub, "cyd", "blind").request(
        "GET", "api/kernels", allow_redirects=True
    )
    assert hidden.status_code == 404  # the hub does not tell a stranger the user exists


def test_servers_of_several_users_run_kernels_at_once(hub):
    hub.create_users(["eve", "fay"], "admin")
    started = time.monotonic()
    hub.start_servers(["eve", "fay"], "admin", timeout=90)  # both spawns at once
    print(f"two simple-spawner servers ready {time.monotonic() - started:.1f} s after start")
    servers = [UserServer.direct(hub, name, "prober") for name in ("eve", "fay")]
    with ThreadPoolExecutor(2) as pool:
        kernels = list(pool.map(lambda s: s.make_busy(s.wait_ready(s.start_kernel()["id"])["id"]),
                                servers))  # fmt: skip
    assert [k["execution_state"] for k in kernels] == ["busy", "busy"]
    for server, kernel in zip(servers, kernels, strict=True):
        server.shutdown_kernel(kernel["id"])
        assert server.kernels() == []
    for name in ("eve", "fay"):
        assert hub.api("DELETE", f"/users/{name}/server", "admin").status_code in (202, 204)
