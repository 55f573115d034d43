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

from stats.recorder import record_failed_poll, record_poll
from stats.schema import connect

log = logging.getLogger("stats")


class Collector:
    def __init__(self, client: HubClient, db_path: str, interval: float, *,
                 groups: bool = True, containers=None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:  # fmt: skip
        """`containers`, when given, is called with (db, poll_id) after a recorded poll to add
        the Docker samples (stats.containers)."""
        self.client = client
        self.db = connect(db_path)
        self.interval = interval
        self.want_groups = groups
        self.containers = containers
        self.now = now
        self._said: set[str] = set()

    def __call__(self, stop: threading.Event) -> PassReport:
        moment = self.now()
        started = time.monotonic()
        try:
            users = list(self.client.iter_users())
            self._say_hidden(users)
            groups = self._groups()
            version = self.client.version()
        except HubError as error:
            duration = round((time.monotonic() - started) * 1000)
            record_failed_poll(self.db, time=moment, interval=self.interval, error=str(error),
                               duration_ms=duration)  # fmt: skip
            return PassReport(f"poll failed: {error}", ok=False)
        duration = round((time.monotonic() - started) * 1000)
        servers_visible = not any("servers" in user.hidden for user in users)
        summary = record_poll(self.db, users, time=moment, interval=self.interval,
                              duration_ms=duration, hub_version=version, groups=groups,
                              servers_visible=servers_visible)  # fmt: skip
        if self.containers is not None:
            try:
                self.containers(self.db, summary.poll_id)
            except Exception as error:  # noqa: BLE001 - the hub's poll is recorded anyway
                log_event(log, "container samples failed", logging.WARNING,
                          error=f"{type(error).__name__}: {error}")  # fmt: skip
        return PassReport(summary.line())

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
