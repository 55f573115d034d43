"""Benchmark hub-stats: CPU of a poll, bytes a poll adds, the size of a year, export time.

Part 1, a real JupyterHub (bench/hub_state.py: JupyterHub 6, configurable-http-proxy, the
shared responder as every user's server) with --users users and --servers running servers, of
which --active are pinned active. hub-stats reads it with the scopes of a full recording.
- CPU of one poll: the real `hub-stats --once` process (user+sys from wait4), first poll into
  an empty file and the median of 3 polls in which nothing changed; and in this process, with
  the same code the daemon runs, the listing (HTTP + JSON) and record_poll alone.
- Bytes per poll: stats.collector.Collector in this process, as the daemon runs it (one
  connection, one poll per call). After each poll the WAL is checkpointed; the bench prints
  the file's growth, the pages it grew by, the WAL bytes the poll wrote and, from SQLite's
  dbstat table, the payload bytes added per table. Nothing changed: --unchanged polls; moved:
  --moved users' activity pinned forward through the hub's API before one poll. Also the
  growth over 3 runs of `hub-stats --once` (each opens the file and rebuilds the views and
  descriptions).
Part 2 (a separate process started first, so it runs while the hub is built): a simulated
year of --year-users users, one poll every 300 s, written through record_poll with the hub
client's User objects. Activity: 20% heavy users (in on 80% of weekdays), 50% regular (40%),
30% rare (5%), weekends at a quarter of that; a working session starts 08:00-15:00, lasts 20
min to 5 h with activity moving at 75% of its polls, and the server is stopped an hour after
the last activity (as a culler would). Printed: the file size, rows per table, the export time
of stats.export.export_snapshot (VACUUM INTO), and the compmodels table (date, user, active:
one row per user per poll) for the same polls: built for --compmodels-days and scaled to the
year (rows and bytes are linear in polls; --compmodels-days 365 builds all of it). The legacy
`activity` view against that table, both read as a notebook does: one day's rows (the middle
day; the table's without and with an index on date), and the whole of it streamed with
fetchmany (rows per second; stopped after --scan-cap seconds), with the same rows of polls times
users listed with no check beside them: the fastest any view over them could stream.

Run as root: python bench/stats.py [--users 2000 --servers 500 --active 100 --moved 200]
[--year-users 500 --days 365 --compmodels-days 30]; quick: --quick (300 users, 14 days).
A full run took 9 minutes here (the simulated year is the long part), the quick one 45 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path[0] == str(Path(__file__).resolve().parent):
    sys.path[0] = str(REPO)  # bench/ first on the path would hide the stats package

from bench.hub_state import BENCH, HubState, Population  # noqa: E402
from hubsidecars.hubapi import HubClient, Server, User  # noqa: E402
from realparts.hub import HubService  # noqa: E402
from realparts.stats import STATS_SCOPES, argv, run_command, stats_env  # noqa: E402
from stats import schema  # noqa: E402
from stats.recorder import record_poll  # noqa: E402

STATS = "stats"
POLL_SECONDS = 300
POLLS_PER_DAY = 86400 // POLL_SECONDS


# --- measuring a file ---------------------------------------------------------------------


def checkpoint(conn) -> None:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def file_state(path: Path, conn) -> dict:
    """Size and pages after a checkpoint, and payload bytes per table (dbstat)."""
    checkpoint(conn)
    state = {
        "bytes": path.stat().st_size,
        "pages": conn.execute("PRAGMA page_count").fetchone()[0],
        "free_pages": conn.execute("PRAGMA freelist_count").fetchone()[0],
    }
    try:
        state["payload"] = dict(conn.execute(
            "SELECT name, sum(payload) FROM dbstat GROUP BY name").fetchall())  # fmt: skip
    except sqlite3.OperationalError:  # SQLite built without dbstat
        state["payload"] = {}
    return state


def growth(before: dict, after: dict, polls: int) -> dict:
    payload = {name: (after["payload"].get(name, 0) - before["payload"].get(name, 0)) / polls
               for name in after["payload"]}  # fmt: skip
    return {
        "bytes": (after["bytes"] - before["bytes"]) / polls,
        "pages": (after["pages"] - before["pages"]) / polls,
        "free_pages": after["free_pages"],
        "payload": {name: value for name, value in payload.items() if value},
    }


def wal_bytes(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


# --- part 1: the real hub -----------------------------------------------------------------


def hub_part(args, scratch: Path) -> dict:
    from stats.collector import Collector

    results: dict = {}
    population = Population.spread(args.users, args.servers, args.servers - args.active)
    (scratch / "hub").mkdir(exist_ok=True)
    state = HubState(scratch / "hub", population, stop_seconds=0)
    state.hub.services[STATS] = HubService(STATS, STATS_SCOPES)
    print(f"building the hub: {args.users} users, {args.servers} servers "
          f"({args.active} pinned active)", flush=True)  # fmt: skip
    results["build_s"] = state.build()
    try:
        results["restart_s"] = state.restore(0)
        hub = state.hub
        token = hub.token(STATS)

        print("CPU of hub-stats --once", flush=True)
        db = scratch / "once.sqlite"
        first = run_command(argv(hub.api_url, db, "--once"), stats_env(token), timeout=300)
        assert first.returncode == 0, first.log
        steady = []
        for _ in range(3):
            run = run_command(argv(hub.api_url, db, "--once"), stats_env(token), timeout=300)
            assert run.returncode == 0, run.log
            steady.append(run)
        results["once_first_cpu"] = first.cpu_seconds
        results["once_first_wall"] = first.seconds
        results["once_cpu"] = statistics.median(run.cpu_seconds for run in steady)
        results["once_wall"] = statistics.median(run.seconds for run in steady)
        help_run = run_command([argv(hub.api_url, db)[0], "--version"], stats_env(token))
        results["startup_cpu"] = help_run.cpu_seconds
        conn = sqlite3.connect(db)
        before = file_state(db, conn)
        for _ in range(3):
            run_command(argv(hub.api_url, db, "--once"), stats_env(token), timeout=300)
        results["once_growth"] = growth(before, file_state(db, conn), 3)
        conn.close()

        print("the daemon's code in this process: listing, recording, bytes", flush=True)
        client = HubClient(hub.api_url, token)
        started = time.process_time()
        users = list(client.iter_users())
        results["list_cpu"] = time.process_time() - started
        results["list_requests"] = client.requests_made
        results["record_cpu"] = record_cpu(users, scratch / "record.sqlite")

        path = scratch / "daemon.sqlite"
        collector = Collector(client, str(path), float(POLL_SECONDS))
        stop = threading.Event()
        collector(stop)
        conn = collector.db.conn
        base = file_state(path, conn)
        written = []
        for _ in range(args.unchanged):
            collector(stop)
            written.append(wal_bytes(path))
            checkpoint(conn)
        results["unchanged"] = growth(base, file_state(path, conn), args.unchanged)
        results["unchanged"]["wal"] = statistics.mean(written)

        moved = random.Random(3).sample(population.running, args.moved)
        pin(hub, moved)
        base = file_state(path, conn)
        cpu = time.process_time()
        summary = collector(stop).summary
        results["moved_cpu"] = time.process_time() - cpu
        results["moved_wal"] = wal_bytes(path)
        results["moved"] = growth(base, file_state(path, conn), 1)
        results["moved_summary"] = summary
        results["moved_events"] = conn.execute(
            "SELECT count(*) FROM activity_events WHERE poll_id = (SELECT max(id) FROM polls)"
        ).fetchone()[0]
        results["poll_row_bytes"] = conn.execute(
            "SELECT length(time) + 8 + 1 + coalesce(length(error), 0) + 4 * 6 "
            "+ length(hub_version) FROM polls ORDER BY id DESC LIMIT 1").fetchone()[0]  # fmt: skip
    finally:
        state.close()
    return results


def record_cpu(users: list[User], path: Path) -> dict:
    """record_poll alone on a listing taken from the hub: first poll, then unchanged."""
    db = schema.connect(str(path))
    moment = datetime.now(UTC)
    started = time.process_time()
    record_poll(db, users, time=moment, interval=POLL_SECONDS)
    first = time.process_time() - started
    times = []
    for step in range(1, 4):
        started = time.process_time()
        record_poll(db, users, time=moment + timedelta(seconds=POLL_SECONDS * step),
                    interval=POLL_SECONDS)  # fmt: skip
        times.append(time.process_time() - started)
    db.close()
    return {"first": first, "unchanged": statistics.median(times)}


def pin(hub, names: list[str]) -> None:
    stamp = (datetime.now(UTC) + timedelta(minutes=58)).isoformat()
    body = {"last_activity": stamp, "servers": {"": {"last_activity": stamp}}}
    session = hub.api  # one request per user, as browsers would
    for name in names:
        reply = session("POST", f"/users/{name}/activity", BENCH, json=body)
        if reply.status_code != 200:
            raise RuntimeError(f"pinning {name}: {reply.status_code} {reply.text[:200]}")


# --- part 2: a simulated year ---------------------------------------------------------------


def plan_year(users: int, days: int, seed: int = 2026) -> dict[int, list[tuple[str, str]]]:
    """Poll index -> [(user, "start" | "act" | "stop")], the activity pattern in the docstring."""
    rng = random.Random(seed)
    plan: dict[int, list[tuple[str, str]]] = {}
    start_day = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday
    for number in range(users):
        name = f"student{number:04d}"
        kind = rng.random()
        rate = 0.8 if kind < 0.2 else 0.4 if kind < 0.7 else 0.05
        for day in range(days):
            weekend = (start_day + timedelta(days=day)).weekday() >= 5
            if rng.random() >= rate * (0.25 if weekend else 1):
                continue
            first = day * POLLS_PER_DAY + rng.randint(8 * 12, 15 * 12)
            length = rng.randint(4, 60)  # 20 min to 5 h, in polls
            plan.setdefault(first, []).append((name, "start"))
            last = first
            for index in range(first + 1, first + length):
                if rng.random() < 0.75:
                    plan.setdefault(index, []).append((name, "act"))
                    last = index
            plan.setdefault(last + 12, []).append((name, "stop"))  # culled after an hour
    return plan


def simulate_year(path: Path, compmodels: Path, users: int, days: int,
                  compmodels_days: int, scan_cap: float = 600) -> dict:  # fmt: skip
    """Write the year through record_poll (and the compmodels table for its first days)."""
    t0 = datetime(2025, 1, 6, tzinfo=UTC)
    created = t0 - timedelta(days=30)
    plan = plan_year(users, days)
    rng = random.Random(9)
    names = [f"student{number:04d}" for number in range(users)]
    listing = {name: User(name, False, (), created, None, {}) for name in names}
    db = schema.connect(str(path))
    old = sqlite3.connect(compmodels)
    old.execute("CREATE TABLE activity (date TEXT, user TEXT, active INTEGER)")
    cpu = time.process_time()
    wall = time.monotonic()
    polls = days * POLLS_PER_DAY
    for index in range(polls):
        moment = t0 + timedelta(seconds=POLL_SECONDS * index, milliseconds=rng.randint(0, 900))
        for name, action in plan.get(index, ()):
            user = listing[name]
            seen = moment - timedelta(seconds=rng.uniform(1, POLL_SECONDS - 1))
            if action == "start" and "" not in user.servers:
                running = Server(name, "", f"/user/{name}/", seen, seen, None, True)
                listing[name] = User(name, False, (), created, seen, {"": running})
            elif action == "act" and "" in user.servers:
                running = user.servers[""]
                server = Server(name, "", running.url, running.started, seen, None, True)
                listing[name] = User(name, False, (), created, seen, {"": server})
            elif action == "stop" and "" in user.servers:
                listing[name] = User(name, False, (), created, seen, {})
        record_poll(db, listing.values(), time=moment, interval=POLL_SECONDS)
        if index < compmodels_days * POLLS_PER_DAY:
            since = moment - timedelta(seconds=POLL_SECONDS)
            date = moment.replace(tzinfo=None).isoformat(sep=" ")
            old.executemany("INSERT INTO activity VALUES (?, ?, ?)", [
                (date, user.name, int(bool(user.servers) and user.last_activity is not None
                                      and user.last_activity >= since))
                for user in listing.values()])  # fmt: skip
        if index % (POLLS_PER_DAY * 30) == 0 and index:
            print(f"  year: day {index // POLLS_PER_DAY} of {days}", flush=True)
    results = {"polls": polls, "record_cpu": time.process_time() - cpu,
               "record_wall": time.monotonic() - wall}  # fmt: skip
    old.commit()
    old.execute("VACUUM")
    old.close()
    checkpoint(db.conn)
    results["rows"] = {table: db.execute(f"SELECT count(*) FROM [{table}]").fetchone()[0]
                       for table in ("polls", "users", "sessions", "activity_events")}  # fmt: skip
    db.close()
    results["bytes"] = path.stat().st_size
    results["compmodels_bytes"] = compmodels.stat().st_size
    results["compmodels_rows"] = min(polls, compmodels_days * POLLS_PER_DAY) * users

    from stats.export import export_snapshot

    out = path.with_name("export.sqlite")
    started = time.monotonic()
    export_snapshot(str(path), str(out))
    results["export_s"] = time.monotonic() - started
    results["export_bytes"] = out.stat().st_size
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    middle = (t0 + timedelta(days=days // 2)).date()
    results["legacy_day_s"], results["legacy_day_rows"] = one_day(conn, middle)
    results["legacy_scan"] = scan(conn, "SELECT * FROM activity", scan_cap)
    results["listing_scan"] = scan(conn, POLLS_TIMES_USERS, scan_cap)
    started = time.monotonic()
    conn.execute("SELECT * FROM daily_active_users").fetchall()
    results["daily_view_s"] = time.monotonic() - started
    conn.close()
    results["compmodels"] = compmodels_baseline(compmodels, t0, min(days, compmodels_days),
                                                scan_cap)  # fmt: skip
    return results


# The rows of the legacy view with no check at all: the fastest any view over polls and users
# can stream (the view itself: stats/schema.py VIEWS["activity"]).
POLLS_TIMES_USERS = ("SELECT p.time, u.name, 0 FROM polls p CROSS JOIN users u "
                     "WHERE p.ok = 1 AND u.first_poll <= p.id "
                     "AND (u.gone_poll IS NULL OR u.gone_poll > p.id)")  # fmt: skip


def one_day(conn, day) -> tuple[float, int]:
    """Every row of one day of `activity`, as a notebook reads it (seconds, rows)."""
    started = time.monotonic()
    found = conn.execute("SELECT * FROM activity WHERE date >= ? AND date < ?",
                         [str(day), str(day + timedelta(days=1))]).fetchall()  # fmt: skip
    return time.monotonic() - started, len(found)


def scan(conn, sql: str, cap: float) -> dict:
    """Stream `sql`'s rows (fetchmany, as pandas.read_sql with a chunksize does) for at most
    `cap` seconds: rows read, seconds, whether it reached the end, the first row's delay."""
    started = time.monotonic()
    cursor = conn.execute(sql)
    first = None
    count, done = 0, False
    while True:
        batch = cursor.fetchmany(10000)
        if first is None:
            first = time.monotonic() - started
        if not batch:
            done = True
            break
        count += len(batch)
        if time.monotonic() - started > cap:
            break
    cursor.close()
    return {"rows": count, "s": time.monotonic() - started, "done": done, "first_s": first}


