"""hub-culler attacked: hostile users' servers, a broken or hostile hub, planted files, leaked
secrets. Tests of what holds are plain tests (they guard it); every defect found is a
`xfail(strict=True)` test named after what a user would notice, with the defect in its reason.

The real hub's users' servers are all one `HostileServer` on loopback (the responder spawner's
URL pointed at it), so each user's server can misbehave in its own way behind the real proxy,
as a user who controls their own single-user server can make it. Where a real hub cannot be
made to misbehave, the `HostileServer` plays the hub itself.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from urllib.parse import quote

import pytest
import requests

from realparts.culler import CULLER, CULLER_SCOPES, CullerDaemon, culler_env, run_once
from realparts.hostile import (
    Gigantic,
    HostileServer,
    answer_json,
    answer_raw,
    half_body,
)
from realparts.hub import HubService
from realparts.waiting import wait_until

pytestmark = pytest.mark.realhub

TIMEOUT = 3


@pytest.fixture(scope="module")
def hostile():
    server = HostileServer().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def hub(start_module_hub, hostile):
    services = [
        HubService("admin", ["admin:users", "admin:servers", "access:servers", "tokens"]),
        HubService("culler", CULLER_SCOPES),
    ]
    # every user's server is the hostile server (this line comes after the responder's own)
    config = (f"c.ResponderSpawner.responder_url = {hostile.url!r}\n"
              "c.JupyterHub.allow_named_servers = True\n")
    return start_module_hub(services, config, spawner="responder")


@pytest.fixture(autouse=True)
def _stop_servers_after(request):
    """Each test starts from a hub without running servers: a hostile server left running
    would be asked again by the next test's pass."""
    yield
    if "hub" in request.fixturenames:
        hub = request.getfixturevalue("hub")
        for user in hub.list_users("admin", state="active"):
            name = quote(user["name"], safe="")
            for server in user.get("servers", {}):
                path = f"/users/{name}/servers/{quote(server, safe='')}" if server else (
                    f"/users/{name}/server")
                hub.api("DELETE", path, "admin")


def start(hub, *names: str) -> None:
    hub.create_users(list(names), "admin")
    hub.start_servers(list(names), "admin")


def running(hub, name: str) -> bool:
    return "" in hub.api("GET", f"/users/{name}", "admin").json().get("servers", {})


def decisions(run) -> dict[str, str]:
    return {d["target"]: d["result"] for d in run.status["decisions"]}


def mine(run, names) -> dict[str, str]:
    return {target: result for target, result in decisions(run).items() if target in names}


# -- a user's own server against the culler ---------------------------------------------------


def test_a_user_server_never_receives_a_token_that_stops_other_users_servers(
    hub, hostile, tmp_path
):
    start(hub, "mallory", "alice")
    hub.api("POST", "/users/alice/activity", "admin", json={
        "last_activity": _future(), "servers": {"": {"last_activity": _future()}}})  # fmt: skip
    time.sleep(TIMEOUT + 0.5)

    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT))
    assert run.returncode == 0, run.log
    harvested = {seen.headers.get("authorization", "")
                 for seen in hostile.requests_to("/user/mallory/")} - {""}  # fmt: skip
    assert harvested, "the culler did not ask mallory's server at all"

    # mallory tries every credential her server was sent against alice's server
    for header in harvested:
        token = header.split(None, 1)[-1]
        reply = requests.delete(f"{hub.api_url}/users/alice/server", timeout=30,
                                headers={"Authorization": f"token {token}"})  # fmt: skip
        assert reply.status_code in (401, 403), (reply.status_code, "mallory stopped alice")
    assert running(hub, "alice")


def test_a_stalled_server_costs_one_probe_timeout_is_kept_and_others_go_on(
    hub, hostile, tmp_path
):
    names = [f"stall{n}" for n in range(6)]
    for name in names:
        hostile.users[name] = {"api/kernels": hostile.stalled()}
    start(hub, *names, "calm0")
    time.sleep(TIMEOUT + 0.5)

    started = time.monotonic()
    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--probe-timeout", "2",
                   "--concurrency", "10", timeout=60)  # fmt: skip
    took = time.monotonic() - started

    assert run.returncode == 0, run.log
    # six 2 s timeouts side by side, not one after another (that would be 12 s)
    assert run.status["duration_s"] < 10, run.status
    assert took < 25
    # a server that does not answer may have a kernel at work: kept this pass, with a warning
    # each, naming why; the one that answered is culled
    assert mine(run, [*names, "calm0"]) == {**dict.fromkeys(names, "kept-busy"),
                                            "calm0": "culled"}, run.log  # fmt: skip
    warnings = [line for line in run.lines("cannot ask a server about its kernels")
                if "level=warning" in line]  # fmt: skip
    assert len(warnings) == 6 and all("kind=timeout" in line for line in warnings), run.log
    assert all(running(hub, name) for name in names)


