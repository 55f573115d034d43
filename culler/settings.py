"""Every setting of `hub-culler`, declared once.

The hub backend's options carry jupyterhub-idle-culler 2.0's names and defaults (`--timeout
600`, `--cull-every` half of it, `--concurrency 10`...), so an admin switches by changing the
command. The Docker backend's settings live in culler/docker/settings.py.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from culler.docker.settings import DockerSettings
from hubsidecars import servicesettings as shared
from hubsidecars.config import ConfigError, Duration, render_example, setting
from hubsidecars.hubsettings import HubConnectionSettings, resolve_hub_connection

ENV_PREFIX = "HUB_CULLER"
YEAR = 365 * 86400.0
DEFAULT_STATE_DIR = "/var/lib/hub-sidecars/culler"
DEFAULT_STATUS_FILE = f"{DEFAULT_STATE_DIR}/status.json"

EXAMPLE_HEADER = f"""\
/etc/hub-sidecars/culler.toml: settings for `hub-culler` (hub-culler.service).
Written by `hub-culler --generate-config` from culler/settings.py and
culler/docker/settings.py. Keys left commented out show their defaults. Each key is also a flag
(cull_every: --cull-every) and an environment variable ({ENV_PREFIX}_CULL_EVERY); flags win
over the environment, which wins over this file. The hub API token is never a setting: it comes
from token_file, the systemd credential hub-api-token, or JUPYTERHUB_API_TOKEN.
Durations read like 30s, 10m, 2h, 7d or 1h30m; a bare number is seconds."""


@dataclass(frozen=True, kw_only=True)
class HubSettings(HubConnectionSettings):
    public_url: str = setting(
        "",
        "where users' servers are reached, through the proxy, to ask about their kernels "
        "(default: the origin of --url, right when --url itself goes through the proxy)",
        metavar="URL",
    )
    hub: bool = setting(
        True, "cull servers (and users) through the hub API; --no-hub with --docker culls "
        "containers alone", heading="What to cull, and when.",
    )  # fmt: skip
    timeout: Duration = setting(
        600.0, "a server idle this long is culled", min=1, max=YEAR, in_example=True
    )
    cull_every: Duration = setting(
        0.0, "seconds between passes (0: half of --timeout)", min=0, max=YEAR
    )
    max_age: Duration = setting(
        0.0, "cull servers (and users, with --cull-users) older than this even when active "
        "(0: no limit)", min=0, max=100 * YEAR,
    )  # fmt: skip
    cull_users: bool = setting(
        False, "also delete users who are idle and have no running server (tmpnb-style hubs)"
    )
    cull_admin_users: bool = setting(True, "with --cull-users, delete idle admin users too")
    cull_default_servers: bool = setting(True, "cull default servers")
    cull_named_servers: bool = setting(True, "cull named servers")
    remove_named_servers: bool = setting(
        False, "delete named servers after stopping them (BinderHub-style)"
    )
    exclude_users: tuple[str, ...] = setting(
        (), "users never culled, whatever else is set (comma separated)"
    )
    exclude_groups: tuple[str, ...] = setting(
        (), "members of these hub groups are never culled (comma separated; needs read:groups)"
    )
    check_kernels: bool = setting(
        True, "before stopping a server, ask it about its kernels and terminals (through the "
        "proxy, with a short-lived token of the server's user: needs the tokens scope) and "
        "keep it while one is busy or was active within "
        "--timeout", heading="Busy kernels.",
    )  # fmt: skip
    max_busy: Duration = setting(
        43200.0, "stop a server anyway once the hub has seen no activity for this long, busy "
        "kernels or not (a runaway kernel is stopped eventually)", min=1, max=100 * YEAR,
    )  # fmt: skip
    probe_state_file: str = setting(
        f"{DEFAULT_STATE_DIR}/probe-marks.json",
        "when the culler last asked each server, so that after a restart its own questions "
        "(which the hub counts as activity) are still not taken for a user's (empty: memory "
        "only)", metavar="FILE",
    )  # fmt: skip
    probe_timeout: Duration = setting(
        10.0, "timeout of one question to a user's server", min=1, max=600
    )
    concurrency: int = setting(
        10, "servers stopped at the same time (0: no limit, up to 256)", metavar="N", min=0,
        max=256, heading="Stopping.",
    )  # fmt: skip
    stop_wait: Duration = setting(
        60.0, "how long a pass follows a stop the hub answered with 202 (slow to stop) before "
        "leaving it to the next pass", min=0, max=3600,
    )  # fmt: skip
    pending_limit: Duration = setting(
        600.0, "report a server that stays pending (starting or stopping) longer than this",
        min=1, max=YEAR,
    )  # fmt: skip
    dry_run: bool = setting(
        False, "decide and log every decision with its reason, change nothing",
        heading="Running.",
    )  # fmt: skip
    once: bool = setting(False, "one pass, then exit (non-zero when the pass failed)")
    status_file: str = setting(
        DEFAULT_STATUS_FILE,
        "the last pass's result as JSON (empty: none; a dry run writes none at this default "
        "path, the daemon's)", metavar="FILE",
    )  # fmt: skip
    metrics_file: str = setting(
        "", "Prometheus textfile metrics, e.g. for node_exporter's textfile collector "
        "(empty: none)", metavar="FILE",
    )  # fmt: skip
    log_format: shared.LogFormat = shared.log_format_setting()
    log_level: shared.LogLevel = shared.log_level_setting()


@dataclass(frozen=True, kw_only=True)
class CullerSettings(DockerSettings, HubSettings):
    """Hub settings first, then Docker's (dataclass fields follow the reversed MRO)."""


