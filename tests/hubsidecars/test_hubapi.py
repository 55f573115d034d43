"""The hub API client against real JupyterHubs 4, 5 and 6 (responder spawner: real hub state,
no per-user processes), plus a listener that accepts and never answers for timeouts."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests

from hubsidecars.config import ConfigError
from hubsidecars.hubapi import (
    HubClient,
    HubUnavailable,
    MissingScope,
    TokenRejected,
    load_token,
    parse_time,
)
from realparts.hub import HubService

pytestmark = pytest.mark.realhub

USERS = [f"student{i:03d}" for i in range(250)]
RUNNING = USERS[:12]
SLOW_STOPPER = "slowstop"
CONFIG = f"""
c.JupyterHub.allow_named_servers = True
# a stop slower than this makes the hub answer 202 (it is 10 s by default)
c.JupyterHub.tornado_settings = {{"slow_stop_timeout": 0.5}}
c.ResponderSpawner.stop_delays = {{{SLOW_STOPPER!r}: 3}}
"""


def services() -> list[HubService]:
    return [
        HubService("admin", ["admin:users", "admin:servers", "access:servers", "admin:groups"]),
        # what a culler minimally has: no read:users, so no `created`
        HubService("watcher", ["list:users", "read:users:activity", "read:servers"]),
        HubService("nobody", ["read:hub"]),
    ]


@pytest.fixture(scope="module", params=["6", "5", "4"])
def hub(request, start_module_hub):
    """One hub per JupyterHub version, shared by the module's tests for that version: 250
    users, the first 12 with a running (responder) server."""
    hub = start_module_hub(services(), CONFIG, spawner="responder", version=request.param)
    hub.create_users(USERS + [SLOW_STOPPER], "admin")
    hub.start_servers(RUNNING, "admin")
    yield hub
    hub.close()


def client(hub, service="admin", **options) -> HubClient:
    return HubClient(hub.api_url, hub.token(service), **options)


def test_the_client_talks_to_the_hub_version_it_was_started_with(hub):
    assert client(hub, "nobody").version().split(".")[0] == hub.version


def test_lists_every_user_across_pages_without_duplicates(hub):
    api = client(hub)
    names = [user.name for user in api.iter_users()]
    assert len(names) == len(set(names)) == len(USERS) + 1
    assert set(names) == set(USERS) | {SLOW_STOPPER}
    # 251 users in pages of at most 200: two requests, the hub capping the plain list at 200
    assert api.requests_made == 2

    small_pages = client(hub, page_size=100)
    assert [user.name for user in small_pages.iter_users()] == names
    assert small_pages.requests_made == 3


def test_state_filters_list_only_users_with_running_servers(hub):
    api = client(hub)
    ready = list(api.iter_users(state="ready"))
    assert sorted(user.name for user in ready) == RUNNING
    assert sorted(user.name for user in api.iter_users(state="active")) == RUNNING
    inactive = {user.name for user in api.iter_users(state="inactive")}
    assert inactive == set(USERS[len(RUNNING) :]) | {SLOW_STOPPER}

    server = ready[0].servers[""]
    assert (server.user, server.name, server.url) == (ready[0].name, "", f"/user/{ready[0].name}/")
    assert server.ready is True and server.pending is None
    now = datetime.now(UTC)
    assert now - timedelta(minutes=10) < server.started <= now
    assert server.last_activity.tzinfo is not None and server.hidden == frozenset()


def test_fields_hidden_by_scopes_are_none_and_named(hub):
    full = client(hub).get_user(RUNNING[0])
    assert full.created is not None and full.hidden == frozenset()
    assert full.created.tzinfo is not None

    watcher = client(hub, "watcher").get_user(RUNNING[0])
    assert watcher.created is None and "created" in watcher.hidden
    assert watcher.last_activity == full.last_activity
    assert watcher.servers[""].started == full.servers[""].started


def test_a_missing_scope_names_the_scope_the_hub_wants(hub):
    with pytest.raises(MissingScope) as listing:
        list(client(hub, "nobody").iter_users())
    assert listing.value.scopes == ("list:users",) and listing.value.status == 403
    assert "list:users" in str(listing.value)

    with pytest.raises(MissingScope) as stopping:
        client(hub, "watcher").stop_server(RUNNING[0])
    assert stopping.value.scopes == ("delete:servers",)


def test_an_unknown_token_is_rejected_as_such(hub):
    bad = HubClient(hub.api_url, "not-a-token-the-hub-knows-0123456789")
    with pytest.raises(TokenRejected) as rejected:
        list(bad.iter_users())
    assert rejected.value.status == 403


def test_get_user_of_an_unknown_user_is_none(hub):
    assert client(hub).get_user("nobody-by-that-name") is None


def test_stop_server_stops_it_and_says_absent_when_there_is_nothing(hub):
    api = client(hub)
    name = RUNNING[-1]
    assert api.get_user(name).servers[""].ready
    assert api.stop_server(name) == "stopped"
    assert api.get_user(name).servers == {}
    assert api.stop_server("nobody-by-that-name") == "absent"
    assert api.stop_server(name, "no-such-server") == "absent"


def test_stop_server_removes_a_named_server(hub):
    api = client(hub)
    hub.start_servers([USERS[100]], "admin", server_name="lab")
    assert api.get_user(USERS[100]).servers["lab"].ready
    assert api.stop_server(USERS[100], "lab", remove=True) == "stopped"
    assert "lab" not in api.get_user(USERS[100]).servers
    # removed, not just stopped: a second stop finds no such server
    assert api.stop_server(USERS[100], "lab") == "absent"


def test_a_slow_stop_is_reported_as_stopping_until_it_is_done(hub):
    api = client(hub)
    hub.start_servers([SLOW_STOPPER], "admin")
    assert api.stop_server(SLOW_STOPPER) == "stopping"
    assert api.get_user(SLOW_STOPPER).servers[""].pending == "stop"
    deadline = time.monotonic() + 20
    while api.get_user(SLOW_STOPPER).servers and time.monotonic() < deadline:
        time.sleep(0.3)
    assert api.get_user(SLOW_STOPPER).servers == {}


def test_delete_user(hub):
    api = client(hub)
    hub.create_users(["leaver"], "admin")
    assert api.delete_user("leaver") is True
    assert api.get_user("leaver") is None
    assert api.delete_user("leaver") is False


def test_reaches_a_users_server_through_the_proxy_with_the_same_token(hub):
    api = client(hub)
    server = api.get_user(RUNNING[0]).servers[""]
    before = requests.get(hub.responder_url("/_responder/requests"), timeout=5).json()
    kernels = [{"id": "k1", "execution_state": "busy", "last_activity": "2024-01-01T00:00:00Z"}]
    requests.put(hub.responder_url(f"/_responder/users/{RUNNING[0]}/kernels"), json=kernels,
                 timeout=5)  # fmt: skip
    assert api.user_server_json(server, "api/kernels") == kernels
    after = requests.get(hub.responder_url("/_responder/requests"), timeout=5).json()
    assert after[RUNNING[0]] == before.get(RUNNING[0], 0) + 1


def test_groups_with_their_members(hub):
    api = client(hub)
    reply = api.request("POST", "/groups/lab-a", json={"users": RUNNING[:3]})
    assert reply.status_code == 201
    groups = {group.name: group for group in api.iter_groups()}
    assert groups["lab-a"].users == tuple(RUNNING[:3])
    assert set(api.get_user(RUNNING[0]).groups) == {"lab-a"}


# Last for each hub: it stops and restarts the hub.
def test_retries_with_backoff_then_works_again_after_a_hub_restart(hub, caplog):
    caplog.set_level(logging.WARNING, logger="hubsidecars.hubapi")
    api = client(hub, retries=3, backoff=0.2, timeout=5)
    assert api.get_user(RUNNING[0]) is not None

    # The hub dies, its proxy stays: the proxy answers 503, retried three times.
    os.kill(hub.process.process.pid, signal.SIGKILL)
    hub.process.process.wait()
    started, before = time.monotonic(), api.requests_made
    with pytest.raises(HubUnavailable) as proxied:
        api.get_user(RUNNING[0])
    waited_503 = time.monotonic() - started
    assert proxied.value.status == 503
    assert api.requests_made - before == 4
    assert 0.2 + 0.4 + 0.8 <= waited_503 < 8

    # Nothing listens any more: connection refused, retried as well.
    hub.stop()
    started, before = time.monotonic(), api.requests_made
    with pytest.raises(HubUnavailable) as refused:
        list(api.iter_users())
    waited_refused = time.monotonic() - started
    assert refused.value.status is None and "Connection refused" in str(refused.value)
    assert api.requests_made - before == 4
    assert 1.4 <= waited_refused < 8

    retry_lines = [r for r in caplog.records if r.getMessage() == "hub request failed, retrying"]
    assert [r.hub_fields["attempt"] for r in retry_lines] == [1, 2, 3, 1, 2, 3]
    assert [r.hub_fields["retry_in_s"] for r in retry_lines] == [0.2, 0.4, 0.8] * 2

    # The same client, patient enough, rides out a hub restart.
    patient = client(hub, retries=120, backoff=0.25, backoff_max=0.5, timeout=5)  # a minute
    with ThreadPoolExecutor(1) as pool:
        restart = pool.submit(hub.start)
        assert [user.name for user in patient.iter_users()].count(RUNNING[0]) == 1
        restart.result()  # (a hub that failed to start says why here)
    assert patient.requests_made > 2  # it did have to retry

    text = caplog.text + str(proxied.value) + str(refused.value) + repr(api)
    for service in hub.services.values():
        assert service.token not in text
    print(f"\nhub {hub.version}: started in {hub.start_seconds:.1f} s; "
          f"3 retries took {waited_503:.2f} s (503) and {waited_refused:.2f} s (refused)")  # fmt: skip


@pytest.fixture
def silent_listener():
    """A TCP socket that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hub/api"


