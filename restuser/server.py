"""Run the restuser app under gunicorn: choose and secure the listening socket, then serve."""

from __future__ import annotations

import grp
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from hubsidecars.config import ConfigError
from hubsidecars.logs import log_event

log = logging.getLogger("restuser.server")

SD_LISTEN_FDS_START = 3


@dataclass(frozen=True)
class Listener:
    """Where the service listens: a unix socket path, a TCP address, or systemd's sockets."""

    kind: str  # "unix" or "tcp"
    address: str  # gunicorn bind string, or a description of the systemd sockets
    path: str = ""
    host: str = ""
    from_systemd: bool = False  # sockets passed in (LISTEN_FDS): gunicorn binds nothing

    @property
    def is_tcp(self) -> bool:
        return self.kind == "tcp"


def parse_bind(bind: str) -> Listener:
    if bind.startswith("unix:"):
        path = bind[len("unix:") :]
        if not path.startswith("/"):
            raise ConfigError(f"unix socket path must be absolute: {bind!r}")
        return Listener("unix", bind, path=path)
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ConfigError(f"bind must be unix:PATH or HOST:PORT, got {bind!r}")
    return Listener("tcp", bind, host=host.strip("[]"))


def systemd_listener(environ: Mapping[str, str]) -> Listener | None:
    """The sockets systemd passed us (LISTEN_FDS), described as one Listener, or None."""
    if environ.get("LISTEN_PID") != str(os.getpid()) or not environ.get("LISTEN_FDS", "").isdigit():
        return None
    count = int(environ["LISTEN_FDS"])
    if count == 0:
        return None
    names, tcp_hosts = [], []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        probe = socket.socket(fileno=os.dup(fd))
        try:
            if probe.family == socket.AF_UNIX:
                names.append(f"unix:{probe.getsockname()}")
            else:
                host, port = probe.getsockname()[:2]
                names.append(f"{host}:{port}")
                tcp_hosts.append(host)
        finally:
            probe.close()
    return Listener(
        "tcp" if tcp_hosts else "unix",
        "systemd:" + ",".join(names),
        host=tcp_hosts[0] if tcp_hosts else "",
        from_systemd=True,
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listener(listener: Listener, token: str | None, allow_remote: bool) -> None:
    """Refuse TCP without a token, and non-loopback TCP unless explicitly allowed."""
    if not listener.is_tcp:
        return
    if not token:
        raise ConfigError(
            f"refusing to listen on TCP ({listener.address}) without a token: "
            "give --token-file or a 'restuser-token' systemd credential"
        )
    if not is_loopback(listener.host) and not allow_remote:
        raise ConfigError(
            f"refusing non-loopback address {listener.host}: set allow_remote = true if you mean it"
        )


def _secure_unix_socket(path: str, mode: int, group: str) -> Callable[[Any], None]:
    def when_ready(server: Any) -> None:
        if group:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
        os.chmod(path, mode)
        log_event(log, "listening", socket=path, mode=f"{mode:04o}", group=group or "-")

    return when_ready


class _JournalFriendlyLogger(glogging.Logger):
    """gunicorn's loggers, re-routed through the root handler so every line has our format."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            logger.handlers[:] = []
            logger.propagate = True


class GunicornServer(BaseApplication):
    def __init__(self, app_factory: Callable[[], Any], options: dict[str, Any]) -> None:
        self.app_factory = app_factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.app_factory()


def gunicorn_options(listener: Listener, settings: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "workers": settings.workers,
        "threads": settings.threads,
        "worker_class": "gthread" if settings.threads > 1 else "sync",
        "proc_name": "hub-restuser",
        "logger_class": _JournalFriendlyLogger,
        "accesslog": "-" if settings.access_log else None,
        "loglevel": settings.log_level,
        # gunicorn >= 25 opens a control socket by default; we have no use for it and it
        # fails under ProtectSystem=strict.
        "control_socket_disable": True,
        # Up to gunicorn's maximum, so that long hostile names reach us and get a JSON 400.
        "limit_request_line": 8190,
        "timeout": 120,
    }
    if listener.from_systemd:
        return options  # systemd owns the sockets, their mode and group
    options["bind"] = [listener.address]
    if listener.kind == "unix":
        os.makedirs(os.path.dirname(listener.path), mode=0o755, exist_ok=True)
        # The socket is born with at most the configured mode: no window with wider access.
        options["umask"] = 0o777 & ~settings.socket_mode
        options["when_ready"] = _secure_unix_socket(
            listener.path, settings.socket_mode, settings.socket_group
        )
    return options
