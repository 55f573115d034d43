"""One poll: list the hub's users (and groups, and optionally containers), record it.

A hub that does not answer (down, 5xx, timeout, token rejected) makes a failed poll: one
`polls` row with ok=0 and the reason, one log line, and the daemon goes on. A scope the token
lacks is named once in the log; what it hides is not recorded (never recorded as absent).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from hubsidecars.hubapi import HubClient, HubError, MissingScope
from hubsidecars.logs import log_event
from hubsidecars.periodic import PassReport
from stats.footprints import Footprints, load_footprints
from stats.recorder import record_failed_poll, record_poll
from stats.schema import check_file, connect


def hold_collector_lock(db_path: str) -> int:
    """One collector per database: a second one would record every poll twice (and the
    compmodels view would show two rows per user per interval). An flock on the database file
    itself, so that a second path to it (a symlink, a bind mount) meets the same lock; held for
    the life of the process, dropped by the kernel with it. SQLite locks with fcntl, which an
    flock does not disturb. Call stats.schema.check_file first: this creates a missing file
    (empty, which SQLite takes as a new database) but never writes into an existing one."""
    from hubsidecars.config import ConfigError
    from hubsidecars.errors import Busy
    from hubsidecars.locking import HeldElsewhere, hold_process_lock

    try:
        return hold_process_lock(db_path)
    except HeldElsewhere:
        raise Busy(f"another hub-stats collector records into {db_path} (or the file "
                   "it points to); two would record every poll twice") from None  # fmt: skip
    except OSError as error:
        raise ConfigError(f"cannot open the activity database {db_path}: "
                          f"{error.strerror}") from None  # fmt: skip


def _identity(path: str) -> tuple[int, int] | None:
    import os

    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _unique(users) -> list:
    seen: dict = {}
    for user in users:
        seen.setdefault(user.name, user)
    return list(seen.values())

log = logging.getLogger("stats")


class Collector:
    def __init__(self, client: HubClient, db_path: str, interval: float, *,
                 groups: bool = True, containers=None, culler_footprints: str = "",
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:  # fmt: skip
        """`containers`, when given, is called with (db, poll_id) after a recorded poll to add
        the Docker samples (stats.containers). `culler_footprints`: hub-culler's published
        question windows (stats.footprints), read at every poll."""
        self.client = client
        self.db_path = db_path
        check_file(db_path)  # before the lock, which may create the file
        self._lock_fd = hold_collector_lock(db_path)
        self.db = connect(db_path)
        self._identity = _identity(db_path)
        self.interval = interval
        self.want_groups = groups
        self.containers = containers
        self.culler_footprints = culler_footprints
        self.now = now
        self._said: set[str] = set()

    def __call__(self, stop: threading.Event) -> PassReport:
        moment = self.now()
        started = time.monotonic()
        self._reopen_if_replaced()
        unreadable: set[str] = set()

        def skip_user(model, error: Exception) -> None:
            name = model.get("name") if isinstance(model, dict) else None
            if not isinstance(name, str) or not name:
                # without a name it cannot be left "as it was": the poll fails instead
                raise HubError(f"the hub listed something that is not a user: "
                               f"{type(error).__name__}: {error}")  # fmt: skip
            unreadable.add(name)
            self._once(f"unreadable:{name}", "a user the hub lists cannot be read; left as "
                       "it was", user=str(name), error=f"{type(error).__name__}: {error}")  # fmt: skip

        try:
            users = _unique(self.client.iter_users(on_malformed=skip_user))
            users += self._missing_but_there(users, unreadable)
            self._say_hidden(users)
            groups = self._groups()
            version = self.client.version()
            self._refuse_empty_listing(users, unreadable)
            users = self._footprints().strip(users)
        except Exception as error:  # noqa: BLE001 - every failure is a recorded failed poll
            reason = str(error) if isinstance(error, HubError) else (
                f"{type(error).__name__}: {error}")  # fmt: skip
            duration = round((time.monotonic() - started) * 1000)
            record_failed_poll(self.db, time=moment, interval=self.interval, error=reason,
                               duration_ms=duration)  # fmt: skip
            return PassReport(f"poll failed: {reason}", ok=False)
        duration = round((time.monotonic() - started) * 1000)
        servers_visible = not any("servers" in user.hidden for user in users)
        summary = record_poll(self.db, users, time=moment, interval=self.interval,
                              duration_ms=duration, hub_version=version, groups=groups,
                              servers_visible=servers_visible,
                              unreadable=frozenset(unreadable))  # fmt: skip
        if self.containers is not None:
            try:
                self.containers(self.db, summary.poll_id)
            except Exception as error:  # noqa: BLE001 - the hub's poll is recorded anyway
                log_event(log, "container samples failed", logging.WARNING,
                          error=f"{type(error).__name__}: {error}")  # fmt: skip
        return PassReport(summary.line())

    def _footprints(self) -> Footprints:
        try:
            return load_footprints(self.culler_footprints)
        except ValueError as error:
            self._once("footprints", "cannot read hub-culler's footprints: its questions to "
                       "servers may be recorded as activity", error=str(error))  # fmt: skip
            return Footprints()

    def _missing_but_there(self, users: list, unreadable: set[str]) -> list:
        """Users present at the last poll that this listing lacks, asked for one by one: only
        the hub's 404 makes one gone. A listing read page by page is not a snapshot: a user
        deleted (or created) between two page requests shifts the offsets, and a user who
        still runs falls between two pages. Returns the users found; a user the hub cannot be
        asked about (an error) goes into `unreadable`: left as it was. (A real hub lets even a
        token holding list:users alone read a user by name.)"""
        listed = {user.name for user in users} | unreadable
        present = [name for (name,) in self.db.execute(
            "SELECT name FROM users WHERE gone_poll IS NULL ORDER BY id")]  # fmt: skip
        missing = [name for name in present if name not in listed]
        if not missing or not users:
            return []  # an empty listing is _refuse_empty_listing's to judge
        found = []
        for name in missing:
            try:
                user = self.client.get_user(name)
            except (HubError, KeyError, TypeError, ValueError, AttributeError) as error:
                unreadable.add(name)
                self._once(f"unconfirmed:{type(error).__name__}", "a user missing from the "
                           "listing could not be looked up; left as it was", user=name,
                           error=str(error))  # fmt: skip
                continue
            if user is not None:
                found.append(user)
        if found:
            log_event(log, "users missing from the paged listing are still in the hub "
                      "(changed between pages); recorded as present", logging.INFO,
                      users=len(found))  # fmt: skip
        return found

    def _refuse_empty_listing(self, users: list, unreadable: set[str]) -> None:
        """A hub that lists nobody while the database has users present is glitching (its
        database answered nothing for a moment): recording it would end every user and every
        server run, and split them all when they come back."""
        if users or unreadable:
            return
        present = self.db.execute("SELECT count(*) FROM users WHERE gone_poll IS NULL")
        count = present.fetchone()[0]
        if count:
            raise HubError(f"the hub listed no users while {count} were present at the last "
                           "poll; not recorded (a hub that really lost every user shows at "
                           "the next poll too)")  # fmt: skip

    def _reopen_if_replaced(self) -> None:
        """An admin who deletes the file, or puts a restored copy in its place, must find the
        next polls in the file at the path, not in the old file's unlinked inode."""
        if _identity(self.db_path) == self._identity:
            return
        log_event(log, "the activity database was replaced or deleted; reopening",
                  logging.WARNING, db=self.db_path)  # fmt: skip
        try:
            self.db.conn.close()
        except Exception:  # noqa: BLE001
            pass
        import os

        check_file(self.db_path)
        lock_fd = hold_collector_lock(self.db_path)
        os.close(self._lock_fd)  # the old file's: SQLite's connection to it is closed
        self._lock_fd = lock_fd
        self.db = connect(self.db_path)
        self._identity = _identity(self.db_path)

    def _groups(self) -> dict[str, tuple[str, ...]] | None:
        if not self.want_groups:
            return None
        try:
            groups = list(self.client.iter_groups())
        except MissingScope as error:
            self._once("groups", "group memberships are not recorded: the token needs "
                       "list:groups and read:groups", error=str(error))  # fmt: skip
            return None
        if any("users" in group.hidden for group in groups):
            self._once("groups", "group memberships are not recorded: the token needs "
                       "read:groups")  # fmt: skip
            return None
        return {group.name: group.users for group in groups}

    def _say_hidden(self, users) -> None:
        hidden = set().union(*(user.hidden for user in users)) if users else set()
        wants = {"servers": "read:servers", "last_activity": "read:users:activity",
                 "admin": "read:users", "created": "read:users"}  # fmt: skip
        for field, scope in wants.items():
            if field in hidden:
                self._once(field, f"users' {field} is not recorded: the token needs {scope}")

    def _once(self, key: str, message: str, **fields) -> None:
        if key not in self._said:
            self._said.add(key)
            log_event(log, message, logging.WARNING, **fields)
