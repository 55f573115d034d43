"""hub-stats attacked: a broken or hostile hub, odd users, a hostile analyst's requests, a
database pulled from under it, leaked secrets. Plain tests guard what holds; every defect
found is an `xfail(strict=True)` test named after what an admin or analyst would notice,
with the defect in its reason.

Where a real hub cannot be made to misbehave (half a body, HTML, a glitching listing), a
`HostileServer` on loopback plays the hub; everything else runs against one real hub for the
module (responder spawner: real running servers in the hub's state). Every run is the real
`hub-stats` command (collector, export, serve under gunicorn).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from realparts.hostile import HostileServer, answer_raw, half_body, send
from realparts.hub import HubService
from realparts.net import Endpoint, free_port
from realparts.process import ManagedProcess
from realparts.stats import (
    STATS_SCOPES,
    argv,
    check_whole_polls,
    rows,
    run_command,
    run_once,
    stats_env,
)
from realparts.stats_serve import StatsServeProcess
from realparts.waiting import wait_until

HUB_TOKEN = "hub-token-for-the-attack-tests-0123456789abcdef"
SERVE_TOKEN = "serve-token-for-the-attack-tests-fedcba9876543210"
SERVE_BEARER = {"Authorization": f"Bearer {SERVE_TOKEN}"}


# --- a hub played by a HostileServer ---------------------------------------------------------


class PlayedHub:
    """The hub's API as a HostileServer answers it: `users` is the listing the next poll gets
    (a plain list, as a hub without pagination sends it); `users_behaviour`, when set,
    replaces that answer (HTML, half a body, a dribble...)."""

    def __init__(self, server: HostileServer) -> None:
        self.server = server
        self.users: list[dict] = []
        self.users_behaviour = None
        self.url = f"{server.url}/hub/api"
        routes = server.hub_routes
        routes[("GET", "/hub/api/")] = lambda h: send(h, 200, b'{"version": "6.1.1"}')
        routes[("GET", "/hub/api/users")] = self._users
        routes[("GET", "/hub/api/groups")] = lambda h: send(h, 200, b"[]")

    def _users(self, handler) -> None:
        if self.users_behaviour is not None:
            return self.users_behaviour(handler)
        send(handler, 200, json.dumps(self.users).encode())


def hub_user(name: str, *, server: bool = True, started: str = "2026-03-02T08:00:00Z",
             last: str | None = "2026-03-02T09:00:00Z") -> dict:  # fmt: skip
    servers = {}
    if server:
        servers[""] = {"name": "", "url": f"/user/{name}/", "started": started,
                       "last_activity": last, "pending": None, "ready": True}  # fmt: skip
    return {"kind": "user", "name": name, "admin": False, "groups": [],
            "created": "2026-03-01T00:00:00Z", "last_activity": last,
            "servers": servers}  # fmt: skip


@pytest.fixture
def played(request):
    server = HostileServer().start()
    request.addfinalizer(server.close)
    return PlayedHub(server)


def poll_played(played: PlayedHub, db: Path, *args: str, timeout: float = 60):
    command = argv(played.url, db, "--once", *args, interval=60)
    return run_command(command, stats_env(HUB_TOKEN), timeout)


def test_a_hub_answering_html_is_one_failed_poll_with_a_reason(played, tmp_path):
    db = tmp_path / "activity.sqlite"
    played.users = [hub_user("alice")]
    assert poll_played(played, db).returncode == 0
    played.users_behaviour = answer_raw(b"<html><body>502 Bad Gateway</body></html>")

    run = poll_played(played, db)

    assert run.returncode == 1, run.log
    assert "not JSON" in run.log and "Traceback" not in run.log, run.log
    assert rows(db, "SELECT ok, error LIKE '%not JSON%' FROM polls ORDER BY id") == [
        (1, None), (0, 1)]  # fmt: skip
    check_whole_polls(db)


def test_a_hub_sending_half_a_body_leaves_no_half_poll(played, tmp_path):
    db = tmp_path / "activity.sqlite"
    played.users = [hub_user("alice"), hub_user("bob")]
    assert poll_played(played, db).returncode == 0
    played.users_behaviour = half_body

    run = poll_played(played, db, "--request-timeout", "2")

    assert run.returncode == 1, run.log
    assert rows(db, "SELECT ok FROM polls ORDER BY id") == [(1,), (0,)]
    # nobody was recorded as gone, no session ended
    assert rows(db, "SELECT count(*) FROM users WHERE gone_poll IS NULL") == [(2,)]
    assert rows(db, "SELECT count(*) FROM sessions WHERE end_poll IS NULL") == [(2,)]
    check_whole_polls(db)


def test_a_dribbling_hub_ends_the_poll_within_its_timeouts(played, tmp_path):
    db = tmp_path / "activity.sqlite"
    played.users_behaviour = played.server.dribble(0.2)

    # 2 s per attempt, 4 attempts (3 retries) and backoff 0.5 + 1 + 2 s: about 11.5 s
    run = poll_played(played, db, "--request-timeout", "2", timeout=40)

    assert run.returncode == 1, run.log
    assert run.seconds < 30, f"the poll took {run.seconds:.1f} s"
    assert rows(db, "SELECT ok, error LIKE '%not complete within the timeout%' FROM polls") == [
        (0, 1)]  # fmt: skip


def test_a_user_listed_twice_is_one_user_and_one_session(played, tmp_path):
    db = tmp_path / "activity.sqlite"
    played.users = [hub_user("alice"), hub_user("bob"), hub_user("alice")]

    assert poll_played(played, db).returncode == 0

    assert rows(db, "SELECT name FROM users ORDER BY name") == [("alice",), ("bob",)]
    assert rows(db, "SELECT user FROM sessions ORDER BY user") == [("alice",), ("bob",)]
    assert rows(db, "SELECT users, servers_running FROM polls") == [(2, 2)]
    check_whole_polls(db)


def test_odd_user_names_are_stored_as_they_are(played, tmp_path):
    names = ["o'brien", 'say "hi"', "zoë", "名前", "x" * 2000, "robert'); DROP TABLE users;--",
             "[users]", "a\tb"]  # fmt: skip
    db = tmp_path / "activity.sqlite"
    played.users = [hub_user(name) for name in names]

    assert poll_played(played, db).returncode == 0
    assert poll_played(played, db).returncode == 0

    assert sorted(name for (name,) in rows(db, "SELECT name FROM users")) == sorted(names)
    assert rows(db, "SELECT count(*) FROM sessions") == [(len(names),)]
    assert rows(db, "SELECT count(*) FROM activity WHERE active IS NOT NULL") == [
        (2 * len(names),)]  # fmt: skip
    check_whole_polls(db)


def test_one_unreadable_user_does_not_stop_everyone_being_recorded(played, tmp_path):
    db = tmp_path / "activity.sqlite"
    broken = hub_user("mallory", last="yesterday-ish")
    played.users = [hub_user("alice"), broken, hub_user("bob")]

    run = poll_played(played, db)

    assert rows(db, "SELECT ok FROM polls") == [(1,)], run.log
    assert {name for (name,) in rows(db, "SELECT name FROM users")} >= {"alice", "bob"}
    assert "mallory" in run.log  # the one left out is named


def test_a_hub_that_lists_nobody_for_one_poll_does_not_split_every_session(played, tmp_path):
    db = tmp_path / "activity.sqlite"
    everyone = [hub_user(f"user{n}") for n in range(20)]
    played.users = everyone
    assert poll_played(played, db).returncode == 0
    played.users = []  # the hub's database answered nothing for a moment
    poll_played(played, db)
    played.users = everyone
    assert poll_played(played, db).returncode == 0

    assert rows(db, "SELECT count(*) FROM sessions") == [(20,)]
    assert rows(db, "SELECT count(*) FROM users") == [(20,)]


def test_a_server_whose_started_moves_is_a_new_run_each_time(played, tmp_path):
    """The hub's `started` only changes when the server was restarted: a run per value is the
    documented reading; a moving `started` therefore shows as restarts, never as lost rows."""
    db = tmp_path / "activity.sqlite"
    for minute in range(3):
        played.users = [hub_user("alice", started=f"2026-03-02T08:0{minute}:00Z")]
        assert poll_played(played, db).returncode == 0

    assert rows(db, "SELECT started, first_poll, end_poll FROM sessions ORDER BY id") == [
        ("2026-03-02T08:00:00.000+00:00", 1, 2), ("2026-03-02T08:01:00.000+00:00", 2, 3),
        ("2026-03-02T08:02:00.000+00:00", 3, None)]  # fmt: skip
    check_whole_polls(db)


def test_the_hub_token_echoed_by_a_broken_hub_is_not_recorded(played, tmp_path):
    def echo_headers(handler) -> None:
        text = f"Internal error handling request with {handler.headers['Authorization']}"
        send(handler, 500, text.encode(), "text/plain")

    db = tmp_path / "activity.sqlite"
    played.users_behaviour = echo_headers

    run = poll_played(played, db, "--request-timeout", "2")

    assert run.returncode == 1
    assert HUB_TOKEN not in run.log
    assert HUB_TOKEN.encode() not in db_bytes(db)


def db_bytes(db: Path) -> bytes:
    return b"".join(path.read_bytes() for path in db.parent.glob(db.name + "*"))


def test_the_hub_token_is_in_no_argv_log_or_database_even_at_debug(played, tmp_path):
    db = tmp_path / "activity.sqlite"
    played.users = [hub_user("alice")]
    command = argv(played.url, db, "--once", "--log-level", "debug", interval=60)
    seen_argv: list[str] = []

    def watch() -> None:  # what `ps` shows while it runs
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not seen_argv:
            for pid in os.listdir("/proc"):
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"hub-stats" in cmdline and str(db).encode() in cmdline:
                    seen_argv.append(cmdline.decode(errors="replace"))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    run = run_command(command, stats_env(HUB_TOKEN))
    watcher.join()

    assert run.returncode == 0, run.log
    assert seen_argv and all(HUB_TOKEN not in line for line in seen_argv)
    assert "DEBUG" in run.log.upper() and HUB_TOKEN not in run.log
    assert HUB_TOKEN.encode() not in db_bytes(db)
    export = tmp_path / "out.sqlite"
    done = subprocess.run([str(argv("", db)[0]), "export", "--db", str(db), str(export)],
                          capture_output=True, env=stats_env("x"), timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert HUB_TOKEN.encode() not in export.read_bytes()


# --- the database pulled from under the collector ---------------------------------------------


class PlayedDaemon:
    """The real `hub-stats` collector daemon polling a PlayedHub every 5 s."""

    def __init__(self, played: PlayedHub, db: Path, workdir: Path, *args: str) -> None:
        self.log_path = workdir / f"hub-stats-{time.monotonic_ns()}.log"
        command = argv(played.url, db, *args, interval=5)
        self.process = ManagedProcess(command, self.log_path, env=stats_env(HUB_TOKEN))

    def __enter__(self) -> PlayedDaemon:
        self.process.start(lambda: "msg=started" in self.log(), 30, "hub-stats")
        return self

    def __exit__(self, *exc) -> None:
        self.process.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, needle: str, count: int = 1, timeout: float = 30) -> str:
        wait_until(lambda: self.log().count(needle) >= count, timeout,
                   lambda: f"{needle!r} x{count} in the log:\n{self.log()}")
        return self.log()


class SqliteShell:
    """An analyst's sqlite3 shell that began a write (BEGIN IMMEDIATE) and went to lunch."""

    def __init__(self, db: Path) -> None:
        self.process = subprocess.Popen(["sqlite3", str(db)], stdin=subprocess.PIPE, text=True,
                                        stdout=subprocess.PIPE)  # fmt: skip
        self.process.stdin.write("BEGIN IMMEDIATE;\nSELECT 'held';\n")
        self.process.stdin.flush()
        # the shell answers the SELECT once BEGIN IMMEDIATE has taken the write lock
        assert self.process.stdout.readline() == "held\n", "the sqlite3 shell took no lock"

    def release(self) -> None:
        self.process.stdin.write("ROLLBACK;\n.quit\n")
        self.process.stdin.close()
        self.process.wait(10)


