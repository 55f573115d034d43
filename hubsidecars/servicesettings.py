"""The settings more than one service declares, declared here once: how to log (all four)
and where and how to serve an API (restuser, `hub-stats serve`).

Each function makes the field for a settings dataclass (a fresh one per class, as a
dataclass field belongs to one class), so that a service lists them where they belong in
its own --help and example file:

    log_format: LogFormat = log_format_setting()
"""

from __future__ import annotations

from typing import Any, Literal

from hubsidecars.config import setting

LogFormat = Literal["kv", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
MAX_WORKERS = 16


def log_format_setting(heading: str | None = None) -> Any:
    return setting("kv", "log line format", heading=heading)


def log_level_setting() -> Any:
    return setting("info", "log level")


def bind_setting(default: str, socket_unit: str, heading: str | None = None) -> Any:
    return setting(
        default,
        f"where to listen: unix:PATH or HOST:PORT; ignored when systemd passes a socket "
        f"({socket_unit})",
        metavar="ADDRESS",
        heading=heading,
    )


def socket_mode_setting() -> Any:
    return setting(0o660, "permissions of the unix socket")


def socket_group_setting() -> Any:
    return setting(
        "", "group owning the unix socket, whose members may connect (e.g. jupyterhub for "
        "restuser when the hub does not run as root)", metavar="GROUP",
    )  # fmt: skip


def allow_remote_setting() -> Any:
    return setting(
        False, "allow a TCP address other than loopback (the token then crosses a network)"
    )


def workers_setting() -> Any:
    return setting(
        1, "gunicorn worker processes; one asyncio worker serves thousands of connections, "
        "more only compete for the same cores", metavar="N", min=1, max=MAX_WORKERS,
    )  # fmt: skip


def header_timeout_setting() -> Any:
    return setting(
        10.0, "how long a client may take to send its request headers before the connection "
        "is closed (idle and half-sent connections cannot pile up)", min=1, max=300,
    )  # fmt: skip


def access_log_setting() -> Any:
    return setting(False, "log every request")