def test_a_hub_that_never_answers_times_out_after_the_retries(silent_listener):
    api = HubClient(silent_listener, "t" * 32, timeout=0.3, retries=2, backoff=0.1)
    started = time.monotonic()
    with pytest.raises(HubUnavailable) as error:
        api.get_user("ada")
    waited = time.monotonic() - started
    assert "ReadTimeout" in str(error.value) and api.requests_made == 3
    assert 3 * 0.3 + 0.1 + 0.2 <= waited < 5


def test_a_post_that_may_have_arrived_is_not_sent_twice(silent_listener):
    api = HubClient(silent_listener, "t" * 32, timeout=0.3, retries=3, backoff=0.1)
    with pytest.raises(HubUnavailable):
        api.request("POST", "/users/ada")
    assert api.requests_made == 1


def test_token_from_file_credential_or_environment(tmp_path):
    token = "0123456789abcdef0123456789abcdef"
    path = tmp_path / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    assert load_token(str(path), environ={}) == token

    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "hub-api-token").write_text(token)
    (creds / "hub-api-token").chmod(0o600)
    assert load_token(None, environ={"CREDENTIALS_DIRECTORY": str(creds)}) == token

    environ = {"JUPYTERHUB_API_TOKEN": token}
    assert load_token(None, environ=environ) == token
    assert "JUPYTERHUB_API_TOKEN" not in environ  # children never inherit it

    with pytest.raises(ConfigError, match="JUPYTERHUB_API_TOKEN"):
        load_token(None, environ={})


