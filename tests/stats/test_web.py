"""`hub-stats serve`: the app against a real database filled through the recorder, and the
real command under gunicorn on a unix socket and on TCP with a token."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import socket
import sqlite3
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

import falcon.testing
import pytest

from realparts.net import Endpoint, free_port
from realparts.stats import HUB_STATS
from realparts.stats_serve import StatsServeProcess
from stats.queries import ActivityStore
from stats.schema import VIEW_DOCS, VIEWS, connect
from stats.web import create_app
from tests.stats import activity_data as known

TOKEN = "stats-test-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def activity_db(tmp_path: Path) -> Path:
    path = tmp_path / "activity.sqlite"
    known.fill(str(path))
    return path


@pytest.fixture
def client(activity_db: Path) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(ActivityStore(str(activity_db)), None))


@pytest.fixture
def token_path(tmp_path: Path) -> Path:
    path = tmp_path / "stats.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def csv_rows(body: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body)))


def view_rows_as_csv_text(db_path: Path, name: str) -> list[list[str]]:
    """The view read directly with sqlite3, as CSV would write it (NULL as empty)."""
    conn = sqlite3.connect(db_path)
    try:
        cursor = conn.execute(f"SELECT * FROM [{name}]")
        header = [column[0] for column in cursor.description]
        return [header] + [["" if value is None else str(value) for value in row]
                           for row in cursor]  # fmt: skip
    finally:
        conn.close()


# --- /stats.json ----------------------------------------------------------------------------


def test_stats_json_shows_the_latest_successful_poll_and_the_failed_one_after_it(client):
    now = client.simulate_get("/stats.json").json
    assert now["last_successful_poll"] == known.LAST_OK_POLL
    assert {key: now[key] for key in known.NOW} == known.NOW
    assert now["interval_s"] == known.INTERVAL and now["hub_version"] == "5.3.0"
    assert now["last_poll"] == {"time": known.FAILED_POLL, "ok": False,
                                "error": known.FAILED_ERROR}  # fmt: skip


def test_stats_json_gives_each_docker_host_from_the_latest_samples_only(client):
    docker = client.simulate_get("/stats.json").json["docker"]
    assert docker == {"sampled_at": known.LAST_OK_POLL, "hosts": known.DOCKER_HOSTS}


def test_stats_json_of_a_file_sampled_before_hosts_were_recorded(tmp_path):
    """A file written by a hub-stats before docker_hosts: each host from its latest samples,
    with what it has unknown."""
    path = tmp_path / "older.sqlite"
    known.fill(str(path))
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DELETE FROM docker_hosts")
    conn.close()
    app = falcon.testing.TestClient(create_app(ActivityStore(str(path)), None))
    docker = app.simulate_get("/stats.json").json["docker"]
    unknown = {"cpus": None, "memory_total_bytes": None}
    assert docker == {"sampled_at": known.LAST_OK_POLL, "hosts": {
        host: {**figures, **unknown} for host, figures in known.DOCKER_HOSTS.items()}}


def test_stats_json_without_docker_samples_and_before_any_poll(tmp_path):
    path = tmp_path / "plain.sqlite"
    connect(str(path)).conn.close()  # created, migrated, no poll yet
    app = falcon.testing.TestClient(create_app(ActivityStore(str(path)), None))
    empty = app.simulate_get("/stats.json")
    assert empty.status_code == 200
    assert empty.json["last_poll"] is None and empty.json["users"] is None
    known.fill(str(path), docker=False, failed_poll=False)
    now = app.simulate_get("/stats.json").json
    assert now["docker"] is None and now["users"] == 4
    assert now["last_poll"] == {"time": known.LAST_OK_POLL, "ok": True, "error": None}


def test_stats_json_age_of_the_last_successful_poll(activity_db):
    store = ActivityStore(str(activity_db))
    later = known.at(4, 20) + timedelta(minutes=90)
    assert store.now(clock=later)["seconds_since_successful_poll"] == 90 * 60


# --- views as CSV ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VIEWS))
def test_each_view_as_csv_is_the_view_row_by_row(client, activity_db, name):
    answer = client.simulate_get(f"/views/{name}.csv")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert f'filename="{name}.csv"' in answer.headers["content-disposition"]
    rows = csv_rows(answer.text)
    assert rows == view_rows_as_csv_text(activity_db, name)
    assert len(rows) > 1, "the known data gives every view rows"


def test_daily_active_users_csv_holds_the_known_figures(client):
    rows = csv_rows(client.simulate_get("/views/daily_active_users.csv").text)
    assert rows[0] == ["day", "active_users"]
    assert {day: int(count) for day, count in rows[1:]} == known.DAILY_ACTIVE_USERS


def test_a_large_view_streams_in_batches_and_arrives_whole(tmp_path):
    """400 polls x 30 users: 12000 rows of the activity view, more than one batch."""
    from datetime import UTC, datetime

    from hubsidecars.hubapi import User
    from stats.recorder import record_poll

    path = tmp_path / "big.sqlite"
    db = connect(str(path))
    users = [User(f"u{index:02d}", False, (), None, None) for index in range(30)]
    start = datetime(2026, 1, 5, tzinfo=UTC)
    for poll in range(400):
        record_poll(db, users, time=start + timedelta(minutes=5 * poll), interval=300)
    db.conn.close()
    app = falcon.testing.TestClient(create_app(ActivityStore(str(path)), None))
    rows = csv_rows(app.simulate_get("/views/activity.csv").text)
    assert len(rows) == 1 + 400 * 30
    assert rows == view_rows_as_csv_text(path, "activity")


FORMULA_NAMES = ["=1+2", "@sum(a1)", "+1-1", "-2+3", "\tcmd", "=HYPERLINK(\"x\")"]


def record_users(path: Path, names: list[str]) -> None:
    from hubsidecars.hubapi import User
    from stats.recorder import record_poll

    db = connect(str(path))
    users = [User(name, False, (), None, known.at(2, 9)) for name in names]
    record_poll(db, users, time=known.at(2, 9, 5), interval=300)
    db.conn.close()


def test_csv_text_a_spreadsheet_would_run_is_quoted_and_numbers_are_not(tmp_path):
    path = tmp_path / "activity.sqlite"
    record_users(path, [*FORMULA_NAMES, "alice"])
    app = falcon.testing.TestClient(create_app(ActivityStore(str(path)), None))

    rows = csv_rows(app.simulate_get("/views/activity.csv").text)

    assert rows[0] == ["date", "user", "active"]
    assert sorted(user for _, user, _ in rows[1:]) == sorted(
        ["'" + name for name in FORMULA_NAMES] + ["alice"])  # fmt: skip
    assert {active for _, _, active in rows[1:]} == {"0"}
    hours = csv_rows(app.simulate_get("/views/hour_of_week.csv").text)
    assert all(not cell.startswith("'") for row in hours for cell in row)


def test_a_csv_download_is_written_whole_before_it_is_sent(tmp_path):
    """The view is read in one short read transaction, then sent from a file: a checkpoint
    completes while the response is still unread."""
    path = tmp_path / "activity.sqlite"
    known.fill(str(path))
    store = ActivityStore(str(path), scratch_dir=str(tmp_path))
    handle = store.view_csv("activity")
    try:
        writer = sqlite3.connect(path)
        writer.execute("INSERT INTO polls (time, interval_s, ok) VALUES ('2026-03-09', 300, 0)")
        writer.commit()
        assert writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        writer.close()
        assert csv_rows(handle.read().decode()) == view_rows_as_csv_text(path, "activity")
    finally:
        handle.close()
    assert not list(tmp_path.glob("hub-stats-csv.*")), "the file has no name on disk"


@pytest.mark.parametrize("path", [
    "/views/polls.csv",  # a table, not a view
    "/views/sqlite_master.csv",
    "/views/activity%20UNION%20SELECT%201.csv",
    "/views/..%2Fpolls.csv",
    "/views/daily_active_users.json",
    "/views/.csv",
])  # fmt: skip
def test_only_the_known_views_are_served(client, path):
    answer = client.simulate_get(path)
    assert answer.status_code == 404
    assert set(answer.json) == {"title", "description"}


def test_view_index_lists_every_view_with_its_description(client):
    index = client.simulate_get("/views").json
    assert list(index) == list(VIEWS)
    assert index["daily_active_users"]["csv"] == "views/daily_active_users.csv"
    assert index["daily_active_users"]["description"] == VIEW_DOCS["daily_active_users"][0]


# --- the snapshot ---------------------------------------------------------------------------


def test_download_is_a_standalone_database_with_every_poll(client, tmp_path, activity_db):
    answer = client.simulate_get("/activity.sqlite")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/vnd.sqlite3"
    assert re.search(r'attachment; filename="activity-\d{8}T\d{6}Z\.sqlite"',
                     answer.headers["content-disposition"])  # fmt: skip
    assert int(answer.headers["content-length"]) == len(answer.content)
    copy = tmp_path / "downloaded.sqlite"
    copy.write_bytes(answer.content)
    conn = sqlite3.connect(copy)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("SELECT count(*) FROM polls").fetchone()[0] == 6
    assert dict(conn.execute("SELECT * FROM daily_active_users").fetchall()) == \
        known.DAILY_ACTIVE_USERS  # fmt: skip
    conn.close()
    assert not list(tmp_path.glob("hub-stats-download.*")), "no snapshot left behind"


def test_head_answers_without_making_a_snapshot(client):
    answer = client.simulate_head("/activity.sqlite")
    assert answer.status_code == 200 and answer.content == b""
    assert "attachment" in answer.headers["content-disposition"]


# --- no database yet ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/stats.json", "/views/activity.csv",
                                  "/activity.sqlite"])  # fmt: skip
def test_without_a_database_every_data_route_answers_503_in_json(tmp_path, path):
    missing = tmp_path / "not-yet.sqlite"
    app = falcon.testing.TestClient(create_app(ActivityStore(str(missing)), None))
    answer = app.simulate_get(path)
    assert answer.status_code == 503
    assert str(missing) in answer.json["description"]
    assert not missing.exists(), "the web app must never create the database"
    assert app.simulate_get("/healthz").status_code == 200


def test_a_file_that_is_no_database_answers_503(tmp_path):
    bogus = tmp_path / "activity.sqlite"
    bogus.write_bytes(b"this is not SQLite" * 100)
    app = falcon.testing.TestClient(create_app(ActivityStore(str(bogus)), None))
    for path in ("/stats.json", "/views/activity.csv", "/activity.sqlite", "/"):
        answer = app.simulate_get(path)
        assert answer.status_code == 503, path
        assert set(answer.json) == {"title", "description"}


# --- the page and its scripts ---------------------------------------------------------------


def test_page_carries_the_charts_data_and_loads_nothing_from_elsewhere(client):
    answer = client.simulate_get("/")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    page = answer.text
    specs = json.loads(re.search(r'<script id="chart-specs" type="application/json">(.*?)'
                                 r"</script>", page, re.DOTALL).group(1))  # fmt: skip
    assert list(specs) == ["daily_active_users", "concurrent_servers", "hour_of_week"]
    assert {row["day"]: row["active_users"] for row in
            specs["daily_active_users"]["data"]["values"]} == known.DAILY_ACTIVE_USERS  # fmt: skip
    assert [row["servers_running"] for row in
            specs["concurrent_servers"]["data"]["values"]] == known.SERVERS_PER_POLL  # fmt: skip
    # every src/href is relative: nothing from a CDN, and the page works under a path prefix
    for link in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert not re.match(r"(?i)^[a-z]+:(?!,)|^//|^/", link), link
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy


def test_user_supplied_text_cannot_break_out_of_the_page(tmp_path):
    """A failed poll's error text (from the hub's answer) is shown on the page."""
    from stats.recorder import record_failed_poll

    path = tmp_path / "activity.sqlite"
    known.fill(str(path), failed_poll=False)
    db = connect(str(path))
    record_failed_poll(db, time=known.at(4, 21), interval=60,
                       error="</script><script>alert(1)</script><b>")  # fmt: skip
    db.conn.close()
    page = falcon.testing.TestClient(create_app(ActivityStore(str(path)), None)).simulate_get("/")
    assert "<script>alert(1)" not in page.text
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page.text


def test_vega_bundle_is_served_gzipped_and_cached(client):
    plain = client.simulate_get("/static/vega.js")
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/javascript")
    assert "vegaEmbed" in plain.text and len(plain.content) > 500_000
    packed = client.simulate_get("/static/vega.js", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert len(packed.content) < len(plain.content) / 2
    tag = plain.headers["etag"]
    again = client.simulate_get("/static/vega.js", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    assert client.simulate_get("/static/other.js").status_code == 404


@pytest.mark.parametrize("path", ["/", "/stats.json", "/views", "/views/activity.csv",
                                  "/static/page.js", "/healthz"])  # fmt: skip
def test_head_is_answered_where_get_is(client, path):
    answer = client.simulate_head(path)
    assert answer.status_code == 200 and answer.content == b""


# --- the token ------------------------------------------------------------------------------


def basic(password: str, user: str = "analyst") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_token_as_bearer_or_as_the_basic_password(activity_db):
    app = falcon.testing.TestClient(create_app(ActivityStore(str(activity_db)), TOKEN))
    for path in ("/", "/stats.json", "/views/activity.csv", "/activity.sqlite",
                 "/static/vega.js", "/views"):  # fmt: skip
        refused = app.simulate_get(path)
        assert refused.status_code == 401, path
        assert set(refused.json) == {"title", "description"}
        assert app.simulate_get(path, headers=BEARER).status_code == 200, path
        assert app.simulate_get(path, headers=basic(TOKEN)).status_code == 200, path
    for wrong in (
        basic("wrong"),
        basic(TOKEN[:-1]),
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic !!!"},
        basic(""),
        basic("", user=TOKEN),
    ):
        assert app.simulate_get("/stats.json", headers=wrong).status_code == 401, wrong
    assert app.simulate_get("/healthz").status_code == 200


def test_a_browser_is_asked_for_a_password_an_api_client_for_a_bearer_token(activity_db):
    app = falcon.testing.TestClient(create_app(ActivityStore(str(activity_db)), TOKEN))
    browser = app.simulate_get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert browser.headers["www-authenticate"].startswith("Basic ")
    api = app.simulate_get("/stats.json", headers={"Accept": "application/json"})
    assert api.headers["www-authenticate"] == "Bearer"


# --- the real command -----------------------------------------------------------------------


@pytest.fixture
def start_serve(tmp_path: Path):
    started: list[StatsServeProcess] = []

    def start(db: Path, endpoint: Endpoint, extra_args=None, env=None, launcher=None,
              bind=None) -> StatsServeProcess:  # fmt: skip
        service = StatsServeProcess(db, endpoint, tmp_path / f"serve{len(started)}.log",
                                    extra_args, env, launcher, bind)  # fmt: skip
        started.append(service)
        return service.start()

    yield start
    for service in started:
        service.stop()


class PollWriter(threading.Thread):
    """Records polls into the database as fast as it can, like a busy collector."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.polls = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        from hubsidecars.hubapi import User
        from stats.recorder import record_poll

        try:
            db = connect(str(self.path))
            moment = known.at(5, 0)
            while not self.stop.is_set():
                moment += timedelta(minutes=5)
                users = [User(f"w{(self.polls + index) % 200}", False, (), None, moment)
                         for index in range(150)]  # fmt: skip
                record_poll(db, users, time=moment, interval=300)
                self.polls += 1
            db.conn.close()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error


