"""What `hub-stats serve` reads from activity.sqlite: the store its resources call (and
tests call directly), every read on a read-only connection of its own."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import tempfile
import threading
from datetime import UTC, datetime
from typing import Any

from stats.charts import Chart, build_charts
from stats.schema import VIEWS, connect


class NoDatabase(Exception):
    """The database cannot be read: the collector has not created it yet, --db points
    elsewhere, or the file is not a database."""


class ActivityStore:
    """Read-only access to activity.sqlite; every call opens its own connection, so requests
    never share one and the collector's writes are never blocked (WAL)."""

    def __init__(self, db_path: str, scratch_dir: str | None = None) -> None:
        self.db_path = db_path
        self.scratch_dir = scratch_dir  # snapshots are made here (default: $TMPDIR)
        # The charts change only with a new poll (a poll is one transaction): they are drawn
        # from the views once per poll, not on every page load (seconds for a year's data).
        self._charts: tuple[tuple[int, int | None], list[Chart]] | None = None
        self._charts_lock = threading.Lock()

    def open(self):
        if not os.path.isfile(self.db_path):
            raise NoDatabase(f"no activity database at {self.db_path}")
        try:
            db = connect(self.db_path, readonly=True)
        except sqlite3.DatabaseError as error:
            raise NoDatabase(f"cannot read {self.db_path}: {error}") from None
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # is it a database?
        except sqlite3.DatabaseError as error:
            db.conn.close()
            raise NoDatabase(f"cannot read {self.db_path}: {error}") from None
        return db

    def snapshot(self):
        """An open binary file holding a consistent copy of the database; the copy has no
        name left on disk, so it disappears when the file is closed."""
        from stats.export import ExportError, export_snapshot

        directory = tempfile.mkdtemp(prefix="hub-stats-download.", dir=self.scratch_dir)
        try:
            path = export_snapshot(self.db_path, os.path.join(directory, "activity.sqlite"))
            return open(path, "rb")
        except ExportError as error:
            raise NoDatabase(str(error)) from None
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def view_csv(self, name: str):
        """An open binary file holding one view of VIEWS as CSV (stats.export.write_csv),
        with no name left on disk. The view is read in one go, inside one short read
        transaction: a client that takes the file slowly (or never) must not hold a read
        transaction open, which would keep every WAL checkpoint from completing."""
        from stats.export import write_csv

        if name not in VIEWS:
            raise KeyError(name)
        out = tempfile.TemporaryFile(prefix="hub-stats-csv.", dir=self.scratch_dir)
        try:
            db = self.open()
            try:
                cursor = db.conn.execute(f"SELECT * FROM [{name}]")
                text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=False)
                write_csv(text, [column[0] for column in cursor.description], cursor)
                text.flush()
                text.detach()
            finally:
                db.conn.close()
            out.seek(0)
        except BaseException:
            out.close()
            raise
        return out

    def version(self) -> tuple[int, int | None]:
        """Which file and which poll the database is at: its copies change with nothing
        else (a poll is one transaction)."""
        db = self.open()
        try:
            return (os.stat(self.db_path).st_ino,
                    db.execute("SELECT max(id) FROM polls").fetchone()[0])  # fmt: skip
        finally:
            db.conn.close()

    def charts(self) -> list[Chart]:
        with self._charts_lock:  # one worker thread builds them, the others wait for it
            db = self.open()
            try:
                db.execute("BEGIN")  # the poll id and the charts from the same moment
                key = (os.stat(self.db_path).st_ino,
                       db.execute("SELECT max(id) FROM polls").fetchone()[0])  # fmt: skip
                if self._charts is None or self._charts[0] != key:
                    self._charts = (key, build_charts(db))
                db.execute("COMMIT")
            finally:
                db.conn.close()
            return self._charts[1]

    def now(self, clock: datetime | None = None) -> dict[str, Any]:
        """The figures of /stats.json: the latest successful poll, the latest poll of any
        kind (a failing hub shows there), and per Docker host the latest samples."""
        clock = clock or datetime.now(UTC)
        db = self.open()
        try:
            return self._now(db.conn, clock)
        finally:
            db.conn.close()

    @staticmethod
    def _now(conn: sqlite3.Connection, clock: datetime) -> dict[str, Any]:
        conn.execute("BEGIN")  # one moment for every figure
        last = conn.execute("SELECT time, ok, error FROM polls ORDER BY id DESC LIMIT 1")
        last = last.fetchone()
        ok = conn.execute(
            "SELECT time, interval_s, users, active_users, servers_running, servers_pending, "
            "hub_version FROM polls WHERE ok = 1 ORDER BY id DESC LIMIT 1"
        ).fetchone()  # fmt: skip
        result: dict[str, Any] = {
            "time": clock.astimezone(UTC).isoformat(timespec="seconds"),
            "last_poll": None if last is None else {
                "time": last[0], "ok": bool(last[1]), "error": last[2]},
            "last_successful_poll": None, "seconds_since_successful_poll": None,
            "interval_s": None, "hub_version": None, "users": None, "active_users": None,
            "servers_running": None, "servers_pending": None, "docker": None,
        }  # fmt: skip
        if ok is not None:
            age = clock - datetime.fromisoformat(ok[0])
            result.update({
                "last_successful_poll": ok[0],
                "seconds_since_successful_poll": round(age.total_seconds()),
                "interval_s": ok[1], "users": ok[2], "active_users": ok[3],
                "servers_running": ok[4], "servers_pending": ok[5], "hub_version": ok[6],
            })  # fmt: skip
        result["docker"] = ActivityStore._docker(conn)
        conn.execute("COMMIT")
        return result

    @staticmethod
    def _docker(conn: sqlite3.Connection) -> dict[str, Any] | None:
        latest = conn.execute(
            "SELECT s.poll_id, p.time FROM container_samples s JOIN polls p ON p.id = s.poll_id "
            "ORDER BY s.poll_id DESC LIMIT 1"
        ).fetchone()  # fmt: skip
        if latest is None:
            return None
        hosts = {
            host: {"containers": count, "cpu_percent": round(cpu or 0.0, 3),
                   "memory_bytes": memory or 0, "memory_limit_bytes": limit or 0}
            for host, count, cpu, memory, limit in conn.execute(
                "SELECT host, count(*), sum(cpu_percent), sum(memory_bytes), "
                "sum(memory_limit_bytes) FROM container_samples WHERE poll_id = ? "
                "GROUP BY host ORDER BY host", [latest[0]])
        }  # fmt: skip
        return {"sampled_at": latest[1], "hosts": hosts}
