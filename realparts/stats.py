"""Run the real `hub-stats` command against a real hub, and read back what it recorded.

The token travels in JUPYTERHUB_API_TOKEN, as for a hub-managed service. `run_once` gives the
exit code, the log and the CPU seconds the process used (user + sys, from wait4). `kill_on`
makes the real command SIGKILL itself at the start of the first SQL statement containing that
text once a poll's `INSERT INTO polls` has run (a sitecustomize module wraps sqlite3.connect):
a kill inside the poll's transaction every time, not only when a random timer happens to hit.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from realparts.process import LoggedDaemon, ManagedProcess, hub_client_env

HUB_STATS = Path(sys.executable).parent / "hub-stats"
# What a full recording needs: every user, their servers and activity, admin/created, groups.
STATS_SCOPES = ["list:users", "read:users", "read:users:activity", "read:servers",
                "list:groups", "read:groups"]  # fmt: skip
KILL_ENV = "SIDECARS_TEST_KILL_ON"

_KILLER = f'''
import os, signal, sqlite3

_needle = os.environ.get({KILL_ENV!r}, "")
if _needle:
    _connect = sqlite3.connect

    def connect(*args, **kwargs):
        conn = _connect(*args, **kwargs)
        armed = []

        def trace(statement):
            if "INSERT INTO polls" in statement:
                armed.append(True)
            elif armed and _needle in statement:
                os.kill(os.getpid(), signal.SIGKILL)

        conn.set_trace_callback(trace)
        return conn

    sqlite3.connect = connect
'''


def stats_env(token: str, **extra: str) -> dict[str, str]:
    return hub_client_env("HUB_STATS_", token, **extra)


def killer_env(workdir: Path, needle: str) -> dict[str, str]:
    """Environment that makes hub-stats SIGKILL itself at `needle` inside a poll's
    transaction (see the module docstring)."""
    folder = workdir / "killer"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(_KILLER)
    return {"PYTHONPATH": str(folder), KILL_ENV: needle}


@dataclass
class StatsRun:
    returncode: int
    log: str
    cpu_seconds: float  # user + sys of the hub-stats process
    seconds: float  # wall time

    def lines(self, needle: str) -> list[str]:
        return [line for line in self.log.splitlines() if needle in line]


def argv(url: str, db: Path, *args: str, interval: float | None = 300) -> list[str]:
    extra = ["--interval", f"{interval:g}"] if interval is not None else []
    return [str(HUB_STATS), "--url", url, "--db", str(db), *extra, *args]


def run_once(hub, service: str, db: Path, *args: str, interval: float = 300,
             timeout: float = 180, env: dict[str, str] | None = None,
             url: str | None = None) -> StatsRun:  # fmt: skip
    """`hub-stats --once --url HUB --db DB --interval N ARGS` as `service`."""
    command = argv(url or hub.api_url, db, "--once", *args, interval=interval)
    return run_command(command, stats_env(hub.token(service), **(env or {})), timeout)


def run_command(command: list[str], env: dict[str, str], timeout: float = 180) -> StatsRun:
    """Run `command` to its end; exit code (negative: killed by that signal), output, CPU."""
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"hub-stats-{time.monotonic_ns()}.log"
    started = time.monotonic()
    with open(log_path, "w+b") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)  # fmt: skip
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.02)
        process.returncode = os.waitstatus_to_exitcode(status)  # Popen must not reap it again
        log.seek(0)
        text = log.read().decode(errors="replace")
    log_path.unlink()
    return StatsRun(process.returncode, text, usage.ru_utime + usage.ru_stime,
                    time.monotonic() - started)  # fmt: skip


class StatsDaemon(LoggedDaemon):
    """`hub-stats` (the collector daemon) in the background, in its own session."""

    name = "hub-stats"

    def __init__(self, hub, service: str, db: Path, workdir: Path, *args: str,
                 interval: float = 5, url: str | None = None) -> None:  # fmt: skip
        self.log_path = workdir / f"hub-stats-{time.monotonic_ns()}.log"
        command = argv(url or hub.api_url, db, *args, interval=interval)
        self.process = ManagedProcess(command, self.log_path, env=stats_env(hub.token(service)))

    def running(self) -> bool:
        return self.process.process.poll() is None

    def signal(self, signum: int = signal.SIGTERM, timeout: float = 15) -> int:
        self.process.process.send_signal(signum)
        return self.process.process.wait(timeout)

    def stop(self) -> None:
        self.process.stop()


def rows(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Query the database as an analyst would: a separate, read-only connection."""

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def stamp(value: str | datetime | None) -> str | None:
    """A hub timestamp as activity.sqlite stores it: UTC, milliseconds, +00:00."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def check_whole_polls(db: Path) -> int:
    """Every recorded poll is whole: integrity_check ok, and each ok poll's totals match the
    rows present at that poll (users alive, servers open, activity view rows). Returns the
    number of ok polls checked."""
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    assert rows(db, "PRAGMA foreign_key_check") == []
    polls = rows(db, "SELECT id, users, servers_running, servers_pending, active_users "
                     "FROM polls WHERE ok = 1 ORDER BY id")  # fmt: skip
    for poll_id, users, running, pending, active in polls:
        assert None not in (users, running, pending, active), f"poll {poll_id} lacks totals"
        at_poll = (poll_id, poll_id)
        alive = rows(db, "SELECT count(*) FROM users WHERE first_poll <= ? AND "
                         "(gone_poll IS NULL OR gone_poll > ?)", at_poll)[0][0]  # fmt: skip
        assert alive == users, f"poll {poll_id}: users={users} but {alive} user rows alive"
        open_runs = rows(db, "SELECT count(*) FROM sessions WHERE first_poll <= ? AND "
                             "(end_poll IS NULL OR end_poll > ?)", at_poll)[0][0]  # fmt: skip
        assert open_runs == running + pending, (
            f"poll {poll_id}: {running}+{pending} servers but {open_runs} sessions open")
        view = rows(db, "SELECT count(*), coalesce(sum(active), 0) FROM activity a "
                        "JOIN polls p ON p.time = a.date WHERE p.id = ?", at_poll[:1])[0]
        assert view == (users, active), (
            f"poll {poll_id}: activity view {view}, poll row {(users, active)}")
    return len(polls)
