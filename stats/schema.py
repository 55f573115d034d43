"""activity.sqlite: the tables, their versioned migrations, the views, and their descriptions.

History grows with changes, not with polls x users: a poll adds one `polls` row, and rows
elsewhere only for what changed (a user appeared or went, a server started or stopped, a
last_activity moved). Everything a view shows "at poll N" is computed from rows whose poll ids
are <= N, so a server stopped today never rewrites yesterday.

Timestamps are UTC ISO 8601 text with an explicit offset and milliseconds
(`2026-11-23T07:34:12.123+00:00`): they sort as text and SQLite's date functions read them.

Versions live in `PRAGMA user_version`. A migration only adds (tables, columns, rows moved
into new tables); it never drops data. Views and the descriptions are rebuilt on every open:
they hold no data.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import sqlite_utils

from hubsidecars.config import ConfigError

SCHEMA_VERSION = 3


class SchemaTooNew(ConfigError):
    """The database was written by a newer hub-stats: it is left untouched."""

# --- migrations: version N is reached by running MIGRATIONS[N] on a database at N - 1 -------


def _v1_core(db: sqlite_utils.Database) -> None:
    """The core tables. A compmodels-era `activity` TABLE (date, user, active) is kept, renamed
    to compmodels_activity, and the new `activity` view shows its rows first."""
    if "activity" in db.table_names():
        db.execute("ALTER TABLE activity RENAME TO compmodels_activity")
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS compmodels_activity (date TEXT, user TEXT, active INTEGER);
        CREATE TABLE polls (
            id INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            interval_s REAL NOT NULL,
            ok INTEGER NOT NULL,
            error TEXT,
            duration_ms INTEGER,
            users INTEGER,
            servers_running INTEGER,
            servers_pending INTEGER,
            active_users INTEGER,
            hub_version TEXT
        );
        CREATE INDEX polls_time ON polls(time);
        CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            first_poll INTEGER NOT NULL REFERENCES polls(id),
            gone_poll INTEGER REFERENCES polls(id),
            admin INTEGER,
            created TEXT,
            last_activity TEXT
        );
        CREATE UNIQUE INDEX users_present ON users(name) WHERE gone_poll IS NULL;
        CREATE INDEX users_name ON users(name, first_poll);
        CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            user TEXT NOT NULL,
            server_name TEXT NOT NULL,
            started TEXT,
            first_poll INTEGER NOT NULL REFERENCES polls(id),
            ready_poll INTEGER REFERENCES polls(id),
            end_poll INTEGER REFERENCES polls(id),
            last_activity TEXT
        );
        CREATE UNIQUE INDEX sessions_running ON sessions(user, server_name) WHERE end_poll IS NULL;
        CREATE INDEX sessions_user ON sessions(user, first_poll);
        CREATE TABLE activity_events (
            id INTEGER PRIMARY KEY,
            poll_id INTEGER NOT NULL REFERENCES polls(id),
            user TEXT NOT NULL,
            server_name TEXT,
            session_id INTEGER REFERENCES sessions(id),
            last_activity TEXT NOT NULL
        );
        CREATE INDEX activity_events_user ON activity_events(user, server_name, poll_id);
        CREATE INDEX activity_events_time ON activity_events(last_activity);
        CREATE TABLE group_members (
            id INTEGER PRIMARY KEY,
            group_name TEXT NOT NULL,
            user TEXT NOT NULL,
            first_poll INTEGER NOT NULL REFERENCES polls(id),
            gone_poll INTEGER REFERENCES polls(id)
        );
        CREATE UNIQUE INDEX group_members_present ON group_members(group_name, user)
            WHERE gone_poll IS NULL;
        """
    )


def _v2_containers(db: sqlite_utils.Database) -> None:
    """Per-container CPU and memory at poll time (hub-stats --docker)."""
    db.executescript(
        """
        CREATE TABLE container_samples (
            id INTEGER PRIMARY KEY,
            poll_id INTEGER NOT NULL REFERENCES polls(id),
            host TEXT NOT NULL,
            container TEXT NOT NULL,
            user TEXT,
            server_name TEXT,
            cpu_percent REAL,
            memory_bytes INTEGER,
            memory_limit_bytes INTEGER
        );
        CREATE INDEX container_samples_poll ON container_samples(poll_id);
        """
    )