@pytest.mark.parametrize("where", ["directory", "missing-parent", "write-locked"])
def test_a_db_the_collector_cannot_open_is_one_line_and_exit_2(played, tmp_path, where):
    db = tmp_path / "activity.sqlite"
    played.users = [hub_user("alice")]
    shell = None
    if where == "directory":
        db.mkdir()
    elif where == "missing-parent":
        db = tmp_path / "no" / "such" / "activity.sqlite"
    else:
        assert poll_played(played, db).returncode == 0
        shell = SqliteShell(db)
    try:
        run = poll_played(played, db)
    finally:
        if shell:
            shell.release()

    assert "Traceback" not in run.log, run.log
    if where == "write-locked":
        # the file opens (a start needs no write lock); the poll waits its busy timeout and
        # fails as a poll, naming the lock: exit 1, the daemon would go on
        assert run.returncode == 1 and "locked" in run.log, run.log
        return
    assert run.returncode == 2 and str(db) in run.log, run.log


def test_a_database_deleted_while_the_daemon_runs_gets_the_next_polls(played, tmp_path):
    db = tmp_path / "activity.sqlite"
    played.users = [hub_user("alice")]
    with PlayedDaemon(played, db, tmp_path) as daemon:
        daemon.wait_for('msg="poll done"')
        for path in tmp_path.glob("activity.sqlite*"):
            path.unlink()
        daemon.wait_for('msg="poll done"', count=3, timeout=20)
        log = daemon.log()

    assert db.exists(), f"polls went on after the file was deleted, but no file:\n{log}"
    assert rows(db, "SELECT count(*) FROM polls WHERE ok = 1")[0][0] >= 1


