"""activity.sqlite's schema: migrations from older files lose nothing, and the views on crafted
polls (written through record_poll with the hub API client's own User objects) say what an
analyst expects, row by row."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlite_utils

from hubsidecars.hubapi import Server, User
from realparts.stats import check_whole_polls, rows, run_command, stats_env
from stats import schema
from stats.recorder import format_time, record_failed_poll, record_poll

# A compmodels-era file: the one table its notebooks read, written one row per user per poll.
COMPMODELS_ROWS = [
    ("2015-09-01 10:00:00.123456", "jess", 1),
    ("2015-09-01 10:00:00.123456", "min", 0),
    ("2015-09-01 10:05:00.654321", "jess", 0),
    ("2015-09-01 10:05:00.654321", "min", 1),
]
MONDAY = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def user(name: str, last: datetime | None, *servers: Server, admin: bool = False) -> User:
    return User(name=name, admin=admin, groups=(), created=MONDAY - timedelta(days=30),
                last_activity=last,
                servers={server.name: server for server in servers})  # fmt: skip


def server(name: str, owner: str, started: datetime, last: datetime) -> Server:
    return Server(user=owner, name=name, url=f"/user/{owner}/{name}", started=started,
                  last_activity=last, pending=None, ready=True)  # fmt: skip


def everything(path: Path) -> dict[str, list[tuple]]:
    """Every row of every data table (not the rebuilt descriptions)."""
    conn = sqlite3.connect(path)
    try:
        names = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name != 'schema_docs'")]  # fmt: skip
        return {name: conn.execute(f"SELECT * FROM [{name}] ORDER BY rowid").fetchall()
                for name in names}  # fmt: skip
    finally:
        conn.close()


def three_polls(db: sqlite_utils.Database) -> None:
    """ann works on her default server (activity moves every poll), bob's named server sits
    idle, cy has no server; a failed poll in between; bob's server stops at the last poll."""
    started = MONDAY - timedelta(hours=1)
    idle = server("lab", "bob", started, started)
    for step in range(4):
        moment = MONDAY + timedelta(minutes=5 * step)
        if step == 2:
            record_failed_poll(db, time=moment, interval=300, error="hub unavailable")
            continue
        ann_last = moment - timedelta(seconds=30)
        ann = user("ann", ann_last, server("", "ann", started, ann_last))
        bob = user("bob", started, *([idle] if step < 3 else []), admin=True)
        record_poll(db, [ann, bob, user("cy", None)], time=moment, interval=300)


def test_compmodels_file_migrated_nothing_lost(tmp_path):
    path = tmp_path / "activity.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE activity (date TEXT, user TEXT, active INTEGER)")
    old.executemany("INSERT INTO activity VALUES (?, ?, ?)", COMPMODELS_ROWS)
    old.commit()
    old.close()

    db = schema.connect(str(path))
    assert schema.version(db) == schema.SCHEMA_VERSION == 3
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db["activity"].exists() and "activity" in db.view_names()
    assert rows(path, "SELECT * FROM compmodels_activity") == COMPMODELS_ROWS
    # before any poll, the view is the old table, in its order
    assert rows(path, "SELECT * FROM activity") == COMPMODELS_ROWS
    three_polls(db)
    legacy = rows(path, "SELECT * FROM activity")
    assert legacy[: len(COMPMODELS_ROWS)] == COMPMODELS_ROWS
    new = sorted(legacy[len(COMPMODELS_ROWS):])
    times = [format_time(MONDAY + timedelta(minutes=5 * step)) for step in (0, 1, 3)]
    assert new == sorted([
        (times[0], "ann", 1), (times[0], "bob", 0), (times[0], "cy", 0),
        (times[1], "ann", 1), (times[1], "bob", 0), (times[1], "cy", 0),
        (times[2], "ann", 1), (times[2], "bob", 0), (times[2], "cy", 0),
    ])  # fmt: skip
    # opened again: nothing applied twice, nothing lost
    before = everything(path)
    db.close()
    again = schema.connect(str(path))
    assert schema.migrate(again) == []
    assert everything(path) == before
    assert check_whole_polls(path) == 3