def compmodels_baseline(path: Path, t0: datetime, days: int, cap: float) -> dict:
    """The compmodels table built in this run: one day without and with an index on date,
    and the whole table streamed."""
    conn = sqlite3.connect(path)
    middle = (t0 + timedelta(days=days // 2)).date()
    results = {"days": days}
    results["day_s"], results["day_rows"] = one_day(conn, middle)
    results["scan"] = scan(conn, "SELECT * FROM activity", cap)
    conn.execute("CREATE INDEX activity_date ON activity(date)")
    results["day_indexed_s"], _ = one_day(conn, middle)
    conn.close()
    return results


# --- printing ---------------------------------------------------------------------------


def kib(value: float) -> str:
    return f"{value / 1024:,.1f} KiB" if abs(value) >= 1024 else f"{value:,.0f} B"


def mib(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB"


def report(args, hub: dict | None, year: dict) -> None:
    print()
    if hub:
        print(f"== one poll, real hub: {args.users} users, {args.servers} running servers ==")
        print(f"hub build {hub['build_s']:.0f} s, restart on the snapshot {hub['restart_s']:.0f} s")
        print(f"hub-stats --once, CPU user+sys   first poll {hub['once_first_cpu']:.2f} s "
              f"(wall {hub['once_first_wall']:.2f} s); unchanged {hub['once_cpu']:.2f} s "
              f"(wall {hub['once_wall']:.2f} s); of which start-up (--version) "
              f"{hub['startup_cpu']:.2f} s")  # fmt: skip
        print(f"listing the users (HTTP + JSON)  {hub['list_cpu']:.2f} s CPU, "
              f"{hub['list_requests']} requests")  # fmt: skip
        print(f"record_poll alone                first {hub['record_cpu']['first']:.3f} s, "
              f"unchanged {hub['record_cpu']['unchanged']:.3f} s, {args.moved} moved "
              f"(whole Collector poll) {hub['moved_cpu']:.3f} s CPU")  # fmt: skip
        for label, key, wal in (("nothing changed", "unchanged", hub["unchanged"]["wal"]),
                                (f"{args.moved} users moved", "moved", hub["moved_wal"])):
            grown = hub[key]
            payload = ", ".join(f"{name} {kib(value)}" for name, value in
                                sorted(grown["payload"].items())) or "none"  # fmt: skip
            print(f"bytes per poll, {label:16} file {kib(grown['bytes'])}, "
                  f"{grown['pages']:.1f} pages, WAL written {kib(wal)}; payload: {payload}")
        print(f"  (the poll row itself: ~{hub['poll_row_bytes']} B of values; moved poll: "
              f"{hub['moved_events']} activity_events; {hub['moved_summary']})")
        once = hub["once_growth"]
        print(f"bytes per hub-stats --once run, nothing changed: file {kib(once['bytes'])}, "
              f"{once['pages']:.1f} pages, {once['free_pages']} free pages")  # fmt: skip
    polls = year["polls"]
    print(f"\n== a simulated year: {args.year_users} users, {args.days} days, {polls:,} polls "
          f"every {POLL_SECONDS} s ==")  # fmt: skip
    print(f"written through record_poll in {year['record_wall']:.0f} s "
          f"({year['record_cpu'] / polls * 1000:.2f} ms CPU per poll)")  # fmt: skip
    print("rows: " + ", ".join(f"{name} {count:,}" for name, count in year["rows"].items()))
    print(f"activity.sqlite            {mib(year['bytes'])}")
    scale = polls / min(polls, args.compmodels_days * POLLS_PER_DAY)
    compmodels = year["compmodels_bytes"] * scale
    built = "" if scale == 1 else (f" (built for {args.compmodels_days} days: "
                                   f"{mib(year['compmodels_bytes'])}, scaled x{scale:.2f})")
    print(f"compmodels activity table  {mib(compmodels)}, "
          f"{year['compmodels_rows'] * scale:,.0f} rows{built}")  # fmt: skip
    print(f"ratio compmodels / activity.sqlite: {compmodels / year['bytes']:.1f}x")
    print(f"export_snapshot (VACUUM INTO) of the year: {year['export_s']:.2f} s, "
          f"{mib(year['export_bytes'])}")  # fmt: skip
    base = year["compmodels"]
    print(f"one day of `activity` (SELECT * WHERE date in the day, {year['legacy_day_rows']:,} "
          f"rows): the view {year['legacy_day_s']:.2f} s; the compmodels table "
          f"({base['day_rows']:,} rows, built in this run for {base['days']} days) "
          f"{base['day_s']:.2f} s without an index, {base['day_indexed_s']:.3f} s with one "
          f"on date")  # fmt: skip
    for label, run in (("the view", year["legacy_scan"]), ("the compmodels table", base["scan"]),
                       ("polls x users listed", year["listing_scan"])):  # fmt: skip
        rate = run["rows"] / run["s"] if run["s"] else 0
        whole = "all of it" if run["done"] else f"stopped after {run['s']:.0f} s"
        print(f"SELECT * FROM activity streamed, {label:20}: {run['rows']:,} rows in "
              f"{run['s']:.1f} s ({whole}), {rate:,.0f} rows/s, first rows after "
              f"{run['first_s']:.3f} s")  # fmt: skip
    print(f"daily_active_users over the year: {year['daily_view_s']:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--servers", type=int, default=500, help="running servers")
    parser.add_argument("--active", type=int, default=100, help="of them, pinned active")
    parser.add_argument("--moved", type=int, default=200, help="users whose activity moves")
    parser.add_argument("--unchanged", type=int, default=5, help="polls with no change")
    parser.add_argument("--year-users", type=int, default=500)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--compmodels-days", type=int, default=30)
    parser.add_argument("--scan-cap", type=float, default=600,
                        help="stop streaming a whole `activity` after this many seconds")
    parser.add_argument("--quick", action="store_true", help="300 users, 100 servers, 14 days")
    parser.add_argument("--no-hub", action="store_true", help="only the simulated year")
    parser.add_argument("--keep", metavar="DIR", help="keep the files here")
    parser.add_argument("--year-only", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.users, args.servers, args.active, args.moved = 300, 100, 20, 30
        args.days, args.compmodels_days = 14, 14
    if args.year_only:  # the child process of part 2
        folder = Path(args.year_only)
        results = simulate_year(folder / "year.sqlite", folder / "compmodels.sqlite",
                                args.year_users, args.days, args.compmodels_days,
                                args.scan_cap)  # fmt: skip
        (folder / "year.json").write_text(json.dumps(results))
        return 0
    scratch = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-stats-"))
    scratch.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    year_dir = scratch / "year"
    year_dir.mkdir(exist_ok=True)
    child = subprocess.Popen([sys.executable, __file__, "--year-only", str(year_dir),
                              "--year-users", str(args.year_users), "--days", str(args.days),
                              "--compmodels-days", str(args.compmodels_days),
                              "--scan-cap", str(args.scan_cap)])  # fmt: skip
    try:
        hub = None if args.no_hub else hub_part(args, scratch)
        print("waiting for the simulated year", flush=True)
        if child.wait() != 0:
            raise SystemExit(f"the simulated year failed ({child.returncode})")
        year = json.loads((year_dir / "year.json").read_text())
        report(args, hub, year)
        print(f"\n(bench took {time.monotonic() - started:.0f} s)")
    finally:
        if child.poll() is None:
            child.kill()
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