def test_serve_on_a_unix_socket_download_while_a_writer_records(start_serve, activity_db,
                                                                tmp_path):  # fmt: skip
    endpoint = Endpoint(unix=str(tmp_path / "run" / "stats.sock"))
    service = start_serve(activity_db, endpoint)
    now = endpoint.request("GET", "/stats.json").json()
    assert {key: now[key] for key in known.NOW} == known.NOW
    writer = PollWriter(activity_db)
    writer.start()
    try:
        for attempt in range(3):
            answer = endpoint.request("GET", "/activity.sqlite", timeout=60)
            assert answer.status == 200
            copy = tmp_path / f"download{attempt}.sqlite"
            copy.write_bytes(answer.body)
            conn = sqlite3.connect(copy)
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            # whole polls only: a poll's totals are written last in its transaction
            assert conn.execute("SELECT count(*) FROM polls WHERE ok = 1 AND users IS NULL"
                                ).fetchone()[0] == 0  # fmt: skip
            conn.close()
    finally:
        writer.stop.set()
        writer.join(30)
    assert writer.error is None and writer.polls > 0
    csv_now = csv_rows(endpoint.request("GET", "/views/peak_concurrent_servers.csv").body
                       .decode())  # fmt: skip
    assert csv_now == view_rows_as_csv_text(activity_db, "peak_concurrent_servers")
    assert "Traceback" not in service.log()