def test_a_reader_holding_the_write_lock_fails_a_poll_cleanly_and_the_next_one_records(
    played, tmp_path
):
    db = tmp_path / "activity.sqlite"
    played.users = [hub_user("alice")]
    with PlayedDaemon(played, db, tmp_path) as daemon:
        daemon.wait_for('msg="poll done"')
        shell = SqliteShell(db)
        try:
            played.users = [hub_user("alice"), hub_user("bob")]
            log = daemon.wait_for('msg="poll failed"', timeout=20)
        finally:
            shell.release()
        log = daemon.wait_for('msg="poll done"', count=2, timeout=20)

    failed = [line for line in log.splitlines() if 'msg="poll failed"' in line]
    assert "locked" in failed[0] and "Traceback" not in log, log
    assert rows(db, "SELECT users FROM polls WHERE ok = 1 ORDER BY id")[:2] == [(1,), (2,)]
    check_whole_polls(db)


def test_a_second_collector_on_the_same_database_is_refused(played, tmp_path):
    db = tmp_path / "activity.sqlite"
    played.users = [hub_user("alice")]
    with PlayedDaemon(played, db, tmp_path) as first:
        first.wait_for('msg="poll done"')
        second = PlayedDaemon(played, db, tmp_path)
        try:
            second.process.start(lambda: "msg=started" in second.log() or "error" in
                                 second.log(), 30, "second hub-stats")  # fmt: skip
        except RuntimeError:
            pass  # exited: what a refusal looks like
        time.sleep(6)
        refused = second.process.process.poll() is not None
        second.process.stop()

    assert refused, "the second collector runs beside the first"
    assert "another" in second.log().lower() or str(db) in second.log()