def _v3_docker_hosts(db: sqlite_utils.Database) -> None:
    """What each Docker host has, at each poll hub-stats --docker sampled it."""
    db.executescript(
        """
        CREATE TABLE docker_hosts (
            id INTEGER PRIMARY KEY,
            poll_id INTEGER NOT NULL REFERENCES polls(id),
            host TEXT NOT NULL,
            cpus INTEGER,
            memory_bytes INTEGER
        );
        CREATE INDEX docker_hosts_poll ON docker_hosts(poll_id);
        """
    )


MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {
    1: _v1_core, 2: _v2_containers, 3: _v3_docker_hosts}  # fmt: skip


# --- views: rebuilt on every open ------------------------------------------------------------

# The legacy view: a user's own last_activity (server_name IS NULL) as of poll p, and whether
# they had a server. "As of p" is the greatest last_activity of the user's events up to p. The
# recorder writes a user's own events only when their last_activity moves forward (one users
# row's life: each event later than the one before), so within the life that is alive at p that
# greatest one is simply the latest event up to p: one seek in activity_events_own. Events of
# earlier lives of the same name (a user deleted and created again) come before the life's
# first poll and are taken as a max, asked only for a users row that is a later life (that set
# is computed once per query, not per row). The server check comes first, as most users have
# no server at a poll: one seek of sessions_open_at for a run that ended after p and started by
# p, bounded by the longest run that ended (a run that ends later started after p), so that it
# never walks through the user's later runs; and a run still open is looked for only at polls
# after the oldest open run began. Both bounds are asked once per query, each in one seek
# (sessions_run_length, sessions_open_since). The activity seek follows only
# for a user who had a server. A poll that listed no server at all (servers_running and
# servers_pending 0, counted from the same listing as the sessions) has nobody active: its rows
# need no seek, which on a simulated year is half the polls (the nights). Rows are generated
# poll by poll (CROSS JOIN keeps polls as the outer loop): a WHERE on `date` is pushed into the polls
# loop and read through polls_time, so one day costs a day's rows, not the year's.
# "Within the interval" compares the times the file keeps, whole milliseconds: julianday's day
# fractions are off by microseconds, so the edge is put half a millisecond out, where an exact
# edge is in and a millisecond before is out (as polls.active_users, recorder.as_kept).
VIEWS: dict[str, str] = {
    "activity": """
        SELECT date, user, active FROM compmodels_activity
        UNION ALL
        SELECT p.time AS date, u.name AS user,
            CASE WHEN coalesce(p.servers_running + p.servers_pending, 1) > 0
                AND ((p.id >= (SELECT min(first_poll) FROM sessions WHERE end_poll IS NULL)
                      AND EXISTS (
                        SELECT 1 FROM sessions s
                        WHERE s.user = u.name AND s.end_poll IS NULL AND s.first_poll <= p.id))
                    OR EXISTS (
                        SELECT 1 FROM sessions s
                        WHERE s.user = u.name AND s.end_poll > p.id AND s.first_poll <= p.id
                          AND s.end_poll <= p.id + (SELECT max(end_poll - first_poll)
                                                    FROM sessions)))
                AND (
                    julianday((
                        SELECT e.last_activity FROM activity_events e
                        WHERE e.user = u.name AND e.server_name IS NULL
                          AND e.poll_id >= u.first_poll AND e.poll_id <= p.id
                        ORDER BY e.poll_id DESC, e.last_activity DESC LIMIT 1
                    )) >= julianday(p.time) - (p.interval_s * 1000 + 0.5) / 86400000.0
                    OR u.id IN (SELECT later.id FROM users later JOIN users earlier
                                ON earlier.name = later.name
                                AND earlier.first_poll < later.first_poll)
                       AND julianday((
                        SELECT max(e.last_activity) FROM activity_events e
                        WHERE e.user = u.name AND e.server_name IS NULL
                          AND e.poll_id < u.first_poll
                    )) >= julianday(p.time) - (p.interval_s * 1000 + 0.5) / 86400000.0)
            THEN 1 ELSE 0 END AS active
        FROM polls p
        CROSS JOIN users u
        WHERE p.ok = 1 AND u.first_poll <= p.id AND (u.gone_poll IS NULL OR u.gone_poll > p.id)
    """,
    "daily_active_users": """
        SELECT d.day, coalesce(a.active_users, 0) AS active_users
        FROM (SELECT DISTINCT substr(time, 1, 10) AS day FROM polls WHERE ok = 1) d
        LEFT JOIN (SELECT substr(last_activity, 1, 10) AS day,
                          count(DISTINCT user) AS active_users
                   FROM activity_events WHERE server_name IS NULL GROUP BY 1) a
            ON a.day = d.day
        ORDER BY d.day
    """,
    "weekly_active_users": """
        SELECT date(last_activity, 'weekday 0', '-6 days') AS week_start,
               count(DISTINCT user) AS active_users
        FROM activity_events WHERE server_name IS NULL
        GROUP BY week_start ORDER BY week_start
    """,
    "monthly_active_users": """
        SELECT substr(last_activity, 1, 7) AS month, count(DISTINCT user) AS active_users
        FROM activity_events WHERE server_name IS NULL
        GROUP BY month ORDER BY month
    """,
    "hours_active_per_user_per_day": """
        SELECT substr(e.last_activity, 1, 10) AS day, e.user,
               round(sum(p.interval_s) / 3600.0, 3) AS hours
        FROM activity_events e JOIN polls p ON p.id = e.poll_id
        WHERE e.server_name IS NULL
        GROUP BY day, e.user ORDER BY day, e.user
    """,
    "session_spans": """
        SELECT s.id AS session_id, s.user, s.server_name, s.started,
               (SELECT time FROM polls WHERE id = s.first_poll) AS first_seen,
               (SELECT max(time) FROM polls
                WHERE ok = 1 AND id < coalesce(s.end_poll, 1e18)) AS last_seen,
               (SELECT time FROM polls WHERE id = s.end_poll) AS gone_by,
               s.last_activity,
               round((julianday((SELECT max(time) FROM polls
                                 WHERE ok = 1 AND id < coalesce(s.end_poll, 1e18)))
                      - julianday(coalesce(s.started,
                                           (SELECT time FROM polls WHERE id = s.first_poll))))
                     * 24, 3) AS hours,
               s.end_poll IS NULL AS running
        FROM sessions s
    """,
    "sessions_per_user": """
        SELECT user, count(*) AS sessions, round(sum(hours), 3) AS server_hours,
               min(started) AS first_started, max(started) AS last_started
        FROM session_spans GROUP BY user ORDER BY user
    """,
    "peak_concurrent_servers": """
        SELECT substr(time, 1, 10) AS day, max(servers_running) AS peak_servers,
               count(*) AS polls
        FROM polls WHERE ok = 1 GROUP BY day ORDER BY day
    """,
    "hour_of_week": """
        SELECT (CAST(strftime('%w', hour_start) AS INTEGER) + 6) % 7 AS weekday,
               CASE (CAST(strftime('%w', hour_start) AS INTEGER) + 6) % 7
                   WHEN 0 THEN 'Mon' WHEN 1 THEN 'Tue' WHEN 2 THEN 'Wed' WHEN 3 THEN 'Thu'
                   WHEN 4 THEN 'Fri' WHEN 5 THEN 'Sat' ELSE 'Sun' END AS day_name,
               CAST(strftime('%H', hour_start) AS INTEGER) AS hour,
               count(*) AS user_hours
        -- hour_start, not hour: GROUP BY hour would pick this column over the result's
        FROM (SELECT DISTINCT user, strftime('%Y-%m-%d %H:00:00', last_activity) AS hour_start
              FROM activity_events WHERE server_name IS NULL)
        GROUP BY weekday, hour ORDER BY weekday, hour
    """,
}


