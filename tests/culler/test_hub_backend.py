"""hub-culler against a real JupyterHub and proxy (responder spawner: real hub state, one
shared process answering for every user's server, so kernels can be staged per user).

Every test uses users of its own on the module's hub, and runs the real `hub-culler` command.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from culler.probe import FOOTPRINT_SLACK
from hubsidecars.hubapi import parse_time
from realparts.culler import CULLER_SCOPES, CullerDaemon, run_once, running
from realparts.hub import HubService
from realparts.waiting import wait_until

pytestmark = pytest.mark.realhub

TIMEOUT = 3  # seconds of inactivity after which the tests' servers are idle
SLOW = {"slow1": 3, "slow2": 3, "sigterm1": 30, "sigterm2": 30, "stuck": 60}
CONFIG = f"""
c.JupyterHub.allow_named_servers = True
# a stop slower than this makes the hub answer 202 (10 s by default)
c.JupyterHub.tornado_settings = {{"slow_stop_timeout": 1}}
c.ResponderSpawner.stop_delays = {SLOW!r}
# the hub copies the proxy's activity every 2 s instead of 5 minutes
c.JupyterHub.last_activity_interval = 2
c.Authenticator.admin_users = {{"tmpadmin"}}
"""


def services() -> list[HubService]:
    return [
        HubService("admin", ["admin:users", "admin:servers", "access:servers", "admin:groups"]),
        HubService("culler", CULLER_SCOPES),
        HubService("culler-users", [*CULLER_SCOPES, "read:users", "delete:users"]),
        HubService("culler-groups", [*CULLER_SCOPES, "read:groups"]),
        HubService("blind", ["list:users", "delete:servers"]),
    ]


@pytest.fixture(scope="module")
def hub(start_module_hub):
    return start_module_hub(services(), CONFIG, spawner="responder")


def start(hub, *names: str, server: str = "") -> None:
    hub.create_users([n for n in names if hub.api("GET", f"/users/{n}", "admin").status_code
                      == 404], "admin")  # fmt: skip
    hub.start_servers(list(names), "admin", server_name=server)


def pin_active(hub, name: str, server: str = "", minutes: int = 30) -> None:
    """Move the server's last_activity into the future, as a busy user's browser would."""
    moment = (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()
    body = {"last_activity": moment, "servers": {server: {"last_activity": moment}}}
    reply = hub.api("POST", f"/users/{name}/activity", "admin", json=body)
    assert reply.status_code == 200, reply.text


def set_kernels(hub, name: str, kernels: list[dict]) -> None:
    requests.put(hub.responder_url(f"/_responder/users/{name}/kernels"), json=kernels,
                 timeout=5).raise_for_status()  # fmt: skip


def ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()


def decisions(run) -> dict[str, str]:
    return {d["target"]: d["result"] for d in run.status["decisions"]}


def test_idle_server_is_culled_and_active_one_kept(hub, tmp_path):
    start(hub, "idle1", "active1")
    pin_active(hub, "active1")
    time.sleep(TIMEOUT + 0.5)

    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT))

    assert run.returncode == 0, run.log
    assert not running(hub, "idle1")
    assert running(hub, "active1")
    assert decisions(run)["idle1"] == "culled"
    assert decisions(run)["active1"] == "active"
    # one summary line per pass, with the counts an admin looks for
    [summary] = run.lines('msg="pass done"')
    for word in ("seen=", "idle=", "busy_kept=0", "culled=", "failed=0", "skipped=", "duration_ms="):
        assert word in summary
    assert run.status["ok"] is True and run.status["counts"]["culled"] >= 1
    # the reason says why, in the words of idle-culler's log
    [culled] = [d for d in run.status["decisions"] if d["target"] == "idle1"]
    assert re.match(r"idle 0:00:\d\d", culled["reason"]) and "timeout 0:00:03" in culled["reason"]


def test_dry_run_lists_every_decision_and_changes_nothing(hub, tmp_path):
    start(hub, "dry1", "dry2")
    pin_active(hub, "dry2")
    time.sleep(TIMEOUT + 0.5)

    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--dry-run")

    assert run.returncode == 0, run.log
    assert running(hub, "dry1") and running(hub, "dry2")
    assert decisions(run)["dry1"] == "would-cull"
    assert decisions(run)["dry2"] == "active"
    # the whole decision list is in the log, with reasons, not only the would-culls
    assert any("target=dry1" in line and re.search(r"idle 0:00:\d\d", line)
               for line in run.lines("would-cull"))  # fmt: skip
    assert any("target=dry2" in line and "active" in line for line in run.lines("server active"))
    assert "(dry run)" in run.lines('msg="pass done"')[0]
    assert run.status["dry_run"] is True


def test_busy_kernel_keeps_an_idle_server_and_its_end_lets_it_go(hub, tmp_path):
    start(hub, "busy1")
    set_kernels(hub, "busy1", [{"id": "k1", "execution_state": "busy", "last_activity": ago(600),
                                "connections": 0}])  # fmt: skip
    time.sleep(TIMEOUT + 0.5)

    kept = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT))
    assert kept.returncode == 0, kept.log
    assert running(hub, "busy1")
    assert decisions(kept)["busy1"] == "kept-busy"
    assert kept.status["counts"]["busy_kept"] == 1

    # the same server once its kernel is idle and was last used long ago: culled
    set_kernels(hub, "busy1", [{"id": "k1", "execution_state": "idle", "last_activity": ago(600),
                                "connections": 0}])  # fmt: skip
    culled = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT))
    assert decisions(culled)["busy1"] == "culled", culled.log
    assert not running(hub, "busy1")


def test_an_earlier_questions_stamp_the_hub_copies_late_does_not_keep_the_server(hub, tmp_path):
    """Pass 1 asks the server about its kernels (busy: kept) and the hub copies that question's
    stamp from the proxy a little later. Pass 2, more than FOOTPRINT_SLACK after it, asks again
    and reads the server once more before stopping it: the hub still reports pass 1's stamp,
    the culler's own footprint, not a user's. CI once saw this server kept as "became active
    during the pass" when only the latest question was remembered."""
    timeout = 8  # > the stamp's age when pass 2 re-reads it, so only its origin decides
    start(hub, "late1")
    set_kernels(hub, "late1", [{"id": "k1", "execution_state": "busy", "last_activity": ago(600),
                                "connections": 0}])  # fmt: skip
    time.sleep(timeout + 0.5)
    kept = run_once(hub, "culler", tmp_path, "--timeout", str(timeout))
    assert decisions(kept)["late1"] == "kept-busy", kept.log
    marks = json.loads((tmp_path / "probe-marks.json").read_text())
    (asked,) = [m for m in marks if m["key"] == ["server", "late1", ""]]
    asked_from, asked_until = parse_time(asked["from"]), parse_time(asked["until"])

    def hub_reports_the_question() -> bool:
        server = hub.api("GET", "/users/late1", "admin").json()["servers"][""]
        return parse_time(server["last_activity"]) >= asked_from - FOOTPRINT_SLACK

    wait_until(hub_reports_the_question, 30, "the hub to copy the proxy's stamp of pass 1")
    set_kernels(hub, "late1", [{"id": "k1", "execution_state": "idle", "last_activity": ago(600),
                                "connections": 0}])  # fmt: skip
    beyond_the_slack = asked_until + FOOTPRINT_SLACK + timedelta(seconds=1)
    time.sleep(max(0.0, (beyond_the_slack - datetime.now(UTC)).total_seconds()))

    culled = run_once(hub, "culler", tmp_path, "--timeout", str(timeout))
    assert decisions(culled)["late1"] == "culled", culled.log
    assert not running(hub, "late1")


