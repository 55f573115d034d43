"""hub-stats against a real JupyterHub and proxy (responder spawner: real running servers in
the hub's state, one shared process behind them), the real `hub-stats` command each time.

The hub never moves activity by itself here (last_activity_interval of a day): every
last_activity that moves is one the test pinned through POST /users/NAME/activity, so what
each poll saw is known exactly, read from the hub's API right after the poll.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from realparts.hub import HubService
from realparts.hub_proxy import HubProxy
from realparts.stats import (
    STATS_SCOPES,
    StatsDaemon,
    check_whole_polls,
    rows,
    run_once,
    stamp,
)

pytestmark = pytest.mark.realhub

CONFIG = """
c.JupyterHub.allow_named_servers = True
c.JupyterHub.last_activity_interval = 24 * 3600
c.Authenticator.admin_users = {"root-admin"}
"""
INTERVAL = 5  # the smallest --interval hub-stats takes; servers idle > 5 s are not active


def services() -> list[HubService]:
    return [
        HubService("admin", ["admin:users", "admin:servers", "users:activity", "admin:groups"]),
        HubService("stats", STATS_SCOPES),
        HubService("no-servers", ["list:users", "read:users", "read:users:activity"]),
        HubService("no-list", ["read:users", "read:users:activity", "read:servers"]),
    ]


def pin(hub, name: str, server: str = "", minutes: int = 30) -> str:
    """Move the user's and one server's last_activity `minutes` ahead (a busy browser)."""
    moment = (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()
    body = {"last_activity": moment, "servers": {server: {"last_activity": moment}}}
    reply = hub.api("POST", f"/users/{name}/activity", "admin", json=body)
    assert reply.status_code == 200, reply.text
    return moment


def stop(hub, name: str, server: str = "") -> None:
    path = f"/users/{name}/servers/{server}" if server else f"/users/{name}/server"
    assert hub.api("DELETE", path, "admin").status_code in (202, 204)
    deadline = time.monotonic() + 30
    while server in hub.api("GET", f"/users/{name}", "admin").json().get("servers", {}):
        assert time.monotonic() < deadline, f"{name}/{server} did not stop"
        time.sleep(0.2)


def poll(hub, db: Path, interval: float = INTERVAL, service: str = "stats") -> dict[str, dict]:
    """One `hub-stats --once`; returns the hub's user models as they were at the poll."""
    run = run_once(hub, service, db, interval=interval)
    assert run.returncode == 0, run.log
    return {user["name"]: user for user in hub.list_users("admin")}


def poll_times(db: Path) -> dict[int, str]:
    return dict(rows(db, "SELECT id, time FROM polls ORDER BY id"))