def _foreign_file(path: Path, kind: str) -> None:
    if kind == "not-sqlite":
        path.write_bytes(b"notebook outputs, not a database\n" * 200)
        return
    conn = sqlite3.connect(path)
    if kind == "another-app":  # e.g. the hub's own jupyterhub.sqlite given by mistake
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("CREATE TABLE oauth_clients (id INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO users (name) VALUES ('alice')")
    else:  # written by a newer hub-stats, its journal not (yet) WAL
        conn.execute("PRAGMA user_version = 99")
        conn.execute("CREATE TABLE polls (id INTEGER PRIMARY KEY, future TEXT)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("kind", ["not-sqlite", "another-app", "newer"])
def test_a_foreign_or_newer_file_is_refused_before_it_is_touched(played, tmp_path, kind):
    folder = tmp_path / "state"
    folder.mkdir()
    db = folder / "activity.sqlite"
    _foreign_file(db, kind)
    before = db.read_bytes()
    played.users = [hub_user("alice")]
    run = poll_played(played, db)
    assert run.returncode == 2, run.log
    assert "Traceback" not in run.log and len(run.log.strip().splitlines()) == 1, run.log
    assert db.read_bytes() == before  # not even switched to WAL (header bytes 18-19)
    assert sorted(path.name for path in folder.iterdir()) == ["activity.sqlite"]


def test_a_second_collector_through_a_symlink_is_refused(played, tmp_path):
    db = tmp_path / "activity.sqlite"
    other = tmp_path / "elsewhere"
    other.mkdir()
    link = other / "activity.sqlite"
    link.symlink_to(db)
    played.users = [hub_user("alice")]
    with PlayedDaemon(played, db, tmp_path) as first:
        first.wait_for('msg="poll done"')
        run = poll_played(played, link)
        first.wait_for('msg="poll done"', count=2)
    assert run.returncode == 75, run.log  # busy (docs/exit-codes.md), not a bad configuration
    assert any(line.startswith("hub-stats: busy: another hub-stats collector")
               for line in run.log.splitlines()), run.log
    # one collector's polls only: no poll recorded by the second
    assert rows(db, "SELECT count(*) FROM polls")[0][0] == first.log().count('msg="poll done"')


def test_a_full_disk_fails_polls_cleanly_and_recording_resumes_when_space_is_back(played, tmp_path):
    from realparts.tmpfs import fill, tmpfs_prefix_root

    with tmpfs_prefix_root(tmp_path / "small", size="4m") as root:
        db = root / "activity.sqlite"
        played.users = [hub_user("alice")]
        with PlayedDaemon(played, db, tmp_path) as daemon:
            daemon.wait_for('msg="poll done"')
            filler = fill(root)
            # a poll that has to write: 3000 new users with servers
            played.users = [hub_user(f"user{n:04d}") for n in range(3000)]
            log = daemon.wait_for('msg="poll failed"', timeout=30)
            filler.unlink()
            log = daemon.wait_for('msg="poll done"', count=2, timeout=30)
            assert daemon.process.process.poll() is None, "the daemon died"
        failed = [line for line in log.splitlines() if 'msg="poll failed"' in line]
        assert "full" in failed[0] and "Traceback" not in log, log
        assert rows(db, "SELECT max(users) FROM polls WHERE ok = 1") == [(3000,)]
        check_whole_polls(db)


# --- hub-stats serve attacked -------------------------------------------------------------------

PADDING_BYTES = 24 * 2**20  # a database too big for the sockets' buffers: downloads take reads


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One real `hub-stats serve` on loopback TCP with a token, debug log and access log, over
    a ~24 MB database; snapshots for downloads are made in its own TMPDIR."""
    from tests.stats import activity_data as known

    workdir = tmp_path_factory.mktemp("served")
    db = workdir / "activity.sqlite"
    known.fill(str(db))
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE padding (blob BLOB)")
    conn.executemany("INSERT INTO padding VALUES (?)",
                     [(os.urandom(2**20),) for _ in range(PADDING_BYTES // 2**20)])  # fmt: skip
    # a legacy activity view of 200,000 rows (400 polls x 500 users): CSV of several MB
    first = conn.execute("SELECT max(id) + 1 FROM polls").fetchone()[0]
    conn.executemany(
        "INSERT INTO polls (time, interval_s, ok, users) VALUES (?, 300, 1, 500)",
        [(f"2026-04-{1 + n // 288:02d}T{n % 288 // 12:02d}:{n % 12 * 5:02d}:00.000+00:00",)
         for n in range(400)],
    )  # fmt: skip
    conn.executemany("INSERT INTO users (name, first_poll) VALUES (?, ?)",
                     [(f"bulk{n:03d}", first) for n in range(500)])  # fmt: skip
    conn.commit()
    conn.close()
    token_file = workdir / "serve.token"
    token_file.write_text(SERVE_TOKEN + "\n")
    token_file.chmod(0o600)
    scratch = workdir / "tmp"
    scratch.mkdir()
    endpoint = Endpoint(port=free_port())
    process = StatsServeProcess(
        db, endpoint, workdir / "serve.log", env={"TMPDIR": str(scratch)},
        extra_args=["--serve-token-file", str(token_file), "--access-log", "--log-level",
                    "debug"],
    ).start()  # fmt: skip
    process.scratch = scratch
    process.db = db
    yield process
    process.stop()


def worker_pids(served) -> list[int]:
    master = served.process.process.pid
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                children.append(int(entry))
    return children


def snapshots_held(served) -> int:
    """Snapshot copies the workers hold open (deleted files under the serve's TMPDIR)."""
    held = 0
    for pid in worker_pids(served):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            # (gunicorn's own heartbeat file lives there too)
            if target.startswith(f"{served.scratch}/hub-stats-download."):
                held += 1
    return held


def start_download(served, read: int = 0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", served.endpoint.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET /activity.sqlite HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 f"{SERVE_TOKEN}\r\n\r\n".encode())  # fmt: skip
    got = 0
    while got < read:
        got += len(sock.recv(65536))
    return sock


HOSTILE_PATHS = [
    "/views/..%2F..%2F..%2Fetc%2Fpasswd.csv",
    "/views/%2e%2e%2factivity.sqlite%00.csv",
    "/views/activity%00.csv",
    "/views/activity.csv%00",
    "/views/activity.sqlite",
    "/views/sqlite_master.csv",
    "/views/activity%5D%20UNION%20SELECT%20*%20FROM%20polls%20--.csv",
    "/static/..%2F..%2Fstats%2Fweb.py",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/vega.js%00.py",
    "/activity.sqlite%00",
    "/activity.sqlite/..%2F..%2Fetc%2Fpasswd",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_traversal_nul_and_sql_in_paths_give_nothing_but_an_error(served, path):
    reply = served.endpoint.request("GET", path, SERVE_BEARER, timeout=30)

    assert reply.status in (400, 404), (reply.status, reply.body[:200])
    assert json.loads(reply.body)["title"].startswith(str(reply.status))
    assert b"root:" not in reply.body and b"SQLite format 3" not in reply.body
    assert b"import " not in reply.body and b"date,user,active" not in reply.body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_other_methods_need_the_token_and_then_are_refused(served, method):
    body = b"\x00" * 1000
    anonymous = served.endpoint.request(method, "/activity.sqlite", body=body)
    with_token = served.endpoint.request(method, "/activity.sqlite", SERVE_BEARER, body=body)

    assert anonymous.status == 401, anonymous.status
    if method == "OPTIONS":  # Falcon's own answer: what the resource allows, nothing more
        assert (with_token.status, with_token.body) == (200, b"")
        assert with_token.headers["allow"] == "GET, HEAD"
    else:
        assert with_token.status in (405, 400), with_token.status


def test_head_of_a_view_and_of_the_file_send_no_body(served):
    for path in ("/views/activity.csv", "/activity.sqlite"):
        reply = served.endpoint.request("HEAD", path, SERVE_BEARER)
        assert reply.status == 200 and reply.body == b"", (path, reply.status)


WRONG_CREDENTIALS = [
    {},
    {"Authorization": f"Bearer {SERVE_TOKEN}x"},
    {"Authorization": f"Bearer {SERVE_TOKEN[:-1]}"},
    {"Authorization": f"Token {SERVE_TOKEN}"},
    {"Authorization": f"Bearer  {SERVE_TOKEN} trailing"},
    {
        "Authorization": "Basic "
        + __import__("base64").b64encode(f"{SERVE_TOKEN}:".encode()).decode()
    },  # the token as the user name, not the password
    {"Authorization": "Basic !!!notbase64"},
    {"Authorization": "Bearer " + "\u00e9" * 50},
]


@pytest.mark.parametrize("headers", WRONG_CREDENTIALS)
def test_wrong_credentials_get_401_and_the_offered_value_is_not_echoed(served, headers):
    for path in ("/activity.sqlite", "/views/activity.csv", "/stats.json", "/"):
        reply = served.endpoint.request("GET", path, headers)
        assert reply.status == 401, (path, reply.status)
        offered = headers.get("Authorization", "").encode("latin-1", "replace")
        assert not offered or offered.split()[-1] not in reply.body
        assert SERVE_TOKEN.encode() not in reply.body


def test_the_serve_token_is_never_in_the_log_even_at_debug_with_the_access_log(served):
    import base64

    basic = base64.b64encode(f"analyst:{SERVE_TOKEN}".encode()).decode()
    before = len(served.log())
    for headers in (SERVE_BEARER, {"Authorization": f"Basic {basic}"}):
        assert served.endpoint.request("GET", "/stats.json", headers).status == 200
    served.endpoint.request("GET", "/stats.json", {"Authorization": f"Bearer {SERVE_TOKEN}z"})

    log = wait_until(lambda: served.log()[before:].count("/stats.json") >= 3 and
                     served.log()[before:], 10, "three lines in the access log")  # fmt: skip
    assert SERVE_TOKEN not in log and basic not in log


def test_a_token_tried_in_the_query_string_is_not_written_to_the_access_log(served):
    before = len(served.log())
    reply = served.endpoint.request("GET", f"/activity.sqlite?token={SERVE_TOKEN}")

    assert reply.status == 401
    log = wait_until(lambda: "/activity.sqlite" in served.log()[before:] and
                     served.log()[before:], 10, "the access log's line")  # fmt: skip
    assert SERVE_TOKEN not in log


def test_a_client_leaving_mid_download_leaves_no_copy_behind(served):
    assert not list(served.scratch.iterdir())
    clients = [start_download(served, read=256 * 1024) for _ in range(3)]
    for sock in clients:
        sock.close()

    wait_until(lambda: snapshots_held(served) == 0, 15,
               lambda: f"{snapshots_held(served)} snapshot copies still open after the clients "
                       "left")
    assert not list(served.scratch.iterdir())
    assert served.endpoint.request("GET", "/healthz").status == 200


def test_stalled_downloads_do_not_pile_up_copies_of_the_database(served):
    clients = [start_download(served) for _ in range(6)]
    try:
        time.sleep(8)  # every copy is made one after another
        held = snapshots_held(served)
        assert served.endpoint.request("GET", "/healthz").status == 200
    finally:
        for sock in clients:
            sock.close()
    assert held <= 2, f"{held} copies of a {PADDING_BYTES >> 20} MB database held at once"


def checkpoint(db: Path) -> int:
    """A poll's write, then a full checkpoint; its `busy` flag (0: the WAL was emptied)."""
    writer = sqlite3.connect(db, timeout=3)
    try:
        writer.execute("INSERT INTO padding VALUES (x'00')")
        writer.commit()
        return writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    finally:
        writer.close()


def test_a_stalled_csv_download_does_not_pin_the_wal(served):
    assert checkpoint(served.db) == 0  # without a download, it completes
    sock = socket.create_connection(("127.0.0.1", served.endpoint.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET /views/activity.csv HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 f"{SERVE_TOKEN}\r\n\r\n".encode())  # fmt: skip
    got = 0
    while got < 64 * 1024:
        got += len(sock.recv(65536))
    try:
        time.sleep(1)
        busy = checkpoint(served.db)
    finally:
        sock.close()

    assert busy == 0, "a checkpoint cannot complete while the CSV download is stalled"


# --- a real hub, and what its users can make it say ------------------------------------------

HUB_CONFIG = """
c.JupyterHub.allow_named_servers = True
c.JupyterHub.last_activity_interval = 24 * 3600
"""


@pytest.fixture(scope="module")
def hub(start_module_hub):
    services = [
        HubService("admin", ["admin:users", "admin:servers", "users:activity", "tokens"]),
        HubService("stats", STATS_SCOPES),
    ]
    return start_module_hub(services, HUB_CONFIG, spawner="responder")


def own_token(hub, name: str) -> str:
    """A token of the user's own (what their server, or they, hold)."""
    reply = hub.api("POST", f"/users/{name}/tokens", "admin", json={"note": "own"})
    assert reply.status_code in (200, 201), reply.text
    return reply.json()["token"]


def test_hub_names_reach_csv_and_the_snapshot_unchanged(hub, tmp_path):
    names = ["zoë", "名前-ü", "o.brien+lab@example.org", "x" * 200]
    hub.create_users(names, "admin")
    db = tmp_path / "activity.sqlite"
    assert run_once(hub, "stats", db, interval=5).returncode == 0

    in_csv = {row["user"] for row in export_csv(db, tmp_path / "csv")["activity"]}
    assert set(names) <= in_csv
    snapshot = tmp_path / "copy.sqlite"
    command = [str(argv("", db)[0]), "export", "--db", str(db), str(snapshot)]
    assert subprocess.run(command, check=False, capture_output=True, timeout=120,
                          env=stats_env("x")).returncode == 0  # fmt: skip
    assert set(names) <= {name for (name,) in rows(snapshot, "SELECT name FROM users")}


def export_csv(db: Path, out: Path) -> dict[str, list[dict]]:
    """`hub-stats export --csv OUT`; every view's rows as dicts."""
    import csv

    command = [str(argv("", db)[0]), "export", "--db", str(db), "--csv", str(out)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120,
                          env=stats_env("x"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    views = {}
    for path in out.glob("*.csv"):
        with open(path, encoding="utf-8", newline="") as handle:
            views[path.stem] = list(csv.DictReader(handle))
    return views


def test_a_user_named_like_a_formula_is_not_a_formula_in_the_csv(hub, tmp_path):
    names = ["=1+2", "@sum(a1)", "+1-1", "-2+3"]
    reply = hub.api("POST", "/users", "admin", json={"usernames": names})
    assert reply.status_code == 201, reply.text  # the hub takes them
    db = tmp_path / "activity.sqlite"
    assert run_once(hub, "stats", db, interval=5).returncode == 0
    assert set(names) <= {name for (name,) in rows(db, "SELECT name FROM users")}

    views = export_csv(db, tmp_path / "csv")

    cells = {row["user"] for row in views["activity"]}
    assert not {cell for cell in cells if cell[:1] in ("=", "@", "+", "-")}, cells


# --- hub-stats export at hostile targets --------------------------------------------------------


@pytest.fixture
def small_db(tmp_path) -> Path:
    from tests.stats import activity_data as known

    db = tmp_path / "activity.sqlite"
    known.fill(str(db))
    return db


def export(db: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(argv("", db)[0]), "export", "--db", str(db), *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120,
                          env=stats_env("x"))  # fmt: skip


@pytest.mark.parametrize("target", ["file", "symlink-to-victim", "dangling-symlink"])
def test_export_never_writes_through_an_existing_name(small_db, tmp_path, target):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out.sqlite"
    if target == "file":
        out.write_text("an earlier copy\n")
    elif target == "symlink-to-victim":
        out.symlink_to(victim)
    else:
        out.symlink_to(tmp_path / "nowhere" / "planted.sqlite")

    done = export(small_db, str(out))

    assert done.returncode == 2 and "exists" in done.stderr, done
    assert "Traceback" not in done.stderr
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "nowhere").exists()
    assert not list(tmp_path.glob(".out.sqlite.*"))


def test_export_into_a_missing_directory_is_one_line(small_db, tmp_path):
    done = export(small_db, str(tmp_path / "missing" / "out.sqlite"))

    assert done.returncode == 2 and "not a directory" in done.stderr, done
    assert "Traceback" not in done.stderr


def test_csv_export_replaces_a_planted_symlink_instead_of_writing_through_it(small_db, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "csv"
    out.mkdir()
    (out / "activity.csv").symlink_to(victim)

    views = export_csv(small_db, out)

    assert victim.read_text() == "precious\n"
    assert not (out / "activity.csv").is_symlink() and views["activity"]
    assert oct((out / "activity.csv").stat().st_mode & 0o777) == oct(0o600)


def test_export_while_an_analyst_holds_the_write_lock_still_copies(small_db, tmp_path):
    shell = SqliteShell(small_db)
    try:
        done = export(small_db, str(tmp_path / "out.sqlite"))
    finally:
        shell.release()

    assert done.returncode == 0, done.stderr
    assert rows(tmp_path / "out.sqlite", "PRAGMA integrity_check") == [("ok",)]


def test_export_onto_a_full_disk_is_one_line_and_leaves_nothing(small_db, tmp_path):
    from realparts.tmpfs import tmpfs_prefix_root

    conn = sqlite3.connect(small_db)
    conn.execute("CREATE TABLE padding (blob BLOB)")
    conn.executemany("INSERT INTO padding VALUES (?)", [(os.urandom(2**20),)] * 3)
    conn.commit()
    conn.close()
    with tmpfs_prefix_root(tmp_path / "small", size="1m") as root:
        before = set(root.iterdir())
        done = export(small_db, str(root / "out.sqlite"))
        after = set(root.iterdir())

    assert after == before, after - before
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1 and "full" in done.stderr, done  # failed (docs/exit-codes.md)


# --- a hub whose answers are JSON, but not the JSON a hub sends --------------------------------


def check_recorded_failed_poll(played, db: Path, body: bytes) -> None:
    played.users = [hub_user("alice")]
    assert poll_played(played, db).returncode == 0
    played.users_behaviour = lambda handler: send(handler, 200, body)

    run = poll_played(played, db)

    assert run.returncode == 1, run.log
    assert "Traceback" not in run.log
    # the spec: hub erroring -> the poll is recorded as failed, with a reason
    assert rows(db, "SELECT ok, error IS NOT NULL FROM polls ORDER BY id") == [(1, 0), (0, 1)]
    assert rows(db, "SELECT count(*) FROM users WHERE gone_poll IS NULL") == [(1,)]


@pytest.mark.parametrize("body", [b'{"items": [1, 2]}', b'[{"servers": {}}]', b"[[]]"])
def test_user_models_that_are_not_users_are_a_recorded_failed_poll(played, tmp_path, body):
    check_recorded_failed_poll(played, tmp_path / "activity.sqlite", body)


@pytest.mark.parametrize("body", [
    b"null", b"42", b'"users"', b'{"items": null}',
    b'{"items": [], "_pagination": {"next": {"offset": "two hundred"}}}',
])  # fmt: skip
def test_a_listing_page_that_is_not_a_page_is_a_recorded_failed_poll(played, tmp_path, body):
    check_recorded_failed_poll(played, tmp_path / "activity.sqlite", body)


class EndlessPages:
    """A hub whose listing never ends: every page says there is a next one."""

    def __init__(self) -> None:
        self.pages = 0

    def __call__(self, handler) -> None:
        self.pages += 1
        offset = int(handler.path.split("offset=")[1].split("&")[0])
        page = {"items": [hub_user(f"user{offset + n}") for n in range(5)],
                "_pagination": {"offset": offset, "limit": 200, "total": 10,
                                "next": {"offset": offset + 200, "limit": 200}}}  # fmt: skip
        send(handler, 200, json.dumps(page).encode())


def test_a_listing_that_never_ends_ends_the_poll(played, tmp_path):
    db = tmp_path / "activity.sqlite"
    endless = EndlessPages()
    played.users_behaviour = endless

    run = poll_played(played, db, "--request-timeout", "2", timeout=30)

    assert run.returncode != -9, f"still polling after 30 s, {endless.pages} pages asked"
    assert run.returncode == 1
    assert rows(db, "SELECT ok FROM polls") == [(0,)]


def test_a_hub_error_carrying_markup_is_shown_as_text_on_the_charts_page(played, tmp_path):
    db = tmp_path / "activity.sqlite"
    played.users = [hub_user("alice")]
    assert poll_played(played, db).returncode == 0
    markup = b"<script>alert('hub')</script><img src=x onerror=alert(1)>"
    played.users_behaviour = lambda handler: send(handler, 500, markup, "text/html")
    assert poll_played(played, db, "--request-timeout", "1").returncode == 1
    endpoint = Endpoint(unix=str(tmp_path / "stats.sock"))
    serve = StatsServeProcess(db, endpoint, tmp_path / "serve.log").start()
    try:
        page = endpoint.request("GET", "/")
        now = endpoint.request("GET", "/stats.json")
    finally:
        serve.stop()

    assert page.status == 200 and b"failed" in page.body
    assert b"<script>alert" not in page.body and b"<img src=x" not in page.body
    assert b"&lt;script&gt;alert" in page.body
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "alert" in json.loads(now.body)["last_poll"]["error"]  # JSON, as text


def test_serve_follows_the_database_being_deleted_and_replaced(played, tmp_path):
    db = tmp_path / "activity.sqlite"
    played.users = [hub_user("alice")]
    assert poll_played(played, db).returncode == 0
    endpoint = Endpoint(unix=str(tmp_path / "stats.sock"))
    serve = StatsServeProcess(db, endpoint, tmp_path / "serve.log").start()
    try:
        assert json.loads(endpoint.request("GET", "/stats.json").body)["users"] == 1
        assert endpoint.request("GET", "/").status == 200  # charts drawn and kept
        for path in tmp_path.glob("activity.sqlite*"):
            path.unlink()
        gone = endpoint.request("GET", "/stats.json")
        gone_page = endpoint.request("GET", "/")
        played.users = [hub_user("alice"), hub_user("bob"), hub_user("carol")]
        assert poll_played(played, db).returncode == 0  # a new file at the same path
        back = endpoint.request("GET", "/stats.json")
        download = endpoint.request("GET", "/activity.sqlite")
    finally:
        serve.stop()

    assert gone.status == 503 and gone_page.status == 503
    assert "no activity database" in json.loads(gone.body)["description"]
    assert json.loads(back.body)["users"] == 3
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes(download.body)
    assert rows(copy, "SELECT users FROM polls") == [(3,)]
