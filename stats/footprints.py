"""Leave hub-culler's own questions out of what a poll records as activity.

The culler asks idle-looking servers about their kernels through the proxy; the proxy stamps
the route when the answer passes and the hub copies that stamp into the server's and its
user's last_activity. Measured against a real hub (tests/stats/test_culler_footprints.py): the
hub's value is the proxy's clock at the end of the answer, inside the window the culler
measured around its question (never equal to the culler's own send time). The culler publishes
those windows (culler/footprints.py); a last_activity inside one is the culler's, not the
user's, and is recorded as if it had not moved.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta

from hubsidecars.hubapi import User, parse_time

# How far the hub's stamp may lie outside the window the culler measured (the proxy's and the
# culler's clocks, read a few milliseconds apart; the same slack the culler allows itself).
SLACK = timedelta(seconds=2)


class Footprints:
    """Windows per key: ("user", NAME) and ("server", NAME, SERVER_NAME)."""

    def __init__(self, windows: Iterable[tuple[tuple[str, ...], datetime, datetime]] = ()):
        self._windows: dict[tuple[str, ...], list[tuple[datetime, datetime]]] = {}
        for key, start, end in windows:
            self._windows.setdefault(key, []).append((start - SLACK, end + SLACK))

    def __len__(self) -> int:
        return sum(len(spans) for spans in self._windows.values())

    def covers(self, key: tuple[str, ...], moment: datetime | None) -> bool:
        if moment is None:
            return False
        return any(start <= moment <= end for start, end in self._windows.get(key, ()))

    def strip(self, users: Iterable[User]) -> list[User]:
        """The users with every last_activity that is the culler's footprint taken out (as
        if it had not moved: the recorder keeps the value it had)."""
        if not self._windows:
            return list(users)
        cleaned = []
        for user in users:
            servers = {
                name: replace(server, last_activity=None)
                if self.covers(("server", user.name, name), server.last_activity) else server
                for name, server in user.servers.items()
            }  # fmt: skip
            last = user.last_activity
            if self.covers(("user", user.name), last):
                last = None
            cleaned.append(replace(user, last_activity=last, servers=servers))
        return cleaned


def load_footprints(path: str) -> Footprints:
    """The culler's published windows; empty when there is no file (no culler, or it has not
    asked anything yet). Raises ValueError for a file that cannot be read as one."""
    if not path:
        return Footprints()
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        return Footprints()
    except OSError as error:
        raise ValueError(f"{path}: {error.strerror}") from None
    if not isinstance(document, dict) or not isinstance(document.get("windows"), list):
        raise ValueError(f"{path}: not the culler's footprints")
    windows = []
    for entry in document["windows"]:
        try:
            key = tuple(str(part) for part in entry["key"])
            start, end = parse_time(entry["from"]), parse_time(entry["until"])
        except (KeyError, TypeError, ValueError):
            continue
        if start and end:
            windows.append((key, start, end))
    return Footprints(windows)