# Indexes only the views need: created on open when missing (they hold no data of their own,
# so a file written before them needs no migration, only the time to build them once).
VIEW_INDEXES: dict[str, str] = {
    "activity_events_own": "activity_events(user, poll_id, last_activity) "
                           "WHERE server_name IS NULL",
    "sessions_open_at": "sessions(user, end_poll, first_poll)",
    # the longest run that ended, and the oldest run still open: each in one seek
    "sessions_run_length": "sessions(end_poll - first_poll)",
    "sessions_open_since": "sessions(first_poll) WHERE end_poll IS NULL",
    "compmodels_activity_date": "compmodels_activity(date)",
}


# --- descriptions, for the analyst (schema_docs table, Datasette metadata) --------------------

TABLE_DOCS: dict[str, tuple[str, dict[str, str]]] = {
    "polls": ("One row per poll of the hub, whether it answered or not.", {
        "id": "poll number, increasing",
        "time": "when the poll started (UTC)",
        "interval_s": "seconds between polls when this one ran",
        "ok": "1 when the hub answered and the poll was recorded, 0 when it failed",
        "error": "why the poll failed (NULL when ok)",
        "duration_ms": "how long the poll took",
        "users": "users in the hub",
        "servers_running": "servers ready at poll time",
        "servers_pending": "servers starting or stopping at poll time",
        "active_users": "users with a server and activity within the last interval "
                        "(the legacy 'active')",
        "hub_version": "JupyterHub's version",
    }),
    "users": ("One row per user's life in the hub: from the poll that first saw them to the "
              "poll that found them gone (a re-created name gets a new row).", {
        "name": "user name",
        "first_poll": "first poll that saw the user",
        "gone_poll": "first poll that no longer saw the user (NULL: still there)",
        "admin": "admin flag as last seen (NULL when the token may not read it)",
        "created": "when the hub created the user (needs read:users)",
        "last_activity": "the user's last activity as last seen",
    }),
    "sessions": ("One row per server run: a (default or named) server from its start to its "
                 "stop.", {
        "user": "user name",
        "server_name": "'' for the default server, else the named server",
        "started": "when the hub started it (the hub's 'started')",
        "first_poll": "first poll that saw it",
        "ready_poll": "first poll that saw it ready (NULL: never seen ready)",
        "end_poll": "first poll that no longer saw it (NULL: still running)",
        "last_activity": "its latest last_activity seen",
    }),
    "activity_events": ("One row each time a last_activity moved between two polls: the "
                        "user's own (server_name NULL) or one server's.", {
        "poll_id": "the poll that saw it move",
        "user": "user name",
        "server_name": "NULL: the user's own last_activity; '' the default server; else a "
                       "named server",
        "session_id": "the server run it belongs to (NULL for the user's own)",
        "last_activity": "the new last_activity (UTC)",
    }),
    "group_members": ("Who was in which hub group, when (needs read:groups).", {
        "group_name": "hub group",
        "user": "user name",
        "first_poll": "first poll that saw the membership",
        "gone_poll": "first poll that no longer saw it (NULL: still a member)",
    }),
    "container_samples": ("CPU and memory of each running user container at poll time "
                          "(hub-stats --docker).", {
        "poll_id": "the poll",
        "host": "Docker host the container runs on",
        "container": "container name",
        "user": "its user (JUPYTERHUB_USER)",
        "server_name": "its server name",
        "cpu_percent": "CPU use since the previous sample, percent of one core",
        "memory_bytes": "memory in use",
        "memory_limit_bytes": "memory limit",
    }),
    "docker_hosts": ("What each Docker host has, at each poll that sampled its containers "
                     "(hub-stats --docker): a host with no row at a poll was not sampled.", {
        "poll_id": "the poll",
        "host": "Docker host (the engine's node name)",
        "cpus": "CPUs the engine sees",
        "memory_bytes": "memory the engine sees",
    }),
    "compmodels_activity": ("Rows of an older compmodels activity table, kept as they were "
                            "when this database was migrated (empty otherwise).", {
        "date": "poll time", "user": "user name", "active": "1 active, 0 not",
    }),
}