def test_without_the_kernel_check_a_busy_kernel_does_not_save_the_server(hub, tmp_path):
    start(hub, "busy2")
    set_kernels(hub, "busy2", [{"id": "k", "execution_state": "busy", "last_activity": ago(1)}])
    time.sleep(TIMEOUT + 0.5)
    asked_before = requests.get(hub.responder_url("/_responder/requests"), timeout=5).json()

    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--no-check-kernels")

    assert decisions(run)["busy2"] == "culled"
    assert not running(hub, "busy2")
    # and the server was not asked
    asked_after = requests.get(hub.responder_url("/_responder/requests"), timeout=5).json()
    assert asked_after["busy2"] == asked_before["busy2"]


def test_asking_a_server_does_not_keep_it_alive_past_max_busy(hub, tmp_path):
    """A runaway kernel, busy for ever: kept while the hub saw activity within --max-busy,
    then stopped. Each question goes through the proxy, which the hub copies into
    last_activity every 2 s here: the culler must not take its own questions for a user's
    activity, or max_busy would never be reached."""
    start(hub, "runaway")
    set_kernels(hub, "runaway", [{"id": "k", "execution_state": "busy", "last_activity": ago(0)}])
    time.sleep(TIMEOUT + 0.5)
    daemon = CullerDaemon(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--cull-every", "1",
                          "--max-busy", "8", "--exclude-users", "slow1,waker,stuck")  # fmt: skip
    daemon.start()
    try:
        daemon.wait_for('msg="server kept-busy" target=runaway', count=3, timeout=30)
        log = daemon.wait_for('msg="server culled" target=runaway', timeout=30)
    finally:
        daemon.stop()
    assert not running(hub, "runaway")
    [culled] = [line for line in log.splitlines() if 'msg="server culled" target=runaway' in line]
    assert "busy" in culled and ">= max_busy 0:00:08" in culled