def test_a_dribbling_server_cannot_hold_the_pass(hub, hostile, tmp_path):
    hostile.users["dribbler"] = {"api/kernels": hostile.dribble(0.5)}
    start(hub, "dribbler", "bystander")
    time.sleep(TIMEOUT + 0.5)

    started = time.monotonic()
    try:
        run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--probe-timeout",
                       "2", timeout=30)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the pass was still running 30 s after it began (probe timeout 2 s)")
    assert time.monotonic() - started < 25  # the subprocess timeout is 30 s or more
    assert run.returncode == 0 and decisions(run)["bystander"] == "culled", run.log
    assert decisions(run)["dribbler"] == "kept-busy", run.log


SAYS_NOTHING = {
    "html": answer_raw(b"<html><body>Jupyter</body></html>"),
    "notalist": answer_json({"kernels": 3}),
    "halfbody": half_body,
    "err500": answer_json({"message": "boom"}, 500),
    "err502": answer_raw(b"bad gateway", 502, "text/plain"),
    "redirect": answer_raw(b"", 302, "text/plain"),
    "nulls": answer_json(None),
    "nested": answer_raw(b"[" * 200_000, 200, "application/json"),
    "nested500": answer_raw(b"[" * 200_000, 500, "application/json"),
}


def test_answers_that_say_nothing_about_kernels_keep_the_server_for_the_pass(
    hub, hostile, tmp_path
):
    """A redirect, a 5xx, a broken or hostile body: the kernels may be at work. The server
    is kept (a warning each, with the reason) and no answer fails the pass; 200,000 nested
    `[` (a RecursionError in Python's JSON parser) included."""
    for name, behaviour in SAYS_NOTHING.items():
        hostile.users[name] = {"api/kernels": behaviour}
    start(hub, *SAYS_NOTHING)
    time.sleep(TIMEOUT + 0.5)

    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--probe-timeout", "3",
                   timeout=90)  # fmt: skip

    assert run.returncode == 0, run.log
    assert mine(run, SAYS_NOTHING) == dict.fromkeys(SAYS_NOTHING, "kept-busy"), run.log
    assert "Traceback" not in run.log and "pass failed" not in run.log
    assert all(running(hub, name) for name in SAYS_NOTHING)
    [nested] = [line for line in run.lines("target=nested ") if "level=warning" in line]
    assert "RecursionError" in nested, nested

    # ... but not for ever: once the hub has seen nothing for max_busy, they are stopped
    again = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--probe-timeout",
                     "3", "--max-busy", str(TIMEOUT), timeout=90)  # fmt: skip
    assert again.returncode == 0, again.log
    assert mine(again, SAYS_NOTHING) == dict.fromkeys(SAYS_NOTHING, "culled"), again.log
    assert "max_busy" in again.lines("target=redirect")[0]


def test_definite_answers_about_kernels_let_the_hub_decide(hub, hostile, tmp_path):
    """A list of kernels (however odd its items) is an answer; a 404 from the server itself
    (not the hub behind the proxy) says it is no jupyter_server: the hub's activity decides."""
    definite = {
        "junkitems": answer_json([1, "x", None, [], {"execution_state": ["busy"]}]),
        "badtimes": answer_json([{"id": "k", "execution_state": "idle",
                                  "last_activity": "yesterday"}]),  # fmt: skip
        "nokernelapi": answer_raw(b"<h1>Not Found</h1>", 404, as_hub=False),
    }
    for name, behaviour in definite.items():
        hostile.users[name] = {"api/kernels": behaviour}
    start(hub, *definite)
    time.sleep(TIMEOUT + 0.5)

    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), timeout=90)

    assert run.returncode == 0, run.log
    assert mine(run, definite) == dict.fromkeys(definite, "culled"), run.log
    assert len(run.lines("has no kernel API")) == 1, run.log
    assert not any(running(hub, name) for name in definite)


