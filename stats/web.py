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

This module holds the resources (thin: HTTP in, HTTP out), the app factory and the serving
start; what they read is in stats.queries (ActivityStore), the download copies in
stats.downloads.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import os
from datetime import UTC, datetime
from typing import Any

import falcon

from hubsidecars.logs import log_event
from hubsidecars.secrets import read_bearer_token
from hubsidecars.serving import checked_listeners, run_server
from hubsidecars.web import JsonApp, http_error
from stats.charts import Chart
from stats.downloads import CopyCache
from stats.page import PAGE_SCRIPT, render_page
from stats.queries import ActivityStore, NoDatabase
from stats.schema import VIEW_DOCS, VIEWS
from stats.settings import SERVE_TOKEN_CREDENTIAL

log = logging.getLogger("stats.web")

PUBLIC_PATHS = ("/healthz",)
# Copies held at once per worker for downloads (each a whole file on disk until its last
# client has it; clients of the same poll share one); a client that takes no data for
# SEND_TIMEOUT_S is dropped, which frees its copy.
SNAPSHOT_COPIES = 2
CSV_COPIES = 4
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
    app = JsonApp(token, PUBLIC_PATHS, browser_realm="hub-stats")
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


def serve(settings) -> int:
    """Run the app under gunicorn on the configured listener (or systemd's sockets)."""
    token = read_bearer_token(settings.serve_token_file, SERVE_TOKEN_CREDENTIAL)
    listeners = checked_listeners(settings.bind, token, settings.allow_remote,
                                  token_flag="--serve-token-file",
                                  credential=SERVE_TOKEN_CREDENTIAL)  # fmt: skip
    if not os.path.isfile(settings.db):
        log_event(log, "no activity database yet; answering 503 until the collector makes it",
                  logging.WARNING, db=settings.db)  # fmt: skip

    def app_factory():
        return create_app(ActivityStore(settings.db), token)

    return run_server(app_factory, listeners, settings, proc_name="hub-stats-serve", logger=log,
                      token=token, send_timeout=SEND_TIMEOUT_S,
                      access_log_format=ACCESS_LOG_FORMAT, db=settings.db)  # fmt: skip