def test_servers_and_activity_recorded_row_by_row(start_hub, tmp_path):
    hub = start_hub(services(), CONFIG, spawner="responder")
    db = tmp_path / "activity.sqlite"
    hub.create_users(["alice", "bob", "carol"], "admin")
    hub.start_servers(["alice"], "admin")
    hub.start_servers(["bob"], "admin", server_name="lab")
    time.sleep(INTERVAL + 1)  # bob's start is older than the interval: not active
    pin(hub, "alice", minutes=0)  # alice is active right now
    seen1 = poll(hub, db)

    pin(hub, "bob", "lab", minutes=20)
    stop(hub, "alice")
    hub.start_servers(["carol"], "admin")
    pin(hub, "carol", minutes=40)
    seen2 = poll(hub, db)
    times = poll_times(db)
    legacy_after_2 = rows(db, "SELECT * FROM activity")

    hub.start_servers(["alice"], "admin")  # a second run of alice's server, not pinned
    assert hub.api("DELETE", "/users/carol", "admin").status_code == 204
    time.sleep(INTERVAL + 1)
    seen3 = poll(hub, db)
    times = poll_times(db)
    assert list(times) == [1, 2, 3]

    # the legacy view, exact columns, one row per user per poll, as things were at each poll
    legacy = rows(db, "SELECT * FROM activity")
    columns = [row[1] for row in rows(db, "PRAGMA table_info(activity)")]
    assert columns == ["date", "user", "active"]
    assert sorted(legacy) == sorted([
        (times[1], "alice", 1), (times[1], "bob", 0), (times[1], "carol", 0),
        (times[2], "alice", 0), (times[2], "bob", 1), (times[2], "carol", 1),
        # alice runs again, but started more than an interval ago and did nothing since
        (times[3], "alice", 0), (times[3], "bob", 1),
        *[(times[poll_id], "root-admin", 0) for poll_id in (1, 2, 3)],
    ])  # fmt: skip
    # stopping alice and deleting carol after poll 2 changed none of the rows of polls 1-2
    assert sorted(row for row in legacy if row[0] != times[3]) == sorted(legacy_after_2)

    def server(seen, name, server_name=""):
        return seen[name]["servers"][server_name]

    assert rows(db, "SELECT id, name, first_poll, gone_poll, admin, created, last_activity "
                    "FROM users ORDER BY id") == [  # fmt: skip
        (1, "root-admin", 1, None, 1, stamp(seen1["root-admin"]["created"]), None),
        (2, "alice", 1, None, 0, stamp(seen1["alice"]["created"]),
         stamp(seen3["alice"]["last_activity"])),
        (3, "bob", 1, None, 0, stamp(seen1["bob"]["created"]),
         stamp(seen3["bob"]["last_activity"])),
        (4, "carol", 1, 3, 0, stamp(seen1["carol"]["created"]),
         stamp(seen2["carol"]["last_activity"])),
    ]  # fmt: skip
    assert seen1["carol"]["last_activity"] is None  # never had a server before poll 2

    assert rows(db, "SELECT id, user, server_name, started, first_poll, ready_poll, end_poll, "
                    "last_activity FROM sessions ORDER BY id") == [  # fmt: skip
        (1, "alice", "", stamp(server(seen1, "alice")["started"]), 1, 1, 2,
         stamp(server(seen1, "alice")["last_activity"])),
        (2, "bob", "lab", stamp(server(seen1, "bob", "lab")["started"]), 1, 1, None,
         stamp(server(seen3, "bob", "lab")["last_activity"])),
        (3, "carol", "", stamp(server(seen2, "carol")["started"]), 2, 2, 3,
         stamp(server(seen2, "carol")["last_activity"])),
        (4, "alice", "", stamp(server(seen3, "alice")["started"]), 3, 3, None,
         stamp(server(seen3, "alice")["last_activity"])),
    ]  # fmt: skip

    assert rows(db, "SELECT poll_id, user, server_name, session_id, last_activity "
                    "FROM activity_events ORDER BY id") == [  # fmt: skip
        (1, "alice", None, None, stamp(seen1["alice"]["last_activity"])),
        (1, "bob", None, None, stamp(seen1["bob"]["last_activity"])),
        (1, "alice", "", 1, stamp(server(seen1, "alice")["last_activity"])),
        (1, "bob", "lab", 2, stamp(server(seen1, "bob", "lab")["last_activity"])),
        # stopping a server moves its user's last_activity
        (2, "alice", None, None, stamp(seen2["alice"]["last_activity"])),
        (2, "bob", None, None, stamp(seen2["bob"]["last_activity"])),
        (2, "carol", None, None, stamp(seen2["carol"]["last_activity"])),
        (2, "bob", "lab", 2, stamp(server(seen2, "bob", "lab")["last_activity"])),
        (2, "carol", "", 3, stamp(server(seen2, "carol")["last_activity"])),
        (3, "alice", None, None, stamp(seen3["alice"]["last_activity"])),
        (3, "alice", "", 4, stamp(server(seen3, "alice")["last_activity"])),
    ]  # fmt: skip

    assert rows(db, "SELECT id, interval_s, ok, error, users, servers_running, servers_pending, "
                    "active_users, hub_version FROM polls ORDER BY id") == [  # fmt: skip
        (1, INTERVAL, 1, None, 4, 2, 0, 1, "6.1.1"),
        (2, INTERVAL, 1, None, 4, 2, 0, 2, "6.1.1"),
        (3, INTERVAL, 1, None, 3, 2, 0, 1, "6.1.1"),
    ]
    assert check_whole_polls(db) == 3

    # the analyst's views on the same rows
    day = times[1][:10]
    assert {t[:10] for t in times.values()} == {day}, "the test ran across midnight UTC"
    assert rows(db, "SELECT * FROM peak_concurrent_servers") == [(day, 2, 3)]
    spans = rows(db, "SELECT session_id, user, server_name, first_seen, last_seen, gone_by, "
                     "running FROM session_spans ORDER BY session_id")  # fmt: skip
    assert spans == [
        (1, "alice", "", times[1], times[1], times[2], 0),
        (2, "bob", "lab", times[1], times[3], None, 1),
        (3, "carol", "", times[2], times[2], times[3], 0),
        (4, "alice", "", times[3], times[3], None, 1),
    ]
    per_user = rows(db, "SELECT user, sessions, first_started, last_started "
                        "FROM sessions_per_user")  # fmt: skip
    assert per_user == [
        ("alice", 2, stamp(server(seen1, "alice")["started"]),
         stamp(server(seen3, "alice")["started"])),
        ("bob", 1, stamp(server(seen1, "bob", "lab")["started"]),
         stamp(server(seen1, "bob", "lab")["started"])),
        ("carol", 1, stamp(server(seen2, "carol")["started"]),
         stamp(server(seen2, "carol")["started"])),
    ]  # fmt: skip
    # every user-level last_activity seen falls on `day` unless pinned past midnight
    active_days = {}
    for seen in (seen1, seen2, seen3):
        for name, model in seen.items():
            if model["last_activity"]:
                active_days.setdefault(stamp(model["last_activity"])[:10], set()).add(name)
    assert rows(db, "SELECT * FROM daily_active_users") == [
        (day, len(active_days.get(day, ())))
    ]