def test_serve_on_tcp_needs_the_token(start_serve, activity_db, token_path):
    endpoint = Endpoint(port=free_port())
    service = start_serve(activity_db, endpoint, ["--serve-token-file", str(token_path)])
    assert endpoint.request("GET", "/stats.json").status == 401
    assert endpoint.request("GET", "/activity.sqlite").status == 401
    assert endpoint.request("GET", "/stats.json", {"Authorization": "Bearer nope"}).status == 401
    ok = endpoint.request("GET", "/stats.json", BEARER)
    assert ok.status == 200 and ok.json()["users"] == 4
    assert endpoint.request("GET", "/", basic(TOKEN)).status == 200
    assert TOKEN not in service.log() and TOKEN not in " ".join(service.argv)


def test_serve_takes_the_token_from_the_systemd_credential(start_serve, activity_db, tmp_path,
                                                           token_path):  # fmt: skip
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "stats-token").write_text(token_path.read_text())
    (credentials / "stats-token").chmod(0o600)
    endpoint = Endpoint(port=free_port())
    start_serve(activity_db, endpoint, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert endpoint.request("GET", "/stats.json").status == 401
    assert endpoint.request("GET", "/stats.json", BEARER).status == 200


def test_serve_on_the_socket_systemd_passes(start_serve, activity_db, tmp_path):
    """As hub-stats-web.socket would: systemd-socket-activate makes the socket and passes
    it in LISTEN_FDS; gunicorn serves on it and binds nothing of its own."""
    activator = shutil.which("systemd-socket-activate")
    assert activator, "systemd-socket-activate (package systemd) is required"
    path = str(tmp_path / "activated.sock")
    ignored = tmp_path / "not-this.sock"
    service = start_serve(activity_db, Endpoint(unix=path), bind=f"unix:{ignored}",
                          launcher=[activator, "--listen", path, "-E", "PATH"])  # fmt: skip
    assert not ignored.exists()
    assert service.endpoint.request("GET", "/stats.json").json()["users"] == 4
    assert "listen=systemd:unix:" in service.log()


def run_serve(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(HUB_STATS), "serve", *args], check=False, capture_output=True,
                          text=True, timeout=30, cwd=tmp_path)  # fmt: skip