def test_version_1_database_migrated_nothing_lost(tmp_path):
    path = tmp_path / "activity.sqlite"
    v1 = sqlite_utils.Database(sqlite3.connect(path, isolation_level=None))
    schema.MIGRATIONS[1](v1)
    v1.execute("PRAGMA user_version = 1")
    three_polls(v1)
    v1.close()
    before = everything(path)
    assert len(before["polls"]) == 4 and before["sessions"] and before["activity_events"]
    assert "container_samples" not in before

    db = schema.connect(str(path))
    assert schema.version(db) == 3
    after = everything(path)
    assert after.pop("container_samples") == [] and after.pop("docker_hosts") == []
    assert after == before
    assert rows(path, "SELECT count(*) FROM activity") == [(9,)]
    assert check_whole_polls(path) == 3
    # the descriptions an analyst reads are there for every table and view
    described = {name for (name,) in rows(path, "SELECT object FROM schema_docs "
                                                "WHERE column = ''")}  # fmt: skip
    assert set(schema.VIEWS) | set(schema.TABLE_DOCS) <= described


def test_newer_database_refused_not_touched(tmp_path):
    path = tmp_path / "activity.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 4")
    conn.execute("CREATE TABLE future (x)")
    conn.commit()
    conn.close()
    with pytest.raises(Exception, match="newer"):  # RuntimeError, or a ConfigError after a fix
        schema.connect(str(path))
    assert rows(path, "PRAGMA user_version") == [(4,)]
    assert rows(path, "SELECT name FROM sqlite_master") == [("future",)]


def test_newer_database_one_line_from_the_command(tmp_path):
    path = tmp_path / "activity.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    from realparts.stats import HUB_STATS

    command = [str(HUB_STATS), "--once", "--url", "http://127.0.0.1:9/hub/api", "--db", str(path)]
    run = run_command(command, stats_env("unused-token-never-sent-0123"), timeout=60)
    assert run.returncode == 2, run.log
    assert "Traceback" not in run.log
    assert len(run.log.strip().splitlines()) == 1 and "upgrade hub-stats" in run.log


def test_views_on_crafted_polls(tmp_path):
    path = tmp_path / "activity.sqlite"
    db = schema.connect(str(path))
    three_polls(db)
    started = format_time(MONDAY - timedelta(hours=1))
    times = [format_time(MONDAY + timedelta(minutes=5 * step)) for step in range(4)]
    assert rows(path, "SELECT * FROM daily_active_users") == [("2026-01-05", 2)]
    assert rows(path, "SELECT * FROM weekly_active_users") == [("2026-01-05", 2)]
    assert rows(path, "SELECT * FROM monthly_active_users") == [("2026-01", 2)]
    # ann's activity moved at 3 polls of 300 s; bob's once (first seen, 09:00)
    assert rows(path, "SELECT * FROM hours_active_per_user_per_day") == [
        ("2026-01-05", "ann", 0.25), ("2026-01-05", "bob", 0.083)]
    assert rows(path, "SELECT * FROM peak_concurrent_servers") == [("2026-01-05", 2, 3)]
    assert rows(path, "SELECT weekday, day_name, hour, user_hours FROM hour_of_week") == [
        (0, "Mon", 9, 2), (0, "Mon", 10, 1)]  # ann at 09:59:30 and 10:x, bob at 09:00
    assert rows(path, "SELECT session_id, user, server_name, started, first_seen, last_seen, "
                      "gone_by, hours, running FROM session_spans ORDER BY session_id") == [
        (1, "ann", "", started, times[0], times[3], None, 1.25, 1),
        (2, "bob", "lab", started, times[0], times[1], times[3], 1.083, 0),
    ]  # fmt: skip
    assert rows(path, "SELECT * FROM sessions_per_user") == [
        ("ann", 1, 1.25, started, started), ("bob", 1, 1.083, started, started)]
    assert rows(path, "SELECT id, ok, users, servers_running, active_users FROM polls") == [
        (1, 1, 3, 2, 1), (2, 1, 3, 2, 1), (3, 0, None, None, None), (4, 1, 3, 1, 1)]


