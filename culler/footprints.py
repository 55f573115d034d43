"""The culler's own questions to users' servers, published so that hub-stats does not count them.

A question to a server passes the proxy, which stamps the route when the answer goes by; the
hub copies that stamp into the server's and its user's last_activity. The culler tells its own
footprints apart with its probe marks (probe.py), which forget a server's questions once the
hub reports a later one's stamp or a user's. hub-stats polls on its own schedule and may see a
stamp the culler has already forgotten, so this keeps a longer history of every question's
window (clock before the first request, clock after the last), built from the marks after
each pass:

    <directory of --probe-state-file>/footprints/probe-footprints.json
    {"version": 1, "windows": [{"key": ["server", USER, NAME] | ["user", USER],
                               "from": ISO, "until": ISO}, ...]}

The directory is 0755 and the file 0644 (user names and times, no secret): hub-stats.service
binds that one directory read-only from the culler's private state (docs/stats.md). Windows
older than KEEP are dropped. A failure to write is one warning; the pass goes on.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime, timedelta

from hubsidecars.files import replace_file
from hubsidecars.hubapi import parse_time
from hubsidecars.logs import log_event

FOOTPRINTS_DIR = "footprints"
FOOTPRINTS_NAME = "probe-footprints.json"
# Longer than any sane hub last_activity_interval plus hub-stats --interval: a stamp older
# than this that hub-stats has not seen yet is one it has missed anyway.
KEEP = timedelta(hours=6)

log = logging.getLogger("culler.footprints")


def footprints_path(marks_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(marks_path)), FOOTPRINTS_DIR,
                        FOOTPRINTS_NAME)  # fmt: skip


def _windows(entries) -> set[tuple[tuple[str, ...], str, str]]:
    found = set()
    for entry in entries if isinstance(entries, list) else ():
        try:
            key = tuple(str(part) for part in entry["key"])
            parse_time(entry["from"]), parse_time(entry["until"])
            found.add((key, entry["from"], entry["until"]))
        except (KeyError, TypeError, ValueError):
            continue
    return found


def _read(path: str):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def publish_footprints(marks_path: str, *, now: datetime | None = None) -> None:
    """Merge the windows of the marks just saved at `marks_path` into the footprints file
    (nothing when the marks are kept in memory only)."""
    if not marks_path:
        return
    path = footprints_path(marks_path)
    now = now or datetime.now(UTC)
    published = _read(path)
    windows = _windows(published.get("windows") if isinstance(published, dict) else None)
    windows |= _windows(_read(marks_path))
    oldest = now - KEEP
    kept = sorted(window for window in windows if parse_time(window[2]) >= oldest)
    if not kept and published is None:
        return  # nothing asked yet, nothing published: no file, no directory
    document = {"version": 1, "windows": [{"key": list(key), "from": start, "until": end}
                                          for key, start, end in kept]}  # fmt: skip
    try:
        directory = os.path.dirname(path)
        if os.path.islink(directory):  # never chmod what a link leads to
            raise OSError(40, "the footprints directory is a symbolic link")
        os.makedirs(directory, exist_ok=True)
        os.chmod(directory, 0o755)  # past the service's UMask: hub-stats reads it
        replace_file(path, json.dumps(document) + "\n", mode=0o644)
    except OSError as error:
        log_event(log, "cannot publish the probe footprints for hub-stats", logging.WARNING,
                  path=path, error=error.strerror)  # fmt: skip
