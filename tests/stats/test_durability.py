"""activity.sqlite survives what happens to a real collector: SIGKILL inside a poll's
transaction or at any moment, and analysts reading the file while it writes.

A real hub of 300 users (100 running servers, responder spawner) shared by the module; each
test has its own database. Activity is pinned for a share of the users before each poll, so
every poll writes events and not only its own row.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from realparts.hub import HubService
from realparts.stats import (
    STATS_SCOPES,
    argv,
    check_whole_polls,
    killer_env,
    rows,
    run_once,
    stats_env,
)
from realparts.waiting import wait_until

pytestmark = pytest.mark.realhub

CONFIG = "c.JupyterHub.last_activity_interval = 24 * 3600\n"
NAMES = [f"d{number:03d}" for number in range(300)]
RUNNING = NAMES[::3]


@pytest.fixture(scope="module")
def hub(start_module_hub):
    hub = start_module_hub([HubService("admin", ["admin:users", "admin:servers",
                                                 "users:activity"]),
                            HubService("stats", STATS_SCOPES)], CONFIG,
                           spawner="responder")  # fmt: skip
    hub.create_users(NAMES, "admin")
    hub.start_servers(RUNNING, "admin")
    return hub


def pin_some(hub, count: int, seed: int) -> None:
    """Move the activity of `count` running users forward, past every earlier pin (the hub
    keeps the later of two activities)."""
    stamp = (datetime.now(UTC) + timedelta(minutes=50)).isoformat()
    for name in random.Random(seed).sample(RUNNING, count):
        body = {"last_activity": stamp, "servers": {"": {"last_activity": stamp}}}
        reply = hub.api("POST", f"/users/{name}/activity", "admin", json=body)
        assert reply.status_code == 200, reply.text


def count_polls(db: Path) -> int:
    return rows(db, "SELECT count(*) FROM polls")[0][0]


@pytest.mark.parametrize("statement", ["SELECT id, name, admin", "INSERT INTO activity_events",
                                       "UPDATE polls", "COMMIT"])  # fmt: skip
def test_sigkill_inside_the_poll_leaves_whole_polls(hub, tmp_path, statement):
    db = tmp_path / "activity.sqlite"
    first = run_once(hub, "stats", db, interval=60)
    assert first.returncode == 0, first.log
    pin_some(hub, 20, seed=len(statement))
    killed = run_once(hub, "stats", db, interval=60, env=killer_env(tmp_path, statement))
    assert killed.returncode == -signal.SIGKILL, killed.log
    assert Path(f"{db}-wal").exists()  # the poll was written into the WAL, never committed
    assert count_polls(db) == 1
    assert check_whole_polls(db) == 1
    assert rows(db, "SELECT count(*) FROM activity_events WHERE poll_id > 1") == [(0,)]
    # the next poll sees the moved activity as if the killed one had never been
    after = run_once(hub, "stats", db, interval=60)
    assert after.returncode == 0, after.log
    assert rows(db, "SELECT id, ok FROM polls") == [(1, 1), (2, 1)]
    assert rows(db, "SELECT count(DISTINCT user) FROM activity_events WHERE poll_id = 2 "
                    "AND server_name IS NULL") == [(20,)]  # fmt: skip
    assert check_whole_polls(db) == 2


def test_sigkill_at_random_moments(hub, tmp_path):
    """The real command killed at random points of its life, 12 times: the file is valid and
    holds whole polls only, whether the kill came before, during or after the commit."""
    db = tmp_path / "activity.sqlite"
    env = stats_env(hub.token("stats"))
    # The moments are spread over twice the life of an unkilled run measured here, so kills
    # land before and after the commit on a fast machine and on a busy one alike.
    started = time.monotonic()
    assert run_once(hub, "stats", db, interval=60).returncode == 0
    lifetime = time.monotonic() - started
    chance = random.Random(7)
    outcomes = []

    def kill_a_run(attempt: int, when) -> None:
        pin_some(hub, 30, seed=100 + attempt)
        before = count_polls(db)
        process = subprocess.Popen(argv(hub.api_url, db, "--once", interval=60), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   stdin=subprocess.DEVNULL)  # fmt: skip
        when(before)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        outcomes.append(count_polls(db) - before)
        assert outcomes[-1] in (0, 1)
        check_whole_polls(db)

    for attempt in range(12):
        kill_a_run(attempt, lambda _: time.sleep(chance.uniform(0.2, 2.5) * lifetime))
    # Both kinds of kill, whatever the machine's load did to the moments above: one before
    # the process could even connect, one just after its commit.
    if 0 not in outcomes:
        kill_a_run(12, lambda _: time.sleep(0.05))
    if 1 not in outcomes:
        kill_a_run(13, lambda before: wait_until(lambda: count_polls(db) > before, 60,
                                                 "the poll committed"))  # fmt: skip
    assert run_once(hub, "stats", db, interval=60).returncode == 0
    assert check_whole_polls(db) == count_polls(db)
    assert 0 in outcomes and 1 in outcomes, outcomes


def test_reader_holding_the_file_never_blocks_the_collector(hub, tmp_path):
    db = tmp_path / "activity.sqlite"
    unblocked = run_once(hub, "stats", db, interval=60)
    assert unblocked.returncode == 0
    # an analyst's notebook: a read transaction open on the file for the whole time
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM activity").fetchone() == (300,)
    try:
        for attempt in range(3):
            pin_some(hub, 30, seed=200 + attempt)
            run = run_once(hub, "stats", db, interval=60)
            assert run.returncode == 0, run.log
            # the busy timeout is 5 s: a blocked writer would take at least that much longer
            assert run.seconds < unblocked.seconds + 4, (run.seconds, unblocked.seconds)
            assert "locked" not in run.log
        # the reader still sees the file as it was when its transaction began
        assert reader.execute("SELECT count(*) FROM polls").fetchone() == (1,)
        assert count_polls(db) == 4
        assert rows(db, "PRAGMA journal_mode") == [("wal",)]
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert check_whole_polls(db) == 4


def test_reader_during_the_daemon(hub, tmp_path):
    """The daemon polls every 5 s while a reader keeps a read transaction open and queries
    the views in a loop: every poll of the daemon is recorded, none failed."""
    from realparts.stats import StatsDaemon

    db = tmp_path / "activity.sqlite"
    daemon = StatsDaemon(hub, "stats", db, tmp_path, interval=5).start()
    try:
        daemon.wait_for('msg="poll done"', timeout=30)
        reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
        reader.execute("BEGIN")
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            reader.execute("SELECT count(*) FROM activity").fetchone()
            reader.execute("SELECT * FROM session_spans").fetchall()
            time.sleep(0.2)
        reader.execute("COMMIT")
        reader.close()
        log = daemon.wait_for('msg="poll done"', count=3, timeout=30)
        assert 'msg="poll failed"' not in log
    finally:
        assert daemon.signal() == 0
    done = daemon.log().count('msg="poll done"')
    assert rows(db, "SELECT count(*), sum(ok) FROM polls") == [(done, done)]
    assert check_whole_polls(db) == done
