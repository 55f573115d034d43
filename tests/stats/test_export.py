"""`hub-stats export`: snapshots and CSV files taken while a real collector process writes.

The writer is a second process recording polls with the real recorder in a loop; every poll
it records has a known shape (USERS users, SERVERS servers, every last_activity moved), so a
copy holding part of a poll shows up as a wrong count.
"""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hubsidecars.hubapi import User
from realparts.restuser import REPO
from realparts.tmpfs import fill
from realparts.waiting import wait_until
from stats.export import ExportError, export_csv, export_snapshot, spreadsheet_safe
from stats.recorder import record_poll
from stats.schema import SCHEMA_VERSION, VIEWS, connect
from tests.stats.activity_data import record_some_polls

USERS, SERVERS = 60, 20
EVENTS_PER_POLL = USERS + SERVERS  # every user's and every server's last_activity moves

# A collector stand-in: the real recorder, polls of a fixed shape, about 30 a second, until
# STOP exists. Prints "ready" after its first poll.
WRITER = textwrap.dedent(f"""
    import sys
    import time
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from hubsidecars.hubapi import Server, User
    from stats.recorder import record_poll
    from stats.schema import connect

    db = connect(sys.argv[1])
    stop = Path(sys.argv[2])
    start = datetime(2026, 1, 5, 8, tzinfo=UTC)
    poll = 0
    while not stop.exists():
        now = start + timedelta(minutes=5 * poll)
        users = []
        for i in range({USERS}):
            name = f"user{{i:03d}}"
            servers = {{}}
            if i < {SERVERS}:
                servers[""] = Server(name, "", f"/user/{{name}}/", start, now, None, True)
            users.append(User(name, False, (), None, now, servers))
        record_poll(db, users, time=now, interval=300)
        poll += 1
        if poll == 1:
            print("ready", flush=True)
        time.sleep(0.02)  # a busy collector, not a runaway one
""")


@pytest.fixture
def writer(tmp_path):
    """A real second process recording polls into tmp_path/activity.sqlite until teardown."""
    db_path = tmp_path / "activity.sqlite"
    stop = tmp_path / "stop-writer"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(db_path), str(stop)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)  # fmt: skip
    line = process.stdout.readline()
    assert line == "ready\n", process.stderr.read()
    yield db_path
    stop.touch()
    try:
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, process.stderr.read()