def test_failed_poll_recorded_and_daemon_goes_on(start_hub, tmp_path):
    """The hub killed between two polls of the daemon, then restarted: a failed poll (ok=0,
    the reason), the daemon still running, the polls after the restart ok again."""
    hub = start_hub(services(), CONFIG, spawner="responder")
    db = tmp_path / "activity.sqlite"
    hub.create_users(["dora"], "admin")
    daemon = StatsDaemon(hub, "stats", db, tmp_path, "--request-timeout", "2",
                         interval=INTERVAL).start()  # fmt: skip
    try:
        daemon.wait_for('msg="poll done"', timeout=30)
        hub.stop()
        daemon.wait_for('msg="poll failed"', timeout=60)
        hub.start()
        hub.start_servers(["dora"], "admin")
        done_before = daemon.log().count('msg="poll done"')
        daemon.wait_for('msg="poll done"', count=done_before + 2, timeout=60)
        assert daemon.running()
    finally:
        assert daemon.signal() == 0
    polls = rows(db, "SELECT id, ok, error, users FROM polls ORDER BY id")
    failed = [poll for poll in polls if not poll[1]]
    assert failed, polls
    assert all(poll[2] and "unavailable" in poll[2] and poll[3] is None for poll in failed)
    assert polls[0][1] == 1 and polls[-1][1] == 1 and polls[-2][1] == 1
    # nothing but the polls row for a failed poll
    for poll_id, *_ in failed:
        assert rows(db, "SELECT count(*) FROM users WHERE first_poll = ? OR gone_poll = ?",
                    (poll_id, poll_id)) == [(0,)]  # fmt: skip
        assert rows(db, "SELECT count(*) FROM activity WHERE date = (SELECT time FROM polls "
                        "WHERE id = ?)", (poll_id,)) == [(0,)]  # fmt: skip
    assert rows(db, "SELECT user, server_name, end_poll FROM sessions") == [("dora", "", None)]
    assert check_whole_polls(db) == len(polls) - len(failed)


def test_300_users_over_pages_fully_recorded(start_hub, tmp_path):
    hub = start_hub(services(), CONFIG, spawner="responder")
    names = [f"user{number:03d}" for number in range(300)]
    hub.create_users(names, "admin")
    hub.start_servers(names[::2], "admin")  # 150 running, on every page
    db = tmp_path / "activity.sqlite"
    run = run_once(hub, "stats", db, "--api-page-size", "70", interval=INTERVAL)
    assert run.returncode == 0, run.log
    seen = {user["name"]: user for user in hub.list_users("admin")}
    assert len(seen) == 301  # and root-admin
    assert rows(db, "SELECT name, created, admin FROM users ORDER BY name") == [
        (name, stamp(seen[name]["created"]), int(name == "root-admin")) for name in sorted(seen)
    ]
    assert rows(db, "SELECT user, started FROM sessions WHERE end_poll IS NULL ORDER BY user") == [
        (name, stamp(seen[name]["servers"][""]["started"])) for name in names[::2]
    ]
    assert rows(db, "SELECT users, servers_running FROM polls") == [(301, 150)]
    assert rows(db, "SELECT count(*) FROM activity") == [(301,)]
    # a second poll with the hub's own page size: nothing changed, nothing but the poll row
    run = run_once(hub, "stats", db, interval=INTERVAL)
    assert run.returncode == 0, run.log
    assert rows(db, "SELECT count(*) FROM users") == [(301,)]
    assert rows(db, "SELECT count(*) FROM sessions") == [(150,)]
    assert rows(db, "SELECT count(*) FROM activity_events WHERE poll_id = 2") == [(0,)]
    assert check_whole_polls(db) == 2


