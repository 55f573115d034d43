"""`hub-stats serve`: activity.sqlite over HTTP for analysts.

Routes (HEAD wherever GET; errors are JSON `{"title", "description"}`):
- `GET /`: the charts page (stats.page), drawn in the browser with the Vega bundle below;
- `GET /static/vega.js`, `GET /static/page.js`: Vega, Vega-Lite and vega-embed (shipped
  inside vl-convert-python) and the page's script: nothing is ever loaded from a CDN;
- `GET /activity.sqlite`: a consistent snapshot of the database (stats.export), streamed;
- `GET /views`: the views and what they hold; `GET /views/NAME.csv`: one view as CSV
  (only the views of stats.schema.VIEWS: no SQL from the client, ever), written to a
  temporary file first so that no read transaction waits on the client;
- both downloads are a file on disk while they stream: a worker runs a few at once (more
  get 503 and Retry-After), and a client that takes no data for SEND_TIMEOUT_S is dropped;
- `GET /stats.json`: what is happening now (the latest successful poll, Docker hosts);
- `GET /healthz`: 200 while the service runs (public, tells nothing about the data).

Access: on a unix socket the socket's permissions decide. On TCP a token is required: API
clients send `Authorization: Bearer TOKEN`; a browser, which cannot add that header, logs in
with HTTP Basic (any user name, the token as password) and then sends it on every request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import hashlib
import hmac
import io
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import falcon

from hubsidecars.config import ConfigError
from hubsidecars.web import JsonApp, http_error
from stats.charts import Chart, build_charts
from stats.page import PAGE_SCRIPT, render_page
from stats.schema import VIEW_DOCS, VIEWS, connect

log = logging.getLogger("stats.web")

PUBLIC_PATHS = ("/healthz",)
FILE_CHUNK = 256 * 1024
# Copies held at once per worker for downloads (each a whole file on disk until its last
# client has it; clients of the same poll share one); a client that takes no data for
# SEND_TIMEOUT_S is dropped, which frees its copy.
SNAPSHOT_COPIES = 2
CSV_COPIES = 4
RETRY_AFTER_S = 30
SEND_TIMEOUT_S = 60.0
# The access log: no query string (a token tried as ?token=... would land in the journal)
# and no Referer (a page opened with one would carry it).
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'
# Vega evaluates chart expressions with Function() ('unsafe-eval'); everything else the page
# may load comes from this app, and connect-src keeps it from reaching anything else.
PAGE_POLICY = ("default-src 'none'; script-src 'self' 'unsafe-eval'; "
               "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'; "
               "frame-ancestors 'none'")  # fmt: skip


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


class TokenAuth:
    """Every path but the public ones needs the token: as `Authorization: Bearer TOKEN`, or
    as the password of HTTP Basic (what a browser can send)."""

    def __init__(self, token: str, public_paths=PUBLIC_PATHS) -> None:
        self.token = token.encode()
        self.public_paths = frozenset(public_paths)

    def offered(self, header: str) -> bytes | None:
        scheme, _, credentials = header.partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == "bearer":
            return credentials.encode("utf-8", "replace")
        if scheme == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return None
            return decoded.partition(b":")[2]
        return None

    async def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path in self.public_paths:
            return
        offered = self.offered(req.get_header("Authorization") or "")
        if offered is None or not hmac.compare_digest(offered, self.token):
            # One challenge only (Falcon sends one header of a name): a browser asks for a
            # password on Basic, and says that it wants HTML; API clients get Bearer.
            browser = "text/html" in (req.get_header("Accept") or "")
            challenge = 'Basic realm="hub-stats", charset="UTF-8"' if browser else "Bearer"
            raise http_error(
                falcon.HTTP_401,
                "the token is required: 'Authorization: Bearer TOKEN', or in a browser any "
                "user name with the token as password",
                headers={"WWW-Authenticate": challenge},
            )  # fmt: skip


class StaticFiles:
    """The page's scripts, built once per worker and kept in memory, gzip'd when the client
    takes it (the Vega bundle is ~0.9 MB, ~0.25 MB gzip'd)."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[bytes, bytes, str]] = {}
        self._lock = asyncio.Lock()

    @staticmethod
    def version() -> str:
        import vl_convert

        return getattr(vl_convert, "__version__", "0")

    @staticmethod
    def _build(name: str) -> str | None:
        if name == "vega.js":
            import vl_convert

            return vl_convert.javascript_bundle()
        if name == "page.js":
            return PAGE_SCRIPT
        return None

    async def _get(self, name: str) -> tuple[bytes, bytes, str] | None:
        async with self._lock:
            if name not in self._files:
                text = await asyncio.to_thread(self._build, name)
                if text is None:
                    return None
                body = text.encode()
                packed = await asyncio.to_thread(gzip.compress, body, 6, mtime=0)
                self._files[name] = (body, packed, hashlib.sha256(body).hexdigest()[:32])
            return self._files[name]

    async def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        found = await self._get(name)
        if found is None:
            raise http_error(falcon.HTTP_404, f"no static file {name!r}")
        body, packed, tag = found
        resp.content_type = "text/javascript; charset=utf-8"
        resp.etag = tag
        resp.cache_control = ["private", "max-age=86400"]
        resp.vary = ["Accept-Encoding"]
        if tag in (req.if_none_match or ()):
            resp.status = falcon.HTTP_304
            return
        if "gzip" in (req.get_header("Accept-Encoding") or ""):
            resp.set_header("Content-Encoding", "gzip")
            resp.data = packed
        else:
            resp.data = body


class PageResource:
    def __init__(self, store: ActivityStore, static: StaticFiles) -> None:
        self.store = store
        self.static = static

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        charts, now = await asyncio.to_thread(self._gather)
        views = {name: VIEW_DOCS[name][0] if name in VIEW_DOCS else "" for name in VIEWS}
        resp.content_type = falcon.MEDIA_HTML
        resp.cache_control = ["no-store"]
        resp.set_header("Content-Security-Policy", PAGE_POLICY)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.text = render_page(charts, now, views, self.static.version())

    def _gather(self) -> tuple[list[Chart], dict[str, Any]]:
        return self.store.charts(), self.store.now()


class SharedCopy:
    """A copy on disk (no name left) that any number of downloads read at once, each at its
    own offset: ten clients fetching the same poll's data cost one copy, not ten."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.size = os.fstat(handle.fileno()).st_size
        self.readers = 0


class CopyCache:
    """The copies (snapshots or CSV files) that downloads of this worker are reading, one
    per thing and moment of the database (poll), made one at a time and freed when their
    last download ends. At most `limit` copies are held at once: a download that would need
    another is refused with 503 and Retry-After, so that slow or stalled clients across
    several polls cannot fill the disk with copies (a stalled client is dropped after the
    server's send timeout, which frees its copy)."""

    def __init__(self, what: str, limit: int, retry_after: int = RETRY_AFTER_S) -> None:
        self.what = what
        self.limit = limit
        self.retry_after = retry_after
        self._copies: dict[Any, SharedCopy] = {}
        self._making = asyncio.Lock()

    async def download(self, key: Callable[[], Any], make: Callable[[], Any]) -> FileDownload:
        """A download of the copy for `key()` (called on a thread), made by `make()` (an
        open binary file, on a thread) unless one is held already."""
        async with self._making:
            wanted = await asyncio.to_thread(key)
            copy = self._copies.get(wanted)
            if copy is None:
                if len(self._copies) >= self.limit:
                    raise http_error(
                        falcon.HTTP_503,
                        f"{len(self._copies)} copies of {self.what} are being downloaded, "
                        f"the most at once; try again in {self.retry_after} s",
                        headers={"Retry-After": str(self.retry_after)},
                    )  # fmt: skip
                copy = SharedCopy(await asyncio.to_thread(make))
                self._copies[wanted] = copy
            copy.readers += 1
        return FileDownload(copy, lambda: self._release(wanted, copy))

    def _release(self, key: Any, copy: SharedCopy) -> None:
        copy.readers -= 1
        if copy.readers == 0:
            if self._copies.get(key) is copy:
                del self._copies[key]
            copy.handle.close()

    def held(self) -> int:
        return len(self._copies)


class FileDownload:
    """One client's read of a SharedCopy, streamed as a response body: Falcon reads it with
    `read` and always calls `close` when the response ends (the client gone or dropped
    included), which lets the copy go. Should Falcon never get to stream it (the request
    cancelled first), the garbage collector does the same."""

    def __init__(self, copy: SharedCopy, release: Callable[[], None]) -> None:
        self.size = copy.size
        self._fd = copy.handle.fileno()
        self._offset = 0
        self._finalizer = weakref.finalize(self, release)

    async def read(self, size: int = FILE_CHUNK) -> bytes:
        chunk = await asyncio.to_thread(os.pread, self._fd, max(size, FILE_CHUNK), self._offset)
        self._offset += len(chunk)
        return chunk

    async def close(self) -> None:
        self._finalizer()


class SnapshotResource:
    def __init__(self, store: ActivityStore, copies: CopyCache) -> None:
        self.store = store
        self.copies = copies

    @staticmethod
    def _headers(resp: falcon.Response) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        resp.content_type = "application/vnd.sqlite3"
        resp.downloadable_as = f"activity-{stamp}.sqlite"
        resp.cache_control = ["no-store"]

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        download = await self.copies.download(self.store.version, self.store.snapshot)
        self._headers(resp)
        resp.content_length = download.size
        resp.stream = download

    async def on_head(self, req: falcon.Request, resp: falcon.Response) -> None:
        # Answered without making a snapshot: its size is known only once it is made.
        if not os.path.isfile(self.store.db_path):
            raise NoDatabase(f"no activity database at {self.store.db_path}")
        self._headers(resp)


class ViewIndexResource:
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {
            name: {"csv": f"views/{name}.csv",
                   "description": VIEW_DOCS.get(name, ("", {}))[0],
                   "columns": VIEW_DOCS.get(name, ("", {}))[1]}
            for name in VIEWS
        }  # fmt: skip


class ViewCsvResource:
    def __init__(self, store: ActivityStore, copies: CopyCache) -> None:
        self.store = store
        self.copies = copies

    @staticmethod
    def _headers(resp: falcon.Response, name: str) -> None:
        resp.content_type = "text/csv; charset=utf-8"
        resp.downloadable_as = f"{name}.csv"
        resp.cache_control = ["no-store"]

    async def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        if name not in VIEWS:
            raise http_error(falcon.HTTP_404, f"no view {name!r}; GET /views lists them")
        download = await self.copies.download(lambda: (name, self.store.version()),
                                              lambda: self.store.view_csv(name))  # fmt: skip
        self._headers(resp, name)
        resp.content_length = download.size
        resp.stream = download

    async def on_head(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        if name not in VIEWS:
            raise http_error(falcon.HTTP_404, f"no view {name!r}; GET /views lists them")
        await asyncio.to_thread(lambda: self.store.open().conn.close())  # 503 without one
        self._headers(resp, name)


class StatsResource:
    def __init__(self, store: ActivityStore) -> None:
        self.store = store

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = await asyncio.to_thread(self.store.now)
        resp.cache_control = ["no-store"]


class HealthResource:
    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


async def _no_database(req, resp, error: NoDatabase, params) -> None:
    raise http_error(falcon.HTTP_503, f"{error}: is the collector (hub-stats) running with "
                     "the same --db?")  # fmt: skip


def create_app(store: ActivityStore, token: str | None) -> JsonApp:
    app = JsonApp()
    if token:
        app.add_middleware(TokenAuth(token))
    static = StaticFiles()
    app.add_route("/", PageResource(store, static))
    app.add_route("/static/{name}", static)
    snapshots = CopyCache("the database", SNAPSHOT_COPIES)
    app.add_route("/activity.sqlite", SnapshotResource(store, snapshots))
    app.add_route("/views", ViewIndexResource())
    app.add_route("/views/{name}.csv", ViewCsvResource(store, CopyCache("views", CSV_COPIES)))
    app.add_route("/stats.json", StatsResource(store))
    app.add_route("/healthz", HealthResource())
    app.add_error_handler(NoDatabase, _no_database)
    return app


def read_serve_token(settings) -> str | None:
    """The bearer token from serve_token_file or the systemd credential, or None."""
    from hubsidecars.secrets import read_secret
    from stats.settings import SERVE_TOKEN_CREDENTIAL

    token = read_secret(settings.serve_token_file or None, SERVE_TOKEN_CREDENTIAL)
    if token is not None and any(character.isspace() or not character.isprintable()
                                 for character in token):  # fmt: skip
        where = settings.serve_token_file or f"systemd credential {SERVE_TOKEN_CREDENTIAL}"
        # never quotes the token: this line goes to the journal
        raise ConfigError(f"the token in {where} must be one line without spaces, e.g. from: "
                          "openssl rand -hex 32")  # fmt: skip
    return token


def serve(settings) -> int:
    """Run the app under gunicorn on the configured listener (or systemd's sockets)."""
    from hubsidecars.listeners import check_listeners, describe, parse_bind, systemd_listeners
    from hubsidecars.logs import log_event
    from hubsidecars.serving import GunicornServer, server_options
    from stats.settings import SERVE_TOKEN_CREDENTIAL

    token = read_serve_token(settings)
    listeners = systemd_listeners(os.environ) or [parse_bind(settings.bind)]
    check_listeners(listeners, token, settings.allow_remote,
                    f"give --serve-token-file or a '{SERVE_TOKEN_CREDENTIAL}' systemd "
                    "credential")  # fmt: skip
    if not os.path.isfile(settings.db):
        log_event(log, "no activity database yet; answering 503 until the collector makes it",
                  logging.WARNING, db=settings.db)  # fmt: skip
    log_event(log, "starting", listen=describe(listeners), db=settings.db,
              workers=settings.workers, token="yes" if token else "no")  # fmt: skip

    def app_factory():
        return create_app(ActivityStore(settings.db), token)

    options = server_options(
        listeners, proc_name="hub-stats-serve", workers=settings.workers,
        log_level=settings.log_level, access_log=settings.access_log,
        socket_mode=settings.socket_mode, socket_group=settings.socket_group, logger=log,
    )  # fmt: skip
    options["access_log_format"] = ACCESS_LOG_FORMAT
    GunicornServer(app_factory, options, header_timeout=settings.header_timeout,
                   send_timeout=SEND_TIMEOUT_S).run()  # fmt: skip
    return 0