VIEW_DOCS: dict[str, tuple[str, dict[str, str]]] = {
    "activity": ("The compmodels table, one row per user per successful poll: active = the user "
                 "had a server and was active within the poll interval, as things were at "
                 "that poll.", {
        "date": "poll time (UTC)", "user": "user name", "active": "1 or 0",
    }),
    "daily_active_users": ("Users with any activity, per day (UTC).", {
        "day": "YYYY-MM-DD", "active_users": "distinct users active that day",
    }),
    "weekly_active_users": ("Users with any activity, per week (weeks start on Monday).", {
        "week_start": "the Monday", "active_users": "distinct users active that week",
    }),
    "monthly_active_users": ("Users with any activity, per month.", {
        "month": "YYYY-MM", "active_users": "distinct users active that month",
    }),
    "hours_active_per_user_per_day": ("Hours each user was active per day: the poll "
                                      "intervals in which their activity moved.", {
        "day": "YYYY-MM-DD", "user": "user name", "hours": "hours active",
    }),
    "session_spans": ("Each server run with its times and length.", {
        "session_id": "sessions.id", "user": "user name", "server_name": "'' or the name",
        "started": "hub's start time", "first_seen": "first poll that saw it",
        "last_seen": "last poll that saw it", "gone_by": "first poll that no longer saw it",
        "last_activity": "latest activity seen", "hours": "started to last_seen, in hours",
        "running": "1 while it runs",
    }),
    "sessions_per_user": ("Server runs per user, and their total hours.", {
        "user": "user name", "sessions": "server runs", "server_hours": "their total hours",
        "first_started": "first start", "last_started": "latest start",
    }),
    "peak_concurrent_servers": ("The most servers running at once, per day (at poll times).", {
        "day": "YYYY-MM-DD", "peak_servers": "servers ready at the busiest poll",
        "polls": "successful polls that day",
    }),
    "hour_of_week": ("When users are active: user-hours per weekday and hour (UTC).", {
        "weekday": "0 Monday ... 6 Sunday", "day_name": "Mon ... Sun", "hour": "0-23",
        "user_hours": "(user, hour) pairs with activity",
    }),
}