def test_without_read_servers_one_line_and_runs_not_ended(start_hub, tmp_path):
    hub = start_hub(services(), CONFIG, spawner="responder")
    db = tmp_path / "activity.sqlite"
    hub.create_users(["erin"], "admin")
    hub.start_servers(["erin"], "admin")
    poll(hub, db)  # full token: erin's run is open
    first = run_once(hub, "no-servers", db, interval=INTERVAL)
    second = run_once(hub, "no-servers", db, interval=INTERVAL)
    for run in (first, second):
        assert run.returncode == 0, run.log
        # (the token lacks the group scopes too: a line of its own)
        warnings = [line for line in run.lines("level=warning") if "servers" in line]
        assert len(warnings) == 1, run.log
        assert "read:servers" in warnings[0]
    assert rows(db, "SELECT user, end_poll FROM sessions") == [("erin", None)]
    assert rows(db, "SELECT id, ok, users FROM polls") == [(1, 1, 2), (2, 1, 2), (3, 1, 2)]


def test_without_list_users_the_failed_poll_names_the_scope(start_hub, tmp_path):
    hub = start_hub(services(), CONFIG, spawner="responder")
    db = tmp_path / "activity.sqlite"
    hub.create_users(["fred"], "admin")
    run = run_once(hub, "no-list", db, interval=INTERVAL)
    assert run.returncode == 1, run.log
    problems = [line for line in run.log.splitlines() if "level=info" not in line]
    assert len(problems) == 1, run.log
    assert "list:users" in problems[0]
    assert "Traceback" not in run.log
    assert rows(db, "SELECT ok, error LIKE '%list:users%' FROM polls") == [(0, 1)]
    assert rows(db, "SELECT count(*) FROM users") == [(0,)]


def test_without_read_servers_totals_not_recorded_as_zero(start_hub, tmp_path):
    hub = start_hub(services(), CONFIG, spawner="responder")
    db = tmp_path / "activity.sqlite"
    hub.create_users(["gina"], "admin")
    hub.start_servers(["gina"], "admin")
    pin(hub, "gina")
    poll(hub, db)
    run = run_once(hub, "no-servers", db, interval=INTERVAL)
    assert run.returncode == 0, run.log
    assert rows(db, "SELECT id, servers_running, active_users FROM polls") == [
        (1, 1, 1), (2, None, None)]


def test_user_deleted_between_pages_does_not_end_another(start_hub, tmp_path):
    """Pages of 2: a user of the first page deleted just before the second page is asked for
    shifts every later user one place up, so the next page starts one user further than the
    client expects. The user skipped that way still runs: only the deleted one is gone."""
    hub = start_hub(services(), CONFIG, spawner="responder")
    db = tmp_path / "activity.sqlite"
    hub.create_users(["ua", "ub", "uc", "ud", "ue"], "admin")  # after root-admin, in id order
    hub.start_servers(["ub", "ud"], "admin")
    poll(hub, db)
    deleted = []

    def delete_on_second_page(method: str, path: str) -> None:
        if method == "GET" and path.startswith("/hub/api/users?") and "offset=2" in path \
                and not deleted:  # fmt: skip
            assert hub.api("DELETE", "/users/ua", "admin").status_code == 204
            deleted.append(path)

    with HubProxy(hub.proxy_port, before=delete_on_second_page) as proxy:
        run = run_once(hub, "stats", db, "--api-page-size", "2", interval=INTERVAL,
                       url=f"{proxy.url}/hub/api")  # fmt: skip
        assert run.returncode == 0, run.log
    assert deleted, proxy.seen  # the deletion happened between the pages
    poll(hub, db)  # and a poll after it, as the daemon's next one
    # ua was on the first page, read before its deletion: gone from the poll after
    assert rows(db, "SELECT name, first_poll, gone_poll FROM users ORDER BY id") == [
        ("root-admin", 1, None), ("ua", 1, 3), ("ub", 1, None), ("uc", 1, None),
        ("ud", 1, None), ("ue", 1, None),
    ]  # fmt: skip
    assert rows(db, "SELECT user, first_poll, end_poll FROM sessions ORDER BY id") == [
        ("ub", 1, None), ("ud", 1, None)]
    assert rows(db, "SELECT id, users, servers_running FROM polls") == [
        (1, 6, 2), (2, 6, 2), (3, 5, 2)]
    assert check_whole_polls(db) == 3