@pytest.mark.parametrize("interval", [5, 60, 300])
def test_the_poll_row_and_the_view_agree_at_the_edge_of_the_interval(tmp_path, interval):
    """Active means activity no older than the interval before the poll, to the millisecond
    the file keeps. The hub's times carry microseconds the file drops: the poll's active_users
    once decided on those and the view on the kept ones, and SQLite's day fractions misjudged
    an exact edge (CI saw active_users 46 against 47 active rows of the view at one poll)."""
    path = tmp_path / "activity.sqlite"
    db = schema.connect(str(path))
    chance = random.Random(interval)
    moment = MONDAY
    for _ in range(40):
        moment += timedelta(seconds=2 * interval, microseconds=chance.randrange(10**6))
        kept = moment.replace(microsecond=moment.microsecond // 1000 * 1000)  # as in the file
        edge = kept - timedelta(seconds=interval)
        within = edge + timedelta(microseconds=chance.randrange(1000))  # kept as the edge
        before = edge - timedelta(microseconds=chance.randrange(1, 1001))  # a millisecond before
        users = [user(name, last, server("", name, MONDAY, last))
                 for name, last in (("edge", within), ("early", before))]  # fmt: skip
        record_poll(db, users, time=moment, interval=interval)
    assert rows(path, "SELECT DISTINCT active_users FROM polls") == [(1,)]
    assert rows(path, "SELECT user, sum(active) FROM activity GROUP BY user") == [
        ("early", 0), ("edge", 40)]  # fmt: skip
    assert check_whole_polls(path) == 40


def test_legacy_view_rows_in_poll_order(tmp_path):
    path = tmp_path / "activity.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE activity (date TEXT, user TEXT, active INTEGER)")
    old.executemany("INSERT INTO activity VALUES (?, ?, ?)", COMPMODELS_ROWS)
    old.commit()
    old.close()
    three_polls(schema.connect(str(path)))
    dates = [date for date, _, _ in rows(path, "SELECT * FROM activity")]
    assert dates == sorted(dates)


def _weeks_of_polls(path: Path, days: int) -> str:
    """`days` of polls every 5 minutes: six users busy on servers restarted every 2 hours
    (an event per poll, 12 server runs a day each), two idle; returns the last day."""
    db = schema.connect(str(path))
    start = MONDAY - timedelta(days=days)
    for step in range(days * 288):
        moment = start + timedelta(minutes=5 * step)
        run_start = moment - timedelta(minutes=5 * (step % 24))
        users = [user(f"busy{n}", moment - timedelta(seconds=20),
                      server("", f"busy{n}", run_start, moment - timedelta(seconds=20)))
                 for n in range(6)] + [user("idle0", None), user("idle1", None)]  # fmt: skip
        record_poll(db, users, time=moment, interval=300)
    db.close()
    return (MONDAY - timedelta(days=1)).date().isoformat()


