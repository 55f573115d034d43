"""Serve a Falcon ASGI app under gunicorn's asyncio worker, the way every sidecar API does.

Why the asyncio ("asgi") worker: with sync or threaded workers each connection holds a worker
or a thread until its request has been read, so a handful of idle or half-sent connections
(any local process can open them, before any token check) stall the service. On an event
loop an idle connection costs a few kilobytes and no thread; slow work (account creation
waiting on a lock, useradd) runs on a thread pool so that health checks and lookups never
queue behind it.

On top of gunicorn's worker:
- errors gunicorn answers itself (bad request line, URI or headers too large) are JSON
  `{"title", "description"}` like every other error of ours, not text/plain;
- SIGINT (Ctrl-C in a terminal) is a graceful stop like SIGTERM: requests in flight finish,
  so no account is left half-made;
- gunicorn's log lines go through our handler (one event per line, key=value or JSON);
- unix sockets are born with the configured mode, then given their group.

A service starts the same way everywhere: `checked_listeners` (systemd's sockets or the one
--bind names, each passing the listener rules), then `run_server` with an app factory.
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import resource
import signal
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.asgi.protocol import ASGIProtocol
from gunicorn.workers import gasgi

from hubsidecars.listeners import (
    Listener,
    check_listeners,
    describe,
    parse_bind,
    systemd_listeners,
)
from hubsidecars.logs import log_event
from hubsidecars.web import error_body

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_SEND_TIMEOUT = 60.0


class JsonErrorProtocol(ASGIProtocol):
    """gunicorn's HTTP/1 protocol, answering its own errors (400, 414, 431, ...) in JSON, and
    bounding what a client that never finishes its request can hold:

    - the request headers must arrive within the server's `header_timeout` (after the first
      request, gunicorn's keep-alive timeout bounds the wait for the next one);
    - beyond the worker's connection limit, a new connection evicts the oldest one still
      waiting for its headers, so a flood of idle connections cannot lock out real clients
      (and the worker never runs out of file descriptors);
    - a client that stops taking the response (the send buffer full and not shrinking for
      the server's `send_timeout`) is dropped, so that what its response holds is freed.
    """

    def connection_made(self, transport):
        super().connection_made(transport)
        worker = self.worker
        self._header_timer = worker.loop.call_later(worker.header_timeout, self._headers_too_slow)
        waiting = worker.waiting_for_headers
        waiting[self] = None
        if worker.nr_conns > worker.max_connections:
            oldest = next(iter(waiting))
            if oldest is self:  # every other connection is busy with a real request
                self._send_error_response(503, "too many connections; try again in a moment")
            oldest._close_transport()
            oldest._stop_waiting_for_headers()

    def _on_headers_complete(self):
        self._stop_waiting_for_headers()
        return super()._on_headers_complete()

    def pause_writing(self):
        super().pause_writing()
        self._watch_send(self.transport.get_write_buffer_size())

    def resume_writing(self):
        self._stop_watching_send()
        super().resume_writing()

    def _watch_send(self, buffered):
        self._stop_watching_send()
        self._send_timer = self.worker.loop.call_later(
            self.worker.send_timeout, self._check_send, buffered, self.transport
        )

    def _check_send(self, buffered_before, transport):
        self._send_timer = None
        buffered = transport.get_write_buffer_size()
        if buffered < buffered_before:
            self._watch_send(buffered)  # the client takes data, slowly
            return
        self.log.warning("the client took no data for %.0f s; dropping the connection",
                         self.worker.send_timeout)  # fmt: skip
        transport.abort()

    def _stop_watching_send(self):
        if getattr(self, "_send_timer", None) is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def connection_lost(self, exc):
        self._stop_waiting_for_headers()
        self._stop_watching_send()
        super().connection_lost(exc)

    def _stop_waiting_for_headers(self):
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.worker.waiting_for_headers.pop(self, None)

    def _headers_too_slow(self):
        self._header_timer = None
        self._send_error_response(408, "the request did not arrive in time")
        self._close_transport()
        self._stop_waiting_for_headers()
        if self._request_ready is not None:
            self._request_ready.set()  # let the connection's task see that it is closed

    def _send_error_response(self, status, message, extra_headers=()):
        reason = _reason(status)
        body = json.dumps(error_body(f"{status} {reason}", message)).encode()
        extra = "".join(f"{name}: {value}\r\n" for name, value in extra_headers)
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
        )
        self._safe_write(head.encode("latin-1"))
        self._safe_write(body)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class _OneAcceptAtATimeLoop(asyncio.SelectorEventLoop):
    """An event loop that accepts one connection per wake-up instead of up to 100.

    Every worker waits on the same listening socket and all are woken together; taking one
    connection each time lets the others take theirs. Otherwise the first worker awake
    takes a whole burst (all 16 connections of a load test landed on one worker of four,
    and latency spiked when that worker was descheduled)."""

    def _accept_connection(self, protocol_factory, sock, sslcontext=None, server=None,
                           backlog=100, *args, **kwargs):  # fmt: skip
        super()._accept_connection(protocol_factory, sock, sslcontext, server, 1, *args, **kwargs)


class ServiceWorker(gasgi.ASGIWorker):
    """gunicorn's asyncio worker with JSON server errors, a graceful SIGINT and connections
    spread over the workers."""

    def _setup_event_loop(self) -> None:
        self.loop = _OneAcceptAtATimeLoop()
        asyncio.set_event_loop(self.loop)

    def init_process(self) -> None:
        # The worker builds its protocol by this module-level name; replacing it here (in
        # the worker process only) is the one hook gunicorn offers for its error answers.
        gasgi.ASGIProtocol = JsonErrorProtocol
        self.header_timeout = self.app.header_timeout
        self.send_timeout = self.app.send_timeout
        # Connections that have not sent their headers yet, oldest first.
        self.waiting_for_headers: dict[JsonErrorProtocol, None] = {}
        # Keep clear of the descriptor limit: an accepted connection reaches
        # connection_made (where it may evict another) only a few loop iterations later, and
        # the worker has files of its own. A burst can still hit the limit for a moment;
        # asyncio then stops accepting for a second and says so (in one line, see
        # _AcceptPausedFilter).
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_connections = max(16, min(self.cfg.worker_connections, soft_limit - 200))
        logging.getLogger("asyncio").addFilter(_AcceptPausedFilter())
        super().init_process()

    def init_signals(self) -> None:
        super().init_signals()
        self.loop.add_signal_handler(signal.SIGINT, self.handle_exit_signal)


class _AcceptPausedFilter(logging.Filter):
    """asyncio logs a full traceback for every accept() that runs out of descriptors (up to
    100 in a row); one line a second says all there is to say."""

    def __init__(self) -> None:
        super().__init__()
        self.last_shown = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if "out of system resource" not in str(record.msg):
            return True
        if record.created - self.last_shown < 1.0:
            return False
        self.last_shown = record.created
        record.msg = "accept() ran out of file descriptors; accepting again in 1 s"
        record.args = ()
        record.exc_info = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class GracefulArbiter(Arbiter):
    def handle_int(self) -> None:
        """SIGINT stops gracefully, as SIGTERM does (gunicorn's default is an immediate stop)."""
        self.handle_term()


class _JournalFriendlyLogger(glogging.Logger):
    """gunicorn's loggers, re-routed through the root handler so every line has our format."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            logger.handlers[:] = []
            logger.propagate = True


class GunicornServer(BaseApplication):
    """Runs `app_factory()` (called once in each worker) with the given gunicorn options."""

    def __init__(
        self,
        app_factory: Callable[[], Any],
        options: dict[str, Any],
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> None:
        self.app_factory = app_factory
        self.options = options
        self.header_timeout = header_timeout
        self.send_timeout = send_timeout
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.app_factory()

    def run(self) -> None:
        raise_descriptor_limit()
        GracefulArbiter(self).run()


def raise_descriptor_limit() -> None:
    """Raise the soft limit on open files to the hard one (often 1024 against 524288): every
    connection costs a descriptor, and the workers inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def server_options(
    listeners: Sequence[Listener],
    *,
    proc_name: str,
    workers: int,
    log_level: str,
    access_log: bool = False,
    socket_mode: int = 0o660,
    socket_group: str = "",
    logger: Any = None,
) -> dict[str, Any]:
    """gunicorn settings for serving on `listeners` (systemd's, or ones gunicorn binds)."""
    options: dict[str, Any] = {
        "workers": workers,
        "worker_class": ServiceWorker,
        "proc_name": proc_name,
        "logger_class": _JournalFriendlyLogger,
        "accesslog": "-" if access_log else None,
        "loglevel": log_level,
        # gunicorn >= 25 opens a control socket by default; we have no use for it and it
        # fails under ProtectSystem=strict.
        "control_socket_disable": True,
        # Up to gunicorn's maximum, so that long hostile paths reach the app and get a JSON 400.
        "limit_request_line": 8190,
        # The event loop is never blocked by our own work (that runs on threads), so a worker
        # silent for this long is really stuck.
        "timeout": 30,
        "graceful_timeout": 30,
    }
    if any(listener.from_systemd for listener in listeners):
        return options  # systemd owns the sockets, their mode and group
    options["bind"] = [listener.address for listener in listeners]
    unix = [listener for listener in listeners if listener.kind == "unix"]
    if unix:
        for listener in unix:
            os.makedirs(os.path.dirname(listener.path), mode=0o755, exist_ok=True)
        # Sockets are born with at most the configured mode: no window with wider access.
        options["umask"] = 0o777 & ~socket_mode
        options["when_ready"] = _secure_unix_sockets(unix, socket_mode, socket_group, logger)
    return options


def _secure_unix_sockets(
    listeners: Sequence[Listener], mode: int, group: str, logger: Any
) -> Callable[[Any], None]:
    def when_ready(server: Any) -> None:
        for listener in listeners:
            if group:
                os.chown(listener.path, -1, grp.getgrnam(group).gr_gid)
            os.chmod(listener.path, mode)
            if logger is not None:
                log_event(logger, "listening", socket=listener.path, mode=f"{mode:04o}",
                          group=group or "-")  # fmt: skip

    return when_ready


def checked_listeners(bind: str, token: str | None, allow_remote: bool, *, token_flag: str,
                      credential: str) -> list[Listener]:  # fmt: skip
    """The sockets systemd passed in, else the one `bind` names; every one checked against
    the listener rules (hubsidecars.listeners): TCP needs a token, and loopback unless
    `allow_remote`. Raises ConfigError naming `token_flag` and the systemd `credential`."""
    listeners = systemd_listeners(os.environ) or [parse_bind(bind)]
    check_listeners(listeners, token, allow_remote,
                    f"give {token_flag} or a '{credential}' systemd credential")  # fmt: skip
    return listeners


def run_server(
    app_factory: Callable[[], Any],
    listeners: Sequence[Listener],
    settings: Any,
    *,
    proc_name: str,
    logger: logging.Logger,
    token: str | None,
    send_timeout: float = DEFAULT_SEND_TIMEOUT,
    access_log_format: str | None = None,
    **fields: Any,
) -> int:
    """Log "starting" (the listeners, `fields`, the workers, whether a token is required) and
    serve `app_factory()` under gunicorn until stopped. `settings` has the listen settings of
    hubsidecars.servicesettings (workers, header_timeout, socket mode and group, access_log)
    and log_level."""
    log_event(logger, "starting", listen=describe(listeners), **fields, workers=settings.workers,
              token="yes" if token else "no")  # fmt: skip
    options = server_options(
        listeners, proc_name=proc_name, workers=settings.workers, log_level=settings.log_level,
        access_log=settings.access_log, socket_mode=settings.socket_mode,
        socket_group=settings.socket_group, logger=logger,
    )  # fmt: skip
    if access_log_format:
        options["access_log_format"] = access_log_format
    GunicornServer(app_factory, options, header_timeout=settings.header_timeout,
                   send_timeout=send_timeout).run()  # fmt: skip
    return 0