def test_a_server_that_becomes_active_during_the_pass_is_kept(hub, tmp_path):
    """One server at a time: while the culler waits for slow1's 3 s stop, active2 becomes
    active; re-read right before its stop, it is kept."""
    start(hub, "slow1", "waker")
    time.sleep(TIMEOUT + 0.5)
    woke = threading.Event()

    def wake_when_slow1_is_stopping() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            server = hub.api("GET", "/users/slow1", "admin").json()["servers"].get("")
            if server and server.get("pending") == "stop":
                pin_active(hub, "waker")
                woke.set()
                return
            time.sleep(0.05)

    waker = threading.Thread(target=wake_when_slow1_is_stopping)
    waker.start()
    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--concurrency", "1",
                   "--exclude-users", "idle1,dry1,dry2,active1")  # fmt: skip
    waker.join()

    assert woke.is_set()
    assert decisions(run)["slow1"] == "culled"
    assert decisions(run)["waker"] == "kept-active", run.log
    assert running(hub, "waker")


def test_a_slow_stop_is_followed_up_not_failed(hub, tmp_path):
    """slow2's stop takes 3 s, the hub answers 202 after 1 s: the pass follows it."""
    start(hub, "slow2")
    time.sleep(TIMEOUT + 0.5)

    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT))

    assert run.returncode == 0, run.log
    [slow] = [d for d in run.status["decisions"] if d["target"] == "slow2"]
    assert slow["result"] == "culled" and "stopped after" in slow["reason"]
    assert not running(hub, "slow2")


def test_pending_servers_are_skipped_and_a_long_pending_one_reported(hub, tmp_path):
    start(hub, "stuck")
    time.sleep(TIMEOUT + 0.5)
    # its stop takes 60 s: after the first pass it is pending "stop"
    first = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--stop-wait", "0")
    assert first.returncode == 0, first.log
    assert decisions(first)["stuck"] == "stopping"

    daemon = CullerDaemon(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--cull-every", "1",
                          "--pending-limit", "2")  # fmt: skip
    daemon.start()
    try:
        log = daemon.wait_for('msg="server stuck pending"', timeout=30)
        time.sleep(1.5)  # another pass: reported once, not every pass
        assert daemon.log().count('msg="server stuck pending"') == 1
    finally:
        daemon.stop()
    assert "target=stuck" in log and "pending=stop" in log


def test_named_servers_are_culled_removed_or_spared_as_told(hub, tmp_path):
    for name in ("named1", "named2", "named3"):
        start(hub, name, server="gpu")
    time.sleep(TIMEOUT + 0.5)
    others = "--exclude-users=named2,named3"

    spared = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--no-cull-named-servers",
                      "--exclude-users=named2,named3")  # fmt: skip
    assert decisions(spared)["named1/gpu"] == "skipped"
    assert running(hub, "named1", "gpu")

    stopped = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), others)
    assert decisions(stopped)["named1/gpu"] == "culled"
    assert not running(hub, "named1", "gpu")
    # stopped, not removed: the hub still knows the named server
    listed = hub.api("GET", "/users/named1", "admin",
                     params={"include_stopped_servers": "1"}).json()  # fmt: skip
    assert "gpu" in listed["servers"]

    removed = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--remove-named-servers",
                       "--exclude-users=named3")  # fmt: skip
    assert decisions(removed)["named2/gpu"] == "culled"
    listed = hub.api("GET", "/users/named2", "admin",
                     params={"include_stopped_servers": "1"}).json()  # fmt: skip
    assert "gpu" not in listed["servers"]