def _steps(path: Path, sql: str, params: tuple = ()) -> tuple[int, int]:
    """(SQLite virtual machine steps, in thousands; rows) to run `sql`: the work it costs,
    whatever the machine's speed."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 1000)
    try:
        found = conn.execute(sql, params).fetchall()
    finally:
        conn.close()
    return steps[0], len(found)


def test_one_day_of_the_legacy_view_costs_the_same_however_long_the_history(tmp_path):
    """Notebooks read `activity` a day at a time: the work for one day must not grow with the
    weeks recorded before it (a year of 500 users took 28.6 s for a day), and reading the
    whole view must cost about the same per row in a long file as in a short one."""
    costs = {}
    for days in (2, 8):
        path = tmp_path / f"{days}-days.sqlite"
        day = _weeks_of_polls(path, days)
        next_day = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
        one_day = _steps(path, "SELECT * FROM activity WHERE date >= ? AND date < ?",
                         (day, next_day))  # fmt: skip
        whole = _steps(path, "SELECT * FROM activity")
        assert one_day[1] == 288 * 8 and whole[1] == days * 288 * 8
        costs[days] = (one_day[0], whole[0] / whole[1])
    assert costs[8][0] <= 1.25 * costs[2][0], costs  # one day: not 4 times the work
    assert costs[8][1] <= 1.25 * costs[2][1], costs  # per row of the whole view


def test_one_day_costs_the_same_however_many_runs_came_before(tmp_path):
    """The view bounds its server check by the longest run there was: asked through an index,
    not by reading every run, so one day of a file with ten years of runs costs what it does
    in a new file."""
    path = tmp_path / "activity.sqlite"
    day = _weeks_of_polls(path, 2)
    next_day = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    one_day = "SELECT * FROM activity WHERE date >= ? AND date < ?"
    fresh = _steps(path, one_day, (day, next_day))
    conn = sqlite3.connect(path)
    with conn:  # 100,000 short runs of an earlier user, before the day
        conn.executemany("INSERT INTO sessions (user, server_name, first_poll, end_poll) "
                         "VALUES ('earlier', '', 1, 2)", [()] * 100_000)  # fmt: skip
    conn.close()
    crowded = _steps(path, one_day, (day, next_day))
    assert crowded[1] == fresh[1] == 288 * 8
    assert crowded[0] <= 1.25 * fresh[0], (fresh, crowded)


def _hourly_runs(path: Path, days: int) -> None:
    """`days` of polls every 5 minutes: `always` keeps one server running (every poll has a
    server), five users each run a server for one poll every hour (24 runs a day) and are
    without one at the other eleven polls."""
    db = schema.connect(str(path))
    start = MONDAY - timedelta(days=days)
    for step in range(days * 288):
        moment = start + timedelta(minutes=5 * step)
        idle_since = start - timedelta(days=1)
        users = [user("always", idle_since, server("", "always", idle_since, idle_since))]
        for n in range(5):
            running = step % 12 == n
            users.append(user(f"often{n}", moment - timedelta(seconds=20),
                              *([server("", f"often{n}", moment, moment)] if running else [])))
        record_poll(db, users, time=moment, interval=300)
    db.close()


def test_a_user_with_many_runs_costs_the_same_per_row_however_long_the_history(tmp_path):
    """Whether a user had a server at a poll is one bounded look, not a walk through every run
    the user had later (a year of 500 users streamed at 0.22 of the compmodels table's speed):
    the whole view costs about the same per row in 8 days as in 2."""
    per_row = {}
    for days in (2, 8):
        path = tmp_path / f"{days}-days.sqlite"
        _hourly_runs(path, days)
        steps, count = _steps(path, "SELECT * FROM activity")
        assert count == days * 288 * 6
        per_row[days] = steps / count
        # each often-user was active (activity moved and a server ran) at its one poll an hour
        active = rows(path, "SELECT user, sum(active) FROM activity GROUP BY user ORDER BY user")
        assert active == [("always", 0)] + [(f"often{n}", days * 24) for n in range(5)], active
    assert per_row[8] <= 1.25 * per_row[2], per_row


def _random_history(path: Path, seed: int) -> None:
    """40 polls of 6 names at random: named servers whose runs overlap, runs that stay open,
    activity moving forward or not, users deleted and created again, a few failed polls."""
    chance = random.Random(seed)
    db = schema.connect(str(path))
    last = {name: MONDAY - timedelta(days=1) for name in "abcdef"}
    started: dict[tuple[str, str], datetime] = {}
    for step in range(40):
        moment = MONDAY + timedelta(minutes=5 * step)
        if chance.random() < 0.05:
            record_failed_poll(db, time=moment, interval=300, error="hub down")
            continue
        users = []
        for name in "abcdef":
            if chance.random() < 0.1:  # not listed: deleted (its runs end with it)
                started = {key: at for key, at in started.items() if key[0] != name}
                last[name] = MONDAY - timedelta(days=2)  # a new life starts idle
                continue
            if chance.random() < 0.4:
                last[name] = moment - timedelta(seconds=chance.choice((10, 200, 400, 900)))
            servers = []
            for server_name in ("", "lab", "gpu"):
                key = (name, server_name)
                if key in started and chance.random() < 0.25:
                    del started[key]
                elif key not in started and chance.random() < 0.15:
                    started[key] = moment
                if key in started:
                    servers.append(server(server_name, name, started[key], last[name]))
            users.append(user(name, last[name], *servers))
        record_poll(db, users, time=moment, interval=300)
    db.close()


def _activity_as_documented(path: Path) -> list[tuple]:
    """The legacy rows computed plainly from the tables, by the meaning docs/stats.md gives:
    one row per user per successful poll, active when the user had a server at that poll and
    their own last_activity as of it (the greatest up to that poll) is within its interval."""
    conn = sqlite3.connect(path)
    try:
        polls = conn.execute("SELECT id, time, interval_s FROM polls WHERE ok = 1 "
                             "ORDER BY id").fetchall()  # fmt: skip
        lives = conn.execute("SELECT id, name, first_poll, gone_poll FROM users").fetchall()
        runs = conn.execute("SELECT user, first_poll, end_poll FROM sessions").fetchall()
        events = conn.execute("SELECT user, poll_id, last_activity FROM activity_events "
                              "WHERE server_name IS NULL").fetchall()  # fmt: skip
    finally:
        conn.close()
    expected = []
    for poll_id, time, interval in polls:
        at = datetime.fromisoformat(time)
        for _, name, first_poll, gone_poll in sorted(lives):
            if first_poll > poll_id or (gone_poll is not None and gone_poll <= poll_id):
                continue
            had_server = any(who == name and first <= poll_id and (end is None or end > poll_id)
                             for who, first, end in runs)  # fmt: skip
            seen = [datetime.fromisoformat(moment) for who, event_poll, moment in events
                    if who == name and event_poll <= poll_id]  # fmt: skip
            recent = bool(seen) and max(seen) >= at - timedelta(seconds=interval)
            expected.append((time, name, int(had_server and recent)))
    return expected


@pytest.mark.parametrize("seed", range(12))
def test_the_legacy_view_says_what_its_documentation_says(tmp_path, seed):
    path = tmp_path / "random.sqlite"
    _random_history(path, seed)
    view = rows(path, "SELECT * FROM activity")
    expected = _activity_as_documented(path)
    assert sorted(view) == sorted(expected)
    assert sum(active for _, _, active in expected) > 0  # the history had active rows at all


def test_rows_of_polls_with_no_server_cost_no_more_than_listing_them(tmp_path):
    """Most polls of a real hub are nights and weekends, with no server running: the legacy
    view answers their rows without a look into anyone's activity: at most three times the
    work of listing polls times users (more than six times before, a seek per row)."""
    path = tmp_path / "nights.sqlite"
    db = schema.connect(str(path))
    start = MONDAY - timedelta(days=2)
    for step in range(288):  # a day of polls: everyone was busy before, no server now
        moment = start + timedelta(minutes=5 * step)
        users = [user(f"user{n}", start - timedelta(minutes=n)) for n in range(20)]
        record_poll(db, users, time=moment, interval=300)
    db.close()
    view = _steps(path, "SELECT * FROM activity")
    listing = _steps(path, "SELECT p.time, u.name, 0 FROM polls p CROSS JOIN users u "
                           "WHERE p.ok = 1 AND u.first_poll <= p.id "
                           "AND (u.gone_poll IS NULL OR u.gone_poll > p.id)")  # fmt: skip
    assert view[1] == listing[1] == 288 * 20
    assert rows(path, "SELECT sum(active) FROM activity") == [(0,)]
    assert view[0] <= 3 * listing[0], (view, listing)