def test_timestamps_of_every_hub_version_are_aware():
    assert parse_time("2024-05-01T10:00:00.123456Z") == datetime(
        2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC
    )
    assert parse_time("2024-05-01T10:00:00+00:00").tzinfo is not None
    assert parse_time("2024-05-01T10:00:00").tzinfo == UTC
    assert parse_time(None) is None


@pytest.mark.parametrize("version", ["6", "5", "4"])
def test_reaches_a_real_single_user_server_of_each_hub_version(start_hub, version):
    """What the culler asks a user's server (api/kernels, api/status), from a real
    jupyterhub-singleuser of the same JupyterHub version, through the proxy."""
    hub = start_hub([HubService("admin", ["admin:users", "admin:servers", "access:servers"])],
                    spawner="simple", version=version)  # fmt: skip
    hub.create_users(["ada"], "admin")
    hub.start_servers(["ada"], "admin", timeout=90)
    api = client(hub)
    server = api.get_user("ada").servers[""]
    assert server.ready and server.url == "/user/ada/"
    assert api.user_server_json(server, "api/kernels") == []
    status = api.user_server_json(server, "api/status")
    assert status["kernels"] == 0 and parse_time(status["last_activity"]).tzinfo is not None
    assert api.user_server_json(server, "api/no-such-route") is None
    assert api.stop_server("ada") == "stopped"