def test_serve_refuses_tcp_without_a_token(activity_db, tmp_path):
    done = run_serve(["--db", str(activity_db), "--bind", f"127.0.0.1:{free_port()}"], tmp_path)
    assert done.returncode == 2
    assert "refusing to listen on TCP" in done.stderr and "stats-token" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_serve_refuses_a_world_readable_token_file(activity_db, tmp_path, token_path):
    token_path.chmod(0o644)
    done = run_serve(["--db", str(activity_db), "--bind", f"127.0.0.1:{free_port()}",
                      "--serve-token-file", str(token_path)], tmp_path)  # fmt: skip
    assert done.returncode == 2 and "readable by every user" in done.stderr
    assert TOKEN not in done.stderr


def test_serve_refuses_a_token_with_spaces(activity_db, tmp_path, token_path):
    token_path.write_text("two words of a token long enough\n")
    done = run_serve(["--db", str(activity_db), "--bind", f"127.0.0.1:{free_port()}",
                      "--serve-token-file", str(token_path)], tmp_path)  # fmt: skip
    assert done.returncode == 2 and "one line without spaces" in done.stderr
    assert "two words" not in done.stderr


def test_the_page_follows_each_new_poll(client, activity_db):
    """The charts are kept between page loads, until the next poll."""
    first = client.simulate_get("/").text
    assert client.simulate_get("/").text == first
    known.add_later_day(str(activity_db))
    page = client.simulate_get("/").text
    assert "2026-03-09" in page and "2026-03-09" not in first
    assert "Peak concurrent servers" in page  # four days of polls now