GROUPS_EXAMPLE = """
# Per-group rules: members of a hub group get their own timeout, max_age, max_busy, or are
# exempt; what a table leaves out, the settings above decide. A user in several groups gets
# the most lenient of their rules (the longest timeout and max_busy, no max_age if one has none,
# exempt if one is), and named servers follow their user's groups. Read again every pass (an
# edit applies at the next pass; a wrong one fails the pass, culling nothing); each decision's
# reason names the group. Needs read:groups. Examples:
#
# [groups.gpu]              # expensive servers: culled after 30 idle minutes, 8 h at most
#   timeout = "30m"
#   max_age = "8h"
#   max_busy = "1h"
#
# [groups.course-tas]       # never culled
#   exempt = true
#
# [groups.research]         # long-running work: a day of inactivity
#   timeout = "1d"
"""


def example_config() -> str:
    return render_example(CullerSettings, EXAMPLE_HEADER) + GROUPS_EXAMPLE


def resolve(settings: CullerSettings, environ: dict[str, str] | None = None) -> CullerSettings:
    """Fill what defaults to something else (url, cull_every, request_timeout) and check what
    the declarations cannot; raise ConfigError with a one-line reason."""
    if not settings.hub and not settings.docker:
        raise ConfigError("nothing to cull: --no-hub needs --docker")
    settings = resolve_hub_connection(settings, environ)
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError("public_url must be an http(s) URL")
        if parts.username or parts.password:
            raise ConfigError("public_url must hold no user name or password")
    changes: dict = {}
    if not settings.cull_every:
        # idle-culler: timeout // 2; never below a second
        changes["cull_every"] = max(1.0, float(int(settings.timeout) // 2))
    if settings.max_busy < settings.timeout:
        raise ConfigError(
            f"max_busy ({settings.max_busy:g} s) must be at least timeout ({settings.timeout:g} s)"
        )
    if settings.dry_run and settings.status_file == DEFAULT_STATUS_FILE:
        # the daemon's status is not a dry run's to overwrite (an explicit path is written)
        changes["status_file"] = ""
    for key in ("status_file", "metrics_file", "probe_state_file", "docker_state_file"):
        value = getattr(settings, key)
        if value and not os.path.isabs(value):
            raise ConfigError(f"{key} must be an absolute path, got {value!r}")
    return dataclasses.replace(settings, **changes)