def test_a_pass_longer_than_its_interval_is_one_line_not_a_warning_per_tick(
    hub, hostile, tmp_path
):
    """A pass held 6 s by a stalled server, with --cull-every 1: the scheduler's ticks that
    fall inside it are skipped (passes never overlap) and said in one line, not one
    APScheduler warning each."""
    hostile.users["slowpoke"] = {"api/kernels": hostile.stalled()}
    start(hub, "slowpoke")
    time.sleep(TIMEOUT + 0.5)
    daemon = CullerDaemon(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--cull-every",
                          "1", "--probe-timeout", "6")  # fmt: skip
    daemon.start()
    try:
        wait_until(lambda: 'msg="pass done"' in daemon.log(), 40, daemon.log)
    finally:
        daemon.stop()
    log = daemon.log()
    assert "maximum number of running instances" not in log, log
    lines = log.splitlines()
    first_done = next(n for n, line in enumerate(lines) if 'msg="pass done"' in line)
    [overran] = [line for line in lines[: first_done + 1] if "overran" in line]
    assert "skipped" in overran and "level=warning" in overran, overran


def test_a_gigantic_answer_is_not_read_whole(hub, hostile, tmp_path):
    giant = Gigantic(32 * 1024 * 1024)
    hostile.users["giant"] = {"api/kernels": giant}
    start(hub, "giant")
    time.sleep(TIMEOUT + 0.5)

    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), timeout=90)

    assert run.returncode == 0, run.log
    # an oversized answer says nothing about the kernels: kept for this pass
    assert decisions(run)["giant"] == "kept-busy", run.log
    # The culler stops reading after 1 MB. What the server manages to write is more: the
    # proxy's and the kernel's socket buffers on loopback take several MB before the writes
    # block (5.3 MB here); far less than the 32 MB answer the culler used to read whole.
    assert giant.sent < 12 * 1024 * 1024, f"the culler read {giant.sent} bytes of api/kernels"
    assert "larger than 1048576 bytes" in run.log


def test_odd_user_and_server_names_the_hub_accepts_are_culled(hub, tmp_path):
    wanted = ["a b", "ünï", "dot.dot", "a@b", "q?x=1", "x" * 200, "..", "a/b", "%2e%2e"]
    accepted = [name for name in wanted
                if hub.api("POST", f"/users/{quote(name, safe='')}", "admin").status_code
                == 201]  # fmt: skip
    assert {"a b", "ünï", "a@b"} <= set(accepted), accepted
    for name in accepted:  # start_servers would not escape the names
        reply = hub.api("POST", f"/users/{quote(name, safe='')}/server", "admin")
        assert reply.status_code in (201, 202), (name, reply.text)
    hub.wait_ready(accepted, "admin", timeout=60)
    hub.create_users(["named"], "admin")
    servers = [server for server in ("my lab", "ü", "x.y", "a-b_c", "lab-1")
               if hub.api("POST", f"/users/named/servers/{quote(server, safe='')}",
                          "admin").status_code in (201, 202)]  # fmt: skip
    # JupyterHub 6 takes only safe slugs as new server names (400 for the others)
    assert servers == ["lab-1"], servers
    for server in servers:
        hub.wait_ready(["named"], "admin", server, timeout=60)
    time.sleep(TIMEOUT + 0.5)

    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT),
                   "--remove-named-servers")  # fmt: skip

    assert run.returncode == 0, run.log
    targets = [*accepted, *(f"named/{server}" for server in servers)]
    assert mine(run, targets) == dict.fromkeys(targets, "culled"), run.log
    assert hub.list_users("admin", state="active") == []
    assert hub.api("GET", "/users/named", "admin").json()["servers"] == {}


def test_a_second_culler_on_the_same_state_refuses_to_start(hub, tmp_path):
    daemon = CullerDaemon(hub, "culler", tmp_path, "--timeout", "3600").start()
    try:
        second = run_once(hub, "culler", tmp_path, "--timeout", "3")
    finally:
        daemon.stop()
    assert second.returncode == 75  # busy (docs/exit-codes.md)
    [line] = second.log.strip().splitlines()
    assert f"pid {daemon.process.process.pid}" in line and "Traceback" not in second.log