# --- downloads that stall -------------------------------------------------------------------

# The real server stack of `hub-stats serve` (gunicorn, its asyncio worker, the app) with a
# send timeout of 2 s instead of 60 s, so that a stalled client is dropped within the test.
SERVE_WITH_SHORT_SEND_TIMEOUT = """
import sys
from hubsidecars.listeners import parse_bind
from hubsidecars.serving import GunicornServer, server_options
from stats.queries import ActivityStore
from stats.web import create_app

options = server_options([parse_bind(sys.argv[2])], proc_name="hub-stats-test", workers=1,
                         log_level="info")
GunicornServer(lambda: create_app(ActivityStore(sys.argv[1]), None), options,
               send_timeout=2).run()
"""


def copies_held(master_pid: int, scratch: Path) -> int:
    """Open descriptors of the server's worker on download copies (names gone) in scratch."""
    import os

    held = 0
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            links = [os.readlink(fd) for fd in Path(f"/proc/{entry}/fd").iterdir()]
        except OSError:
            continue
        if parent == master_pid:
            held += sum(link.startswith(f"{scratch}/hub-stats-download.") for link in links)
    return held


def stalled_download(endpoint: Endpoint) -> socket.socket:
    """A client that takes the first 64 kB of /activity.sqlite and then stops reading."""
    sock = socket.create_connection((endpoint.host, endpoint.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /activity.sqlite HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while len(got) < 64 * 1024:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the download: {got[:300]!r}"
        got += chunk
    assert got.startswith(b"HTTP/1.1 200"), got[:300]
    return sock


def new_poll(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO polls (time, interval_s, ok, users) "
                 "VALUES ('2026-03-09T00:00:00.000+00:00', 300, 1, 0)")  # fmt: skip
    conn.commit()
    conn.close()


def test_stalled_downloads_share_a_copy_are_capped_and_dropped(activity_db, tmp_path):
    import os
    import sys

    from realparts.process import ManagedProcess
    from realparts.waiting import wait_until

    conn = sqlite3.connect(activity_db)
    conn.execute("CREATE TABLE padding (blob BLOB)")
    conn.executemany("INSERT INTO padding VALUES (?)", [(os.urandom(2**20),)] * 8)
    conn.commit()
    conn.close()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    endpoint = Endpoint(port=free_port())
    server = ManagedProcess(
        [sys.executable, "-c", SERVE_WITH_SHORT_SEND_TIMEOUT, str(activity_db),
         f"127.0.0.1:{endpoint.port}"],
        tmp_path / "serve.log", env={**os.environ, "TMPDIR": str(scratch)},
    )  # fmt: skip
    server.start(lambda: endpoint.request("GET", "/healthz", timeout=2).status == 200, 30,
                 "gunicorn with the stats app")  # fmt: skip
    master = server.process.pid
    try:
        same_poll = [stalled_download(endpoint), stalled_download(endpoint)]
        one_copy = copies_held(master, scratch)
        new_poll(activity_db)
        next_poll = stalled_download(endpoint)
        two_copies = copies_held(master, scratch)
        new_poll(activity_db)
        refused = endpoint.request("GET", "/activity.sqlite")
        wait_until(lambda: copies_held(master, scratch) == 0, 20,
                   "the stalled clients still hold their copies after their send timeout")
        after = endpoint.request("GET", "/activity.sqlite")
        for sock in [*same_poll, next_poll]:
            sock.close()
    finally:
        server.stop()

    assert (one_copy, two_copies) == (1, 2)  # clients of the same poll share one copy
    assert refused.status == 503 and refused.headers["retry-after"] == "30"
    assert "copies of the database" in json.loads(refused.body)["description"]
    assert server.log().count("took no data for 2 s; dropping the connection") == 3
    assert after.status == 200 and len(after.body) == int(after.headers["content-length"])
    assert not list(scratch.iterdir())