def polls_in(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM polls").fetchone()[0]
    finally:
        conn.close()


def assert_whole_polls(path: Path) -> int:
    """The copy holds whole polls only; returns how many."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        polls = conn.execute("SELECT count(*), min(id), max(id) FROM polls").fetchone()
        assert polls[0] >= 1 and polls[2] - polls[1] + 1 == polls[0], polls
        # The UPDATE at the end of a poll's transaction fills the totals: a torn poll has NULLs.
        shapes = conn.execute("SELECT DISTINCT users, servers_running FROM polls").fetchall()
        assert shapes == [(USERS, SERVERS)], shapes
        per_poll = conn.execute(
            "SELECT p.id, count(e.id) FROM polls p LEFT JOIN activity_events e "
            "ON e.poll_id = p.id GROUP BY p.id"
        ).fetchall()  # fmt: skip
        assert {events for _, events in per_poll} == {EVENTS_PER_POLL}, per_poll[-3:]
        assert conn.execute("SELECT count(*) FROM activity_events").fetchone()[0] == (
            EVENTS_PER_POLL * polls[0]
        )  # fmt: skip
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == USERS
        assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == SERVERS
        return polls[0]
    finally:
        conn.close()


def test_snapshots_taken_while_a_collector_writes_hold_whole_polls(writer, tmp_path):
    counts = []
    for n in range(8):
        seen_before = polls_in(writer)
        out = export_snapshot(str(writer), str(tmp_path / f"snap{n}.sqlite"))
        assert out == str(tmp_path / f"snap{n}.sqlite")
        # The snapshot has every poll committed before the export began (the WAL's too).
        count = assert_whole_polls(Path(out))
        assert count >= seen_before, (count, seen_before)
        counts.append(count)
        time.sleep(0.15)
    # The writer really was writing throughout.
    assert counts == sorted(counts) and counts[-1] > counts[0], counts
    wait_until(lambda: polls_in(writer) > counts[-1], 10, "the writer's next poll")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert leftovers == []


def test_a_snapshot_is_a_standalone_file(writer, tmp_path):
    out = Path(export_snapshot(str(writer), str(tmp_path / "copy.sqlite")))
    assert not Path(str(out) + "-wal").exists() and not Path(str(out) + "-shm").exists()
    # Moved elsewhere alone, it opens, in rollback-journal mode, at the same schema version,
    # with the descriptions an analyst reads.
    moved = tmp_path / "elsewhere" / "activity.sqlite"
    moved.parent.mkdir()
    out.rename(moved)
    conn = sqlite3.connect(moved)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    views = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='view'")}
    assert views == set(VIEWS)
    assert conn.execute("SELECT count(*) FROM schema_docs WHERE object = 'activity'").fetchone()[0]
    # The legacy view answers on the copy: one row per user per poll.
    polls = conn.execute("SELECT count(*) FROM polls").fetchone()[0]
    assert conn.execute("SELECT count(*) FROM activity").fetchone()[0] == USERS * polls
    conn.close()
    assert os.stat(moved).st_mode & 0o777 == 0o600  # user names inside: private by default


def test_an_existing_target_is_refused_unless_overwrite(writer, tmp_path):
    target = tmp_path / "mine.sqlite"
    target.write_text("an analyst's own file\n")
    with pytest.raises(ExportError, match="exists"):
        export_snapshot(str(writer), str(target))
    assert target.read_text() == "an analyst's own file\n"
    export_snapshot(str(writer), str(target), overwrite=True)
    assert_whole_polls(target)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_a_full_disk_leaves_nothing_at_the_target(tmp_path):
    db_path = tmp_path / "activity.sqlite"
    record_some_polls(db_path, polls=25)
    assert db_path.stat().st_size > 500_000  # twice the room left below
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mountpoint)],
                   check=True, capture_output=True)  # fmt: skip
    try:
        fill(mountpoint, leave=256 * 1024)
        with pytest.raises(ExportError, match="snap.sqlite: its file system is full"):
            export_snapshot(str(db_path), str(mountpoint / "snap.sqlite"))
        assert sorted(p.name for p in mountpoint.iterdir()) == ["filler"]
    finally:
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=True, capture_output=True)


def test_a_missing_database_is_one_clear_error(tmp_path):
    with pytest.raises(ExportError, match="no activity database"):
        export_snapshot(str(tmp_path / "nope.sqlite"), str(tmp_path / "out.sqlite"))
    with pytest.raises(ExportError, match="no activity database"):
        export_csv(str(tmp_path / "nope.sqlite"), str(tmp_path / "csv"))
    assert not (tmp_path / "out.sqlite").exists()


def read_csv(path: str) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def test_csv_files_are_the_views_rows(tmp_path):
    db_path = tmp_path / "activity.sqlite"
    record_some_polls(db_path, polls=12)
    written = export_csv(str(db_path), str(tmp_path / "out" / "csv"))
    assert written == [str(tmp_path / "out" / "csv" / f"{name}.csv") for name in VIEWS]
    conn = sqlite3.connect(db_path)
    for name, path in zip(VIEWS, written, strict=True):
        cursor = conn.execute(f"SELECT * FROM [{name}]")
        header = [column[0] for column in cursor.description]
        expected = [["" if v is None else str(v) for v in row] for row in cursor.fetchall()]
        rows = read_csv(path)
        assert rows[0] == header, name
        assert rows[1:] == expected, name
    # Views with rows in them were really compared (not only headers).
    activity = read_csv(written[0])
    assert len(activity) > 300 and ["date", "user", "active"] == activity[0]
    names = {row[1] for row in activity}
    assert "zoë" in names and "jürgen,comma" in names
    assert {row[2] for row in activity[1:]} == {"0", "1"}


def test_csv_text_a_spreadsheet_would_run_is_quoted(tmp_path):
    """User names are whatever the authenticator allowed: '=1+2' must reach a spreadsheet
    as text, not as a formula; negative numbers stay numbers."""

    names = ["=1+2", "@sum(a1)", "+1-1", "-2+3", "\tcmd", "\rx", "plain-name"]
    db = connect(str(tmp_path / "activity.sqlite"))
    moment = datetime(2026, 3, 2, 9, tzinfo=UTC)
    record_poll(db, [User(name, False, (), None, moment) for name in names],
                time=moment, interval=300)  # fmt: skip
    db.conn.close()

    written = export_csv(str(tmp_path / "activity.sqlite"), str(tmp_path / "csv"))

    users = {row[1] for row in read_csv(written[list(VIEWS).index("activity")])[1:]}
    assert users == {"'=1+2", "'@sum(a1)", "'+1-1", "'-2+3", "'\tcmd", "'\rx", "plain-name"}
    assert spreadsheet_safe(-3) == -3 and spreadsheet_safe(-0.5) == -0.5


def test_csv_files_taken_while_a_collector_writes_agree_with_each_other(writer, tmp_path):
    for n in range(4):
        written = export_csv(str(writer), str(tmp_path / f"csv{n}"))
        activity = read_csv(written[0])[1:]
        peak = read_csv(written[list(VIEWS).index("peak_concurrent_servers")])[1:]
        # Both files were read at the same poll: the activity view has USERS rows per poll
        # counted by peak_concurrent_servers.
        polls = sum(int(row[2]) for row in peak)
        assert len(activity) == USERS * polls, (len(activity), polls)
        time.sleep(0.1)


def test_hub_stats_export_command(writer, tmp_path):
    def hub_stats_export(*args: str) -> subprocess.CompletedProcess:
        command = [str(REPO / ".venv/bin/hub-stats"), "export", "--db", str(writer), *args]
        return subprocess.run(command, check=False, capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin"})  # fmt: skip

    done = hub_stats_export(str(tmp_path / "a.sqlite"))
    assert done.returncode == 0, done.stderr
    assert_whole_polls(tmp_path / "a.sqlite")
    again = hub_stats_export(str(tmp_path / "a.sqlite"))
    assert again.returncode == 2, again.stderr
    assert again.stderr.count("\n") == 1 and "exists" in again.stderr, again.stderr
    as_csv = hub_stats_export("--csv", str(tmp_path / "csv"))
    assert as_csv.returncode == 0, as_csv.stderr
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == sorted(
        f"{name}.csv" for name in VIEWS
    )  # fmt: skip
