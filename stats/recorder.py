"""Write one poll of the hub into activity.sqlite: one transaction, rows only for what changed.

`record_poll` takes the hub's complete user list (hubsidecars.hubapi.User, servers included),
compares it with what the database says is present now, and writes: one `polls` row; users
that appeared or went; server runs (`sessions`) that started, became ready or stopped; an
`activity_events` row for every last_activity that moved. Nothing else: a poll in which
nothing changed adds one row. `record_failed_poll` records a poll the hub did not answer.
A poll is all or nothing: an exception, or the process killed, leaves the previous polls only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlite_utils

from hubsidecars.hubapi import User
from stats.schema import transaction


def format_time(moment: datetime | None) -> str | None:
    """UTC, ISO 8601, milliseconds, explicit offset: sorts as text."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def as_kept(moment: datetime) -> datetime:
    """`moment` to the millisecond, as format_time keeps it in the file: what the poll row
    decides on is what the views decide on."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class PollSummary:
    poll_id: int
    users: int
    servers_running: int | None
    servers_pending: int | None
    active_users: int | None
    users_new: int
    users_gone: int
    sessions_started: int
    sessions_ended: int
    events: int

    def line(self) -> str:
        return (f"users={self.users} running={self.servers_running} "
                f"pending={self.servers_pending} active={self.active_users} "
                f"new_users={self.users_new} gone_users={self.users_gone} "
                f"started={self.sessions_started} stopped={self.sessions_ended} "
                f"events={self.events}")  # fmt: skip


def record_failed_poll(db: sqlite_utils.Database, *, time: datetime, interval: float,
                       error: str, duration_ms: int | None = None) -> int:  # fmt: skip
    with transaction(db):
        cursor = db.execute(
            "INSERT INTO polls (time, interval_s, ok, error, duration_ms) VALUES (?, ?, 0, ?, ?)",
            [format_time(time), interval, error[:2000], duration_ms],
        )
        return cursor.lastrowid


def record_poll(
    db: sqlite_utils.Database,
    users: Iterable[User],
    *,
    time: datetime,
    interval: float,
    duration_ms: int | None = None,
    hub_version: str | None = None,
    groups: Mapping[str, Iterable[str]] | None = None,
    servers_visible: bool = True,
    unreadable: frozenset[str] = frozenset(),
) -> PollSummary:
    """Record a complete listing of the hub's users taken at `time`. `groups` maps group name
    to member names when the token may read them (else memberships are left as they were);
    `servers_visible=False` (the token hides servers) leaves server runs as they were, rather
    than ending them all. Users in `unreadable` were listed but could not be read: they and
    their server runs stay as they were (not recorded as gone)."""
    listing = {user.name: user for user in users}
    with transaction(db):
        poll_id = db.execute(
            "INSERT INTO polls (time, interval_s, ok, duration_ms, hub_version) "
            "VALUES (?, ?, 1, ?, ?)", [format_time(time), interval, duration_ms, hub_version],
        ).lastrowid  # fmt: skip
        writer = _PollWriter(db, poll_id, unreadable)
        new, gone = writer.users(listing)
        started, ended = writer.sessions(listing) if servers_visible else (0, 0)
        if groups is not None:
            writer.groups(groups)
        running = pending = active = None  # unknown when the token hides servers
        if servers_visible:
            running = sum(1 for u in listing.values() for s in u.servers.values() if s.ready)
            pending = sum(1 for u in listing.values() for s in u.servers.values() if s.pending)
            since = as_kept(time) - timedelta(seconds=interval)
            active = sum(1 for u in listing.values() if u.servers and u.last_activity
                         and as_kept(u.last_activity) >= since)  # fmt: skip
        db.execute(
            "UPDATE polls SET users = ?, servers_running = ?, servers_pending = ?, "
            "active_users = ?, duration_ms = ? WHERE id = ?",
            [len(listing), running, pending, active, duration_ms, poll_id],
        )
        return PollSummary(poll_id, len(listing), running, pending, active, new, gone, started,
                           ended, writer.events)  # fmt: skip


class _PollWriter:
    """The diff of one poll against the present state; used inside record_poll's transaction."""

    def __init__(self, db: sqlite_utils.Database, poll_id: int,
                 unreadable: frozenset[str] = frozenset()) -> None:  # fmt: skip
        self.db = db
        self.poll_id = poll_id
        self.unreadable = unreadable
        self.events = 0
        self._event_rows: list[tuple] = []

    def _event(self, user: str, server_name: str | None, session_id: int | None,
               last_activity: str) -> None:  # fmt: skip
        self._event_rows.append((self.poll_id, user, server_name, session_id, last_activity))

    def _flush_events(self) -> None:
        if self._event_rows:
            self.db.conn.executemany(
                "INSERT INTO activity_events (poll_id, user, server_name, session_id, "
                "last_activity) VALUES (?, ?, ?, ?, ?)", self._event_rows,
            )  # fmt: skip
            self.events += len(self._event_rows)
            self._event_rows = []

    def users(self, listing: Mapping[str, User]) -> tuple[int, int]:
        present = {
            name: (row_id, admin, created, last)
            for row_id, name, admin, created, last in self.db.execute(
                "SELECT id, name, admin, created, last_activity FROM users "
                "WHERE gone_poll IS NULL")
        }  # fmt: skip
        gone = [(self.poll_id, present[name][0])
                for name in present.keys() - listing.keys() - self.unreadable]  # fmt: skip
        self.db.conn.executemany("UPDATE users SET gone_poll = ? WHERE id = ?", gone)
        new_rows, changes = [], []
        for name, user in listing.items():
            admin = None if user.admin is None else int(user.admin)
            created, last = format_time(user.created), format_time(user.last_activity)
            if name not in present:
                new_rows.append((name, self.poll_id, admin, created, last))
                if last:
                    self._event(name, None, None, last)
                continue
            row_id, was_admin, was_created, was_last = present[name]
            admin = was_admin if admin is None else admin  # hidden now: keep what was seen
            created = created or was_created
            last_now = last if last and (not was_last or last > was_last) else was_last
            if (admin, created, last_now) != (was_admin, was_created, was_last):
                changes.append((admin, created, last_now, row_id))
            if last_now != was_last:
                self._event(name, None, None, last_now)
        self.db.conn.executemany(
            "INSERT INTO users (name, first_poll, admin, created, last_activity) "
            "VALUES (?, ?, ?, ?, ?)", new_rows,
        )  # fmt: skip
        self.db.conn.executemany(
            "UPDATE users SET admin = ?, created = ?, last_activity = ? WHERE id = ?", changes
        )
        self._flush_events()
        return len(new_rows), len(gone)

    def sessions(self, listing: Mapping[str, User]) -> tuple[int, int]:
        open_runs = {
            (user, server): (row_id, started, ready_poll, last)
            for row_id, user, server, started, ready_poll, last in self.db.execute(
                "SELECT id, user, server_name, started, ready_poll, last_activity FROM sessions "
                "WHERE end_poll IS NULL")
        }  # fmt: skip
        seen: set[tuple[str, str]] = set()
        ended, started_count, restarted = [], 0, 0
        for user in listing.values():
            for server in user.servers.values():
                key = (user.name, server.name)
                seen.add(key)
                started = format_time(server.started)
                last = format_time(server.last_activity)
                run = open_runs.get(key)
                if run is not None and (run[1] == started or not started or not run[1]):
                    self._same_run(run, user.name, server, started, last)
                    continue
                if run is not None:  # stopped and started again between two polls
                    # closed first: one open run per server (the unique index says so)
                    self.db.execute("UPDATE sessions SET end_poll = ? WHERE id = ?",
                                    [self.poll_id, run[0]])  # fmt: skip
                    restarted += 1
                row_id = self.db.execute(
                    "INSERT INTO sessions (user, server_name, started, first_poll, ready_poll, "
                    "last_activity) VALUES (?, ?, ?, ?, ?, ?)",
                    [user.name, server.name, started, self.poll_id,
                     self.poll_id if server.ready else None, last],
                ).lastrowid  # fmt: skip
                started_count += 1
                if last:
                    self._event(user.name, server.name, row_id, last)
        for key in open_runs.keys() - seen:
            if key[0] not in self.unreadable:
                ended.append((self.poll_id, open_runs[key][0]))
        self.db.conn.executemany("UPDATE sessions SET end_poll = ? WHERE id = ?", ended)
        self._flush_events()
        return started_count, len(ended) + restarted

    def _same_run(self, run, user: str, server, started: str | None, last: str | None) -> None:
        row_id, was_started, ready_poll, was_last = run
        ready = ready_poll if ready_poll is not None or not server.ready else self.poll_id
        last_now = last if last and (not was_last or last > was_last) else was_last
        started_now = was_started or started
        if (ready, last_now, started_now) != (ready_poll, was_last, was_started):
            self.db.execute(
                "UPDATE sessions SET ready_poll = ?, last_activity = ?, started = ? WHERE id = ?",
                [ready, last_now, started_now, row_id],
            )
        if last_now != was_last:
            self._event(user, server.name, row_id, last_now)

    def groups(self, groups: Mapping[str, Iterable[str]]) -> None:
        present = {
            (group, user): row_id
            for row_id, group, user in self.db.execute(
                "SELECT id, group_name, user FROM group_members WHERE gone_poll IS NULL")
        }  # fmt: skip
        listed = {(group, user) for group, members in groups.items() for user in members}
        self.db.conn.executemany(
            "UPDATE group_members SET gone_poll = ? WHERE id = ?",
            [(self.poll_id, present[key]) for key in present.keys() - listed],
        )
        self.db.conn.executemany(
            "INSERT INTO group_members (group_name, user, first_poll) VALUES (?, ?, ?)",
            [(group, user, self.poll_id) for group, user in sorted(listed - present.keys())],
        )