def test_a_url_that_is_not_the_api_is_one_line(hub, tmp_path):
    run = run_once(hub, "culler", tmp_path, "--timeout", "3", "--url", f"{hub.url}/hub")
    assert run.returncode == 1, run.log
    assert "Traceback" not in run.log, run.log
    assert len(run.lines('msg="pass failed"')) == 1, run.log


# -- secrets ----------------------------------------------------------------------------------


def test_the_token_is_in_no_log_line_status_or_metrics_even_at_debug(hub, hostile, tmp_path):
    hostile.users["leaky"] = {"api/kernels": answer_json({"message": "no"}, 403)}
    start(hub, "leaky")
    time.sleep(TIMEOUT + 0.5)
    metrics = tmp_path / "culler.prom"

    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--log-level", "debug",
                   "--metrics-file", str(metrics))  # fmt: skip
    rejected = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--log-level",
                        "debug", JUPYTERHUB_API_TOKEN="wrong-" + hub.token("culler"))  # fmt: skip

    assert run.returncode == 0 and rejected.returncode == 1, run.log + rejected.log
    assert 'msg="pass failed"' in rejected.log and "rejected the API token" in rejected.log
    token = hub.token("culler")
    for text in (run.log, json.dumps(run.status), metrics.read_text(), rejected.log,
                 json.dumps(rejected.status)):  # fmt: skip
        assert token not in text
        assert token[:16] not in text


def test_credentials_in_the_url_are_not_logged(hub, tmp_path):
    host = hub.api_url.split("://", 1)[1]
    url = f"http://ops:pw-in-the-url-0123@{host}"
    run = run_once(hub, "culler", tmp_path, "--timeout", "3600", "--url", url, timeout=60)
    assert "pw-in-the-url-0123" not in run.log


# -- files the culler writes ------------------------------------------------------------------


def test_planted_links_are_replaced_never_written_through(hub, tmp_path):
    victims = {key: tmp_path / f"victim-{key}" for key in ("status", "metrics", "marks")}
    for victim in victims.values():
        victim.write_text("precious\n")
    state = tmp_path / "state"
    state.mkdir()
    paths = {key: state / f"{key}.file" for key in victims}
    for key, path in paths.items():
        path.symlink_to(victims[key])
    argv = [str(CULLER), "--once", "--url", hub.api_url, "--timeout", "3600",
            "--status-file", str(paths["status"]), "--metrics-file", str(paths["metrics"]),
            "--probe-state-file", str(paths["marks"])]  # fmt: skip

    done = subprocess.run(argv, env=culler_env(hub.token("culler")), capture_output=True,
                          text=True, timeout=60)  # fmt: skip

    assert done.returncode == 0, done.stderr
    for key, victim in victims.items():
        assert victim.read_text() == "precious\n", key
    assert not paths["status"].is_symlink() and json.loads(paths["status"].read_text())["ok"]
    assert not paths["metrics"].is_symlink()
    assert "hub_culler_passes_total 1" in paths["metrics"].read_text()
    # nothing half-written is left beside them (the instance lock is meant to stay)
    left = sorted(p.name for p in state.iterdir() if p.name != "hub-culler.lock")
    assert left == sorted(p.name for p in paths.values() if p.exists())


def test_a_directory_or_half_file_in_the_way_costs_a_warning_not_the_pass(hub, tmp_path):
    status = tmp_path / "status.json"
    status.mkdir()  # a directory where the status file should be
    marks = tmp_path / "marks.json"
    marks.write_text('[{"key": ["server", "x", ""], "from": "2024-01-01T00:')  # killed mid-write
    argv = [str(CULLER), "--once", "--url", hub.api_url, "--timeout", "3600",
            "--status-file", str(status), "--probe-state-file", str(marks)]  # fmt: skip

    done = subprocess.run(argv, env=culler_env(hub.token("culler")), capture_output=True,
                          text=True, timeout=60)  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert 'msg="cannot write file"' in done.stderr and "status.json" in done.stderr
    assert "ignoring unreadable probe state" in done.stderr
    assert "Traceback" not in done.stderr
    assert status.is_dir() and not list(status.iterdir())
    assert json.loads(marks.read_text()) == []  # replaced by a whole, valid file


