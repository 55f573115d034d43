"""Every setting of `hub-stats` (collector, export, serve, charts), declared once."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from hubsidecars import servicesettings as shared
from hubsidecars.config import ConfigError, Duration, FileMode, render_example, setting
from hubsidecars.hubsettings import HubConnectionSettings, resolve_hub_connection

ENV_PREFIX = "HUB_STATS"
DEFAULT_DB = "/var/lib/hub-sidecars/stats/activity.sqlite"
SERVE_TOKEN_CREDENTIAL = "stats-token"
# Where hub-culler writes it by default (culler/footprints.py, beside its probe marks).
DEFAULT_FOOTPRINTS = "/var/lib/hub-sidecars/culler/footprints/probe-footprints.json"

EXAMPLE_HEADER = f"""\
/etc/hub-sidecars/stats.toml: settings for `hub-stats` (hub-stats.service) and
`hub-stats serve` (hub-stats-web.service). Written by `hub-stats --generate-config` from
stats/settings.py. Keys left commented out show their defaults. Each key is also a flag
(interval: --interval) and an environment variable ({ENV_PREFIX}_INTERVAL); flags win over the
environment, which wins over this file. The hub API token is never a setting: it comes from
token_file, the systemd credential hub-api-token, or JUPYTERHUB_API_TOKEN.
Durations read like 30s, 10m, 2h, 7d or 1h30m; a bare number is seconds."""


@dataclass(frozen=True, kw_only=True)
class StatsSettings(HubConnectionSettings):
    db: str = setting(
        DEFAULT_DB, "the activity database (SQLite, WAL mode)", metavar="PATH",
        heading="What it records, and how often.", in_example=True,
    )  # fmt: skip
    interval: Duration = setting(300.0, "seconds between polls of the hub", min=5, max=86400)
    once: bool = setting(False, "one poll, then exit (non-zero when the poll failed)")
    groups: bool = setting(
        True, "record group memberships (needs read:groups; without it, one log line and none)"
    )
    culler_footprints: str = setting(
        DEFAULT_FOOTPRINTS, "the file in which hub-culler publishes its own questions to "
        "users' servers (they move last_activity in the hub; a last_activity within one is not "
        "recorded as activity); missing: nothing to leave out; empty: not read",
        metavar="FILE",
    )  # fmt: skip
    docker: bool = setting(
        False, "also record CPU and memory of running user containers (Docker SDK: the local "
        "socket or $DOCKER_HOST)",
    )  # fmt: skip
    docker_names: tuple[str, ...] = setting(
        ("jupyter-*",), "which containers are user containers (shell globs on the name; they "
        "must also carry JUPYTERHUB_USER in their environment)",
    )  # fmt: skip
    bind: str = shared.bind_setting(
        "unix:/run/hub-stats/stats.sock", "hub-stats-web.socket",
        heading="Serving the file, the views and the charts (hub-stats serve).",
    )  # fmt: skip
    socket_mode: FileMode = shared.socket_mode_setting()
    socket_group: str = shared.socket_group_setting()
    serve_token_file: str = setting(
        "", "file holding the bearer token clients must send, required on TCP; else the "
        f"systemd credential {SERVE_TOKEN_CREDENTIAL}", metavar="FILE",
    )  # fmt: skip
    allow_remote: bool = shared.allow_remote_setting()
    workers: int = shared.workers_setting()
    header_timeout: Duration = shared.header_timeout_setting()
    access_log: bool = shared.access_log_setting()
    log_format: shared.LogFormat = shared.log_format_setting(heading="Logging.")
    log_level: shared.LogLevel = shared.log_level_setting()


def example_config() -> str:
    return render_example(StatsSettings, EXAMPLE_HEADER)


def resolve(settings: StatsSettings, environ=None, *, needs_hub: bool = True) -> StatsSettings:
    """Fill the hub URL from the environment, make paths absolute, check the rest; raise
    ConfigError with one line."""
    if needs_hub:
        settings = resolve_hub_connection(settings, environ)
    # A relative path is taken from the current directory, as any command takes one (the
    # services run in /, where it makes no difference).
    settings = dataclasses.replace(settings, **{
        key: os.path.abspath(getattr(settings, key))
        for key in ("db", "serve_token_file", "culler_footprints") if getattr(settings, key)
    })  # fmt: skip
    if settings.socket_mode & 0o7007:
        raise ConfigError(f"socket_mode {settings.socket_mode:04o} gives other users access; "
                          "use 0660 or 0600")  # fmt: skip
    return settings
