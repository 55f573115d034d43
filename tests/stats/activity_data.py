"""A small activity database with known contents, written through the real recorder.

Five successful hourly polls over three days and one failed poll, four users, and Docker
samples on two hosts. The numbers the charts, the CSVs and /stats.json must show are spelled
out below as constants, worked out by hand from the polls (not computed by the code under
test).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hubsidecars.hubapi import Server, User
from stats.recorder import record_failed_poll, record_poll
from stats.schema import connect

INTERVAL = 3600.0
MiB = 1024 * 1024


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """A time in the week of Monday 2026-03-02."""
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def _user(name: str, last: datetime | None, *servers: Server) -> User:
    return User(name=name, admin=False, groups=(), created=at(1, 12), last_activity=last,
                servers={server.name: server for server in servers})  # fmt: skip


def _server(user: str, name: str, started: datetime, last: datetime | None,
            ready: bool = True) -> Server:  # fmt: skip
    return Server(user=user, name=name, url=f"/user/{user}/{name}", started=started,
                  last_activity=last, pending=None if ready else "spawn", ready=ready)  # fmt: skip


def polls() -> list[tuple[datetime, list[User]]]:
    alice_server = at(2, 8, 50)
    return [
        (at(2, 9), [  # Monday 09:00: alice's server runs
            _user("alice", at(2, 8, 55), _server("alice", "", alice_server, at(2, 8, 55))),
            _user("bob", None), _user("carol", None), _user("dave", None),
        ]),
        (at(2, 10), [  # bob starts his default server
            _user("alice", at(2, 9, 40), _server("alice", "", alice_server, at(2, 9, 40))),
            _user("bob", at(2, 9, 50), _server("bob", "", at(2, 9, 30), at(2, 9, 50))),
            _user("carol", None), _user("dave", None),
        ]),
        (at(3, 14), [  # Tuesday 14:00: bob on a named server, carol's server, dave's pending
            _user("alice", at(3, 13, 30), _server("alice", "", alice_server, at(3, 13, 30))),
            _user("bob", at(3, 13, 20), _server("bob", "gpu", at(3, 13, 10), at(3, 13, 20))),
            _user("carol", at(3, 13, 45), _server("carol", "", at(3, 13), at(3, 13, 45))),
            _user("dave", None, _server("dave", "", at(3, 13, 55), None, ready=False)),
        ]),
        (at(3, 15), [  # bob and carol stopped; dave still pending
            _user("alice", at(3, 13, 30), _server("alice", "", alice_server, at(3, 13, 30))),
            _user("bob", at(3, 13, 20)), _user("carol", at(3, 13, 45)),
            _user("dave", None, _server("dave", "", at(3, 13, 55), None, ready=False)),
        ]),
        (at(4, 20), [  # Wednesday 20:00: alice stopped, dave works
            _user("alice", at(3, 13, 30)), _user("bob", at(3, 13, 20)),
            _user("carol", at(3, 13, 45)),
            _user("dave", at(4, 19, 30), _server("dave", "", at(4, 19), at(4, 19, 30))),
        ]),
    ]  # fmt: skip


# What the database must say, worked out by hand from polls() above.
DAILY_ACTIVE_USERS = {"2026-03-02": 2, "2026-03-03": 3, "2026-03-04": 1}
SERVERS_PER_POLL = [1, 2, 3, 1, 1]
PEAK_SERVERS_PER_DAY = {"2026-03-02": 2, "2026-03-03": 3, "2026-03-04": 1}
# (weekday 0 = Monday, hour): distinct users whose own last_activity fell in that hour
HOUR_OF_WEEK = {(0, 8): 1, (0, 9): 2, (1, 13): 3, (2, 19): 1}
LAST_OK_POLL = "2026-03-04T20:00:00.000+00:00"
FAILED_POLL = "2026-03-04T21:00:00.000+00:00"
FAILED_ERROR = "hub answered 502 Bad Gateway"
NOW = {"users": 4, "active_users": 1, "servers_running": 1, "servers_pending": 0}
# Samples of the last successful poll, per host; an older poll's samples must not count.
DOCKER_HOSTS = {
    "docker-a": {"containers": 1, "cpu_percent": 12.5, "memory_bytes": 100 * MiB,
                 "memory_limit_bytes": 1024 * MiB, "cpus": 4, "memory_total_bytes": 8192 * MiB},
    "docker-b": {"containers": 2, "cpu_percent": 75.0, "memory_bytes": 500 * MiB,
                 "memory_limit_bytes": 2048 * MiB, "cpus": 16,
                 "memory_total_bytes": 65536 * MiB},
}  # fmt: skip


def fill(db_path: str, *, failed_poll: bool = True, docker: bool = True) -> None:
    db = connect(db_path)
    try:
        poll_ids = []
        for moment, users in polls():
            poll_ids.append(record_poll(db, users, time=moment, interval=INTERVAL,
                                        hub_version="5.3.0", groups={}).poll_id)  # fmt: skip
        if docker:
            samples = [
                (poll_ids[3], "docker-a", "jupyter-alice", "alice", "", 90.0, 900 * MiB,
                 1024 * MiB),
                (poll_ids[4], "docker-a", "jupyter-dave", "dave", "", 12.5, 100 * MiB,
                 1024 * MiB),
                (poll_ids[4], "docker-b", "jupyter-x", "x", "", 50.0, 200 * MiB, 1024 * MiB),
                (poll_ids[4], "docker-b", "jupyter-y", "y", "", 25.0, 300 * MiB, 1024 * MiB),
            ]  # fmt: skip
            hosts = [(poll, host, figures["cpus"], figures["memory_total_bytes"])
                     for poll in poll_ids[3:5] for host, figures in DOCKER_HOSTS.items()]
            with db.conn:
                db.conn.executemany(
                    "INSERT INTO container_samples (poll_id, host, container, user, "
                    "server_name, cpu_percent, memory_bytes, memory_limit_bytes) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", samples,
                )  # fmt: skip
                db.conn.executemany(
                    "INSERT INTO docker_hosts (poll_id, host, cpus, memory_bytes) "
                    "VALUES (?, ?, ?, ?)", hosts)  # fmt: skip
        if failed_poll:
            record_failed_poll(db, time=at(4, 21), interval=INTERVAL, error=FAILED_ERROR)
    finally:
        db.conn.close()


def add_later_day(db_path: str) -> None:
    """One more poll, on Monday 2026-03-09 with two servers: four days of polls, so the
    concurrent-servers chart switches to one bar per day."""
    db = connect(db_path)
    try:
        record_poll(db, [
            _user("alice", at(9, 7), _server("alice", "", at(9, 6), at(9, 7))),
            _user("bob", at(9, 7, 30), _server("bob", "", at(9, 6), at(9, 7, 30))),
            _user("carol", at(3, 13, 45)), _user("dave", at(4, 19, 30)),
        ], time=at(9, 8), interval=INTERVAL)  # fmt: skip
    finally:
        db.conn.close()


def record_some_polls(db_path: Path, polls: int) -> None:
    """Polls with a life in them: users who come, servers that start and stop, a failed poll,
    a name with non-ASCII letters."""
    db = connect(str(db_path))
    start = datetime(2026, 3, 2, 9, tzinfo=UTC)
    names = ["zoë", "jürgen,comma"] + [f"student{i:03d}" for i in range(300)]
    for poll in range(polls):
        now = start + timedelta(minutes=30 * poll)
        if poll == 3:
            record_failed_poll(db, time=now, interval=1800, error="hub down: 502")
            continue
        users = []
        for i, name in enumerate(names[: 50 + 10 * poll]):
            active = (i + poll) % 3 == 0
            servers = {}
            if active:
                servers[""] = Server(name, "", None, now - timedelta(minutes=5), now, None, True)
            last = now if active else start
            users.append(User(name, i == 0, (), None, last, servers))
        record_poll(db, users, time=now, interval=1800, hub_version="6.1.1")
    db.conn.close()