# -- a broken or hostile hub ------------------------------------------------------------------


class FakeHub:
    """What run_once / CullerDaemon need of a hub, for the HostileServer playing one."""

    def __init__(self, server: HostileServer) -> None:
        self.api_url = f"{server.url}/hub/api"
        server.hub_routes.setdefault(("GET", "/hub/api/"), answer_json({"version": "6.1.1"}))

    @staticmethod
    def token(service: str) -> str:
        return "fake-hub-token-0123456789abcdef"


@pytest.fixture
def fake_hub():
    server = HostileServer().start()
    yield server
    server.close()


def test_a_hub_that_never_answers_fails_the_pass_within_its_timeouts(fake_hub, tmp_path):
    fake_hub.hub_routes[("GET", "/hub/api/users")] = fake_hub.stalled()
    started = time.monotonic()
    run = run_once(FakeHub(fake_hub), "culler", tmp_path, "--timeout", "3",
                   "--request-timeout", "1", timeout=60)  # fmt: skip
    # 4 attempts of 1 s and 0.5 + 1 + 2 s of backoff
    assert time.monotonic() - started < 25  # the subprocess timeout is 30 s or more
    assert run.returncode == 1
    [failed] = run.lines('msg="pass failed"')
    assert "ReadTimeout" in failed and "Traceback" not in run.log


def test_a_hub_that_dribbles_its_answer_fails_the_pass_within_its_timeouts(fake_hub, tmp_path):
    fake_hub.hub_routes[("GET", "/hub/api/users")] = fake_hub.dribble(0.3)
    try:
        run = run_once(FakeHub(fake_hub), "culler", tmp_path, "--timeout", "3",
                       "--request-timeout", "1", timeout=30)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("--once was still running after 30 s with --request-timeout 1")
    assert run.returncode == 1


def test_a_hub_that_dribbles_its_headers_fails_the_pass_within_its_timeouts(fake_hub, tmp_path):
    """--request-timeout bounds the whole request, headers included: one header byte every
    0.3 s never trips a per-read timeout."""
    fake_hub.hub_routes[("GET", "/hub/api/users")] = fake_hub.dribble_headers(0.3)
    started = time.monotonic()
    try:
        run = run_once(FakeHub(fake_hub), "culler", tmp_path, "--timeout", "3",
                       "--request-timeout", "1", timeout=40)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("--once was still running after 40 s with --request-timeout 1")
    # 4 attempts of 1 s and 0.5 + 1 + 2 s of backoff
    assert time.monotonic() - started < 25  # the subprocess timeout is 30 s or more
    assert run.returncode == 1
    [failed] = run.lines('msg="pass failed"')
    assert "within the timeout" in failed, failed


def test_sigterm_stops_the_daemon_stuck_on_a_dribbling_hub(fake_hub, tmp_path):
    fake_hub.hub_routes[("GET", "/hub/api/users")] = fake_hub.dribble(0.3)
    daemon = CullerDaemon(FakeHub(fake_hub), "culler", tmp_path, "--timeout", "3",
                          "--request-timeout", "1")  # fmt: skip
    daemon.start()
    try:
        wait_until(lambda: fake_hub.requests_to("/hub/api/users"), 20, "the daemon's first request")
        time.sleep(1)
        code, took = daemon.signal(signal.SIGTERM)
    finally:
        daemon.stop()
    assert code == 0 and took < 15, daemon.log()  # before TimeoutStopSec=20 kills
    # each request now ends at its timeout however slowly the answer comes, so the pass ends
    # on its own (or is abandoned if a stop is asked mid-request): either way, a clean stop
    assert "msg=stopped" in daemon.log() and "Traceback" not in daemon.log()


def _user(name: str, **server) -> dict:
    model = {"started": "2020-01-01T00:00:00Z", "last_activity": "2020-01-01T00:00:00Z",
             "pending": None, "ready": True, "url": f"/user/{name}/"}  # fmt: skip
    model.update(server)
    return {"name": name, "admin": False, "groups": [], "created": "2020-01-01T00:00:00Z",
            "last_activity": "2020-01-01T00:00:00Z", "servers": {"": model}}  # fmt: skip


