"""Where a service listens, and the rules every listener must pass before it serves.

A listener is a unix socket (its permissions are the access control) or a TCP address (a
bearer token is the access control, and only loopback unless the admin says otherwise). The
sockets systemd passes in (LISTEN_FDS) are described the same way and each one is checked:
a socket unit listing 127.0.0.1 and 0.0.0.0 must not get through on the strength of the first.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hubsidecars.config import ConfigError

SD_LISTEN_FDS_START = 3


@dataclass(frozen=True)
class Listener:
    kind: str  # "unix" or "tcp"
    address: str  # gunicorn bind string ("unix:/run/x.sock", "127.0.0.1:8181")
    path: str = ""
    host: str = ""
    from_systemd: bool = False  # passed in by systemd (LISTEN_FDS): gunicorn binds nothing

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


def systemd_listeners(environ: Mapping[str, str]) -> list[Listener]:
    """The sockets systemd passed to this process (LISTEN_FDS), one Listener each."""
    if environ.get("LISTEN_PID") != str(os.getpid()) or not environ.get("LISTEN_FDS", "").isdigit():
        return []
    found = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(environ["LISTEN_FDS"])):
        probe = socket.socket(fileno=os.dup(fd))
        try:
            if probe.family == socket.AF_UNIX:
                path = probe.getsockname()
                found.append(Listener("unix", f"unix:{path}", path=path, from_systemd=True))
            else:
                host, port = probe.getsockname()[:2]
                shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                found.append(Listener("tcp", shown, host=host, from_systemd=True))
        finally:
            probe.close()
    return found


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listeners(
    listeners: Sequence[Listener], token: str | None, allow_remote: bool, token_hint: str
) -> None:
    """Refuse TCP without a token, and non-loopback TCP unless explicitly allowed.

    `token_hint` tells the admin how to give the token (flag and credential name)."""
    for listener in listeners:
        if not listener.is_tcp:
            continue
        if not token:
            raise ConfigError(
                f"refusing to listen on TCP ({listener.address}) without a token: {token_hint}"
            )
        if not is_loopback(listener.host) and not allow_remote:
            raise ConfigError(
                f"refusing non-loopback address {listener.address}: "
                "set allow_remote = true if you mean it"
            )


def describe(listeners: Sequence[Listener]) -> str:
    """One string for the start-up log line, e.g. 'systemd:unix:/run/x.sock,127.0.0.1:8181'."""
    text = ",".join(listener.address for listener in listeners)
    return "systemd:" + text if listeners and listeners[0].from_systemd else text