def test_exempt_users_and_groups_are_never_culled(hub, tmp_path):
    start(hub, "exempt1", "exempt2", "notexempt")
    assert hub.api("POST", "/groups/teachers", "admin", json={"users": ["exempt2"]}
                   ).status_code in (201, 409)  # fmt: skip
    hub.api("POST", "/groups/teachers/users", "admin", json={"users": ["exempt2"]})
    time.sleep(TIMEOUT + 0.5)

    run = run_once(hub, "culler-groups", tmp_path, "--timeout", str(TIMEOUT), "--max-age", "1",
                   "--exclude-users", "exempt1", "--exclude-groups", "teachers")  # fmt: skip

    assert run.returncode == 0, run.log
    assert running(hub, "exempt1") and running(hub, "exempt2")
    assert decisions(run)["exempt1"] == decisions(run)["exempt2"] == "skipped"
    assert decisions(run)["notexempt"] == "culled"

    # a group that cannot be read fails the pass before anything is stopped
    start(hub, "notexempt")
    time.sleep(TIMEOUT + 0.5)
    blind = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT),
                     "--exclude-groups", "teachers")  # fmt: skip
    assert blind.returncode == 1
    assert "read:groups" in blind.lines('msg="pass failed"')[0]
    assert running(hub, "notexempt") and running(hub, "exempt2")


def test_cull_users_deletes_idle_users_but_spares_admins_when_told(hub, tmp_path):
    start(hub, "tmpuser1")
    hub.create_users(["tmpuser2"], "admin")
    # tmpadmin: created by the hub at start, an admin by its config
    time.sleep(TIMEOUT + 0.5)
    only = "--exclude-users=" + ",".join(u["name"] for u in hub.list_users("admin")
                                         if not u["name"].startswith("tmp"))  # fmt: skip

    run = run_once(hub, "culler-users", tmp_path, "--timeout", str(TIMEOUT), "--cull-users",
                   "--no-cull-admin-users", only)  # fmt: skip

    assert run.returncode == 0, run.log
    gone = {u["name"] for u in hub.list_users("admin")}
    assert "tmpuser1" not in gone  # its server stopped, then the user deleted, in one pass
    assert "tmpuser2" not in gone
    assert "tmpadmin" in gone
    kinds = {(d["kind"], d["target"]): d["result"] for d in run.status["decisions"]}
    assert kinds[("server", "tmpuser1")] == kinds[("user", "tmpuser1")] == "culled"
    assert kinds[("user", "tmpadmin")] == "skipped"


def test_max_age_culls_an_active_server(hub, tmp_path):
    start(hub, "old1")
    pin_active(hub, "old1")
    time.sleep(2.5)

    run = run_once(hub, "culler", tmp_path, "--timeout", "3600", "--max-age", "2",
                   "--exclude-users", "waker,active1,dry2")  # fmt: skip

    assert decisions(run)["old1"] == "culled"
    assert "max_age" in [d for d in run.status["decisions"] if d["target"] == "old1"][0]["reason"]


def test_a_token_that_hides_servers_fails_the_pass_with_the_scope_named(hub, tmp_path):
    start(hub, "hidden1")
    time.sleep(TIMEOUT + 0.5)
    run = run_once(hub, "blind", tmp_path, "--timeout", str(TIMEOUT))
    assert run.returncode == 1
    assert "read:servers" in run.lines('msg="pass failed"')[0]
    assert running(hub, "hidden1")


def test_sigterm_during_a_pass_exits_cleanly_within_10_s(hub, tmp_path):
    """The stops of sigterm1/2 take 30 s; SIGTERM arrives while the pass waits on them."""
    start(hub, "sigterm1", "sigterm2")
    time.sleep(TIMEOUT + 0.5)
    daemon = CullerDaemon(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--cull-every", "600",
                          "--stop-wait", "120")  # fmt: skip
    daemon.start()
    deadline = time.monotonic() + 30
    while not all(hub.api("GET", f"/users/{n}", "admin").json()["servers"].get("", {}).get(
            "pending") == "stop" for n in ("sigterm1", "sigterm2")):  # fmt: skip
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.1)

    code, took = daemon.signal(signal.SIGTERM)

    assert code == 0, daemon.log()
    assert took < 15  # not --stop-wait's 120 s
    assert "msg=stopped " in daemon.log()