def _serve_users(fake_hub: HostileServer, users: list[dict]) -> None:
    fake_hub.hub_routes[("GET", "/hub/api/users")] = answer_json(
        {"items": users, "_pagination": {"offset": 0, "limit": 200, "total": len(users),
                                         "next": None}})  # fmt: skip
    for user in users:
        name = user.get("name")
        if isinstance(name, str):
            fake_hub.hub_routes[("GET", f"/hub/api/users/{name}")] = answer_json(user)
            fake_hub.hub_routes[("DELETE", f"/hub/api/users/{name}/server")] = (
                lambda handler: _no_content(handler))


def _no_content(handler) -> None:
    handler.send_response(204)
    handler.send_header("Content-Length", "0")
    handler.send_header("X-JupyterHub-Version", "6.1.1")
    handler.end_headers()


def test_odd_names_are_stopped_under_their_own_escaped_path(fake_hub, tmp_path):
    odd = ["a b", "a/../../admin", "ünï", "x" * 300, "q?x=1#f", "%2e%2e"]
    _serve_users(fake_hub, [_user(name) for name in odd])
    for name in odd:  # the hub's routes see the escaped names
        escaped = requests.utils.quote(name, safe="")
        model = answer_json(_user(name))
        fake_hub.hub_routes[("GET", f"/hub/api/users/{escaped}")] = model
        fake_hub.hub_routes[("DELETE", f"/hub/api/users/{escaped}/server")] = _no_content

    run = run_once(FakeHub(fake_hub), "culler", tmp_path, "--timeout", "3",
                   "--no-check-kernels")  # fmt: skip

    assert run.returncode == 0, run.log
    deletes = sorted(seen.path for seen in fake_hub.seen if seen.method == "DELETE")
    wanted = sorted(f"/hub/api/users/{requests.utils.quote(n, safe='')}/server" for n in odd)
    assert deletes == wanted
    assert set(decisions(run).values()) == {"culled"}


@pytest.mark.parametrize("bad", [
    {"name": "odd", "last_activity": "yesterday", "servers": {}},
    {"name": "odd", "servers": [{"name": ""}]},
    {"name": "odd", "servers": {"": None}},
])  # fmt: skip
def test_one_malformed_user_does_not_spare_the_others(fake_hub, tmp_path, bad):
    _serve_users(fake_hub, [_user("good"), bad])
    run = run_once(FakeHub(fake_hub), "culler", tmp_path, "--timeout", "3",
                   "--no-check-kernels")  # fmt: skip
    assert [s.path for s in fake_hub.seen if s.method == "DELETE"] == [
        "/hub/api/users/good/server"], run.log  # fmt: skip


def test_a_user_listed_twice_is_counted_and_stopped_once(fake_hub, tmp_path):
    user = _user("dup")

    def page(handler) -> None:
        offset = int(handler.path.split("offset=", 1)[1].split("&", 1)[0])
        following = {"offset": 1, "limit": 200, "url": "x"} if offset == 0 else None
        answer_json({"items": [user], "_pagination": {"offset": offset, "limit": 200,
                                                      "total": 1, "next": following}})(handler)

    _serve_users(fake_hub, [user])
    fake_hub.hub_routes[("GET", "/hub/api/users")] = page
    run = run_once(FakeHub(fake_hub), "culler", tmp_path, "--timeout", "3",
                   "--no-check-kernels")  # fmt: skip
    assert run.returncode == 0, run.log
    assert run.status["counts"]["seen"] == 1 and run.status["counts"]["culled"] == 1
    assert len([s for s in fake_hub.seen if s.method == "DELETE"]) == 1


# -- configuration ----------------------------------------------------------------------------


def test_a_huge_cull_every_is_refused_with_one_line(tmp_path):
    argv = [str(CULLER), "--url", "http://127.0.0.1:9/hub/api", "--request-timeout", "1",
            "--cull-every", "99999999999999", "--status-file", str(tmp_path / "s.json"),
            "--probe-state-file", str(tmp_path / "m.json")]  # fmt: skip
    try:
        done = subprocess.run(argv, env=culler_env("t" * 32), capture_output=True, text=True,
                              timeout=20)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon accepted --cull-every 99999999999999 and kept running")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _future() -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) + timedelta(minutes=30)).isoformat()