SQLITE_MAGIC = b"SQLite format 3\x00"


class NotAnActivityDatabase(ConfigError):
    """The file at --db is not hub-stats' (another program's database, or not SQLite)."""


def check_file(path: str) -> None:
    """Refuse, without writing a byte, a file that hub-stats must not open for writing: not
    SQLite, another program's database, or written by a newer hub-stats. Read from the file's
    header and, for an unversioned SQLite file, its schema (an immutable read: no lock, no
    journal, no -wal/-shm file). A missing or empty file is a new database. A compmodels-era
    file (its one `activity` table) is ours to migrate."""
    try:
        with open(path, "rb") as file:
            header = file.read(100)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise ConfigError(f"cannot open the activity database {path}: it is a directory") from None
    except OSError as error:
        raise ConfigError(f"cannot open the activity database {path}: {error.strerror}") from None
    if not header:
        return
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise NotAnActivityDatabase(f"{path} is not an SQLite database; not touched (give "
                                    "--db a new path or hub-stats' activity.sqlite)")  # fmt: skip
    current = int.from_bytes(header[60:64], "big")  # PRAGMA user_version
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"activity database is at schema version {current}, newer than this hub-stats "
            f"({SCHEMA_VERSION}): upgrade hub-stats; not touched"
        )
    if current:
        return
    from urllib.parse import quote

    try:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro&immutable=1", uri=True)
        try:
            objects = conn.execute("SELECT type, name, tbl_name FROM sqlite_master "
                                   "WHERE name NOT LIKE 'sqlite_%'").fetchall()  # fmt: skip
            columns = [row[1] for row in conn.execute("PRAGMA table_info(activity)")]
        finally:
            conn.close()
    except sqlite3.Error as error:
        raise NotAnActivityDatabase(f"{path} cannot be read as SQLite ({error}); "
                                    "not touched") from None  # fmt: skip
    # a compmodels file: its activity table, perhaps an index on it
    compmodels = columns == ["date", "user", "active"] and all(
        (kind, table) in (("table", "activity"), ("index", "activity"))
        for kind, _, table in objects)  # fmt: skip
    if objects and not compmodels:
        names = ", ".join(sorted(name for _, name, _ in objects)[:5])
        raise NotAnActivityDatabase(f"{path} is another program's database (it holds {names}); "
                                    "not touched: give --db hub-stats' own file")  # fmt: skip


def connect(path: str, *, readonly: bool = False) -> sqlite_utils.Database:
    """Open (creating and migrating unless `readonly`) the database in WAL mode. A file that
    check_file refuses is refused before it is opened for writing."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        db = sqlite_utils.Database(conn)
        db.execute("PRAGMA busy_timeout = 5000")
        return db
    check_file(path)
    try:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db = sqlite_utils.Database(conn)
        db.execute("PRAGMA busy_timeout = 5000")
        db.enable_wal()
        db.execute("PRAGMA synchronous = NORMAL")
        migrate(db)
    except sqlite3.Error as error:
        raise ConfigError(f"cannot open the activity database {path}: {error}") from None
    return db


def version(db: sqlite_utils.Database) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: sqlite_utils.Database) -> list[int]:
    """Bring the database to SCHEMA_VERSION, one version per transaction; rebuild the views and
    descriptions. Returns the versions applied. Refuses a database newer than this code."""
    applied = []
    current = version(db)
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"activity database is at schema version {current}, newer than this hub-stats "
            f"({SCHEMA_VERSION}): upgrade hub-stats"
        )
    for target in range(current + 1, SCHEMA_VERSION + 1):
        with _transaction(db):
            MIGRATIONS[target](db)
            db.execute(f"PRAGMA user_version = {target}")
        applied.append(target)
    if applied or not _views_current(db):
        # only when something changed: a start needs no write lock otherwise
        with _transaction(db):
            _rebuild_views(db)
            _rebuild_docs(db)
    return applied


def _views_current(db: sqlite_utils.Database) -> bool:
    indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master "
                                              "WHERE type = 'index'")}  # fmt: skip
    if not VIEW_INDEXES.keys() <= indexes:
        return False
    stored = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'"))
    if any((stored.get(name) or "").rstrip() != f"CREATE VIEW [{name}] AS {sql}".rstrip()
           for name, sql in VIEWS.items()):  # fmt: skip
        return False
    if "schema_docs" not in db.table_names():
        return False
    count = db.execute("SELECT count(*) FROM schema_docs").fetchone()[0]
    expected = 1 + sum(1 + len(columns) for docs in (TABLE_DOCS, VIEW_DOCS)
                       for _, columns in docs.values())  # fmt: skip
    return count == expected


def _rebuild_views(db: sqlite_utils.Database) -> None:
    for name, definition in VIEW_INDEXES.items():
        db.execute(f"CREATE INDEX IF NOT EXISTS [{name}] ON {definition}")
    for name in VIEWS:
        db.execute(f"DROP VIEW IF EXISTS [{name}]")
    for name, sql in VIEWS.items():  # in order: session_spans before sessions_per_user
        db.execute(f"CREATE VIEW [{name}] AS {sql}")


def _rebuild_docs(db: sqlite_utils.Database) -> None:
    db.execute("DROP TABLE IF EXISTS schema_docs")
    db.execute("CREATE TABLE schema_docs (object TEXT NOT NULL, kind TEXT NOT NULL, "
               "column TEXT NOT NULL, description TEXT NOT NULL, "
               "PRIMARY KEY (object, column))")  # fmt: skip
    rows = [("schema_docs", "table", "", "What every table, view and column holds.")]
    for kind, docs in (("table", TABLE_DOCS), ("view", VIEW_DOCS)):
        for name, (about, columns) in docs.items():
            rows.append((name, kind, "", about))
            rows.extend((name, kind, column, text) for column, text in columns.items())
    db.conn.executemany("INSERT INTO schema_docs VALUES (?, ?, ?, ?)", rows)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error (the connection is in autocommit)."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def __enter__(self) -> sqlite_utils.Database:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, error, traceback) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")


transaction = _transaction
