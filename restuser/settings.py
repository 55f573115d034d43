"""Every setting of `hub-restuser serve`, declared once, and their checks (`resolve`)."""

from __future__ import annotations

import grp
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hubsidecars import servicesettings as shared
from hubsidecars.config import ConfigError, Duration, FileMode, render_example, setting
from restuser.names import DEFAULT_DENY_NAMES, DEFAULT_NAME_PATTERN
from restuser.passwd import group_names

ENV_PREFIX = "HUB_RESTUSER"
TOKEN_CREDENTIAL = "restuser-token"
DEFAULT_STATE_DIR = "/var/lib/hub-sidecars/restuser"
LAST_UID = 2**32 - 2  # 2**32 - 1 is (uid_t) -1, "no user" to the kernel

EXAMPLE_HEADER = f"""\
/etc/hub-sidecars/restuser.toml: settings for `hub-restuser serve` (hub-restuser.service).
Written by `hub-restuser --generate-config` from restuser/settings.py. Keys left commented out
show their defaults. Each key is also a flag (uid_min: --uid-min) and an environment variable
({ENV_PREFIX}_UID_MIN); flags win over the environment, which wins over this file.
Durations read like 30s, 10m, 2h, 7d or 1h30m; a bare number is seconds."""


@dataclass(frozen=True, kw_only=True)
class RestuserSettings:
    bind: str = shared.bind_setting(
        "unix:/run/hub-restuser/restuser.sock", "hub-restuser.socket",
        heading="Where to listen when not started by hub-restuser.socket, and who may connect.",
    )  # fmt: skip
    socket_mode: FileMode = shared.socket_mode_setting()
    socket_group: str = shared.socket_group_setting()
    token_file: str = setting(
        "",
        "file holding the bearer token, required on TCP; else the systemd credential "
        f"{TOKEN_CREDENTIAL} (LoadCredential={TOKEN_CREDENTIAL}:FILE). Mode 0600 or 0640, "
        "owned by root, at least 16 characters",
        metavar="FILE",
    )
    allow_remote: bool = shared.allow_remote_setting()
    skel: str = setting(
        "/etc/hub-sidecars/skel",
        "skeleton directory copied into new homes",
        metavar="DIR",
        heading="The accounts it creates.",
        in_example=True,
    )
    prefix: str = setting(
        "",
        "root directory holding etc/passwd & co. and the homes, as useradd --prefix "
        "(empty: the real root)",
        metavar="DIR",
    )
    home_pattern: str = setting("/home/{name}", "home directory of a new account",
                                metavar="PATTERN")  # fmt: skip
    home_mode: FileMode = setting(0o700, "permissions of a new home")
    existing_home: Literal["refuse", "adopt", "move-aside"] = setting(
        "refuse",
        "what to do when the home of a new account already exists: refuse (409, nothing "
        "changed), adopt (take over the tree, chown it to the new user), move-aside (rename it "
        "out of the way, create a fresh home)",
    )
    shell: str = setting("/bin/bash", "login shell of a new account", metavar="PATH")
    uid_min: int = setting(
        1000,
        "lowest uid handed out; existing accounts below it are refused as system accounts",
        metavar="UID", min=1, max=LAST_UID,
    )  # fmt: skip
    uid_max: int = setting(59999, "highest uid handed out", metavar="UID", min=1, max=LAST_UID)
    groups: tuple[str, ...] = setting(
        (), "supplementary groups for new accounts, e.g. students (comma separated)"
    )
    name_pattern: str = setting(
        DEFAULT_NAME_PATTERN,
        "regular expression a name must match in full",
        metavar="REGEX",
        heading="Which names it accepts, and which it always refuses with 403.",
    )
    deny_names: tuple[str, ...] = setting(
        DEFAULT_DENY_NAMES, "names (shell globs) always refused with 403 (comma separated)"
    )
    state_dir: str = setting(
        DEFAULT_STATE_DIR,
        "lock file and pending-creation markers (under --prefix when that is set)",
        metavar="DIR",
        heading="The service itself.",
    )
    lock_timeout: Duration = setting(
        10.0, "how long to wait for the account lock before answering 503", min=1, max=3600
    )
    workers: int = shared.workers_setting()
    threads: int = setting(
        4, "threads per worker that create accounts (lookups and health checks never wait "
        "for them; creations queue on the account lock anyway)", metavar="N", min=1, max=64,
    )  # fmt: skip
    header_timeout: Duration = shared.header_timeout_setting()
    access_log: bool = shared.access_log_setting()
    log_format: shared.LogFormat = shared.log_format_setting()
    log_level: shared.LogLevel = shared.log_level_setting()


def example_config() -> str:
    """The text of units/restuser.toml.example."""
    return render_example(RestuserSettings, EXAMPLE_HEADER)


def resolve(settings: RestuserSettings) -> RestuserSettings:
    """Check what the declarations cannot (several settings together, the file system, the
    group database) before starting; raise ConfigError with a one-line reason."""
    _check_home_pattern(settings.home_pattern)
    try:
        names = re.compile(settings.name_pattern)
    except re.error as error:
        raise ConfigError(f"bad name_pattern: {error}") from None
    if names.fullmatch(".") or names.fullmatch(".."):
        raise ConfigError("name_pattern must not accept the names '.' and '..'")
    if settings.uid_min > settings.uid_max:
        raise ConfigError(
            f"need uid_min <= uid_max, got {settings.uid_min} > {settings.uid_max}"
        )
    _check_modes(settings)
    for key in ("shell", "skel", "prefix", "state_dir"):
        value = getattr(settings, key)
        if value and not value.startswith("/"):
            raise ConfigError(f"{key} must be an absolute path, got {value!r}")
    if not Path(settings.skel).is_dir():
        raise ConfigError(f"skeleton directory {settings.skel} does not exist")
    prefix = settings.prefix
    if prefix and not (Path(prefix) / "etc" / "passwd").is_file():
        raise ConfigError(
            f"--prefix {prefix} has no etc/passwd (create it with: hub-restuser init-prefix {prefix})"
        )
    if settings.socket_group:
        try:
            grp.getgrnam(settings.socket_group)
        except KeyError:
            raise ConfigError(f"socket_group {settings.socket_group!r} does not exist") from None
    _check_groups(settings.groups, Path(prefix or "/"))
    return settings


def _check_home_pattern(pattern: str) -> None:
    """An absolute path whose components are plain names, one of them exactly {name}: no
    '..' can lead a home (and, with adopt, its chown) outside the homes' directory."""
    parts = pattern.split("/")
    if not pattern.startswith("/") or parts[1:].count("{name}") != 1:
        raise ConfigError(
            f"home_pattern must be an absolute path with {{name}} as one whole component "
            f"(like /home/{{name}}), got {pattern!r}"
        )
    if any(part in ("", ".", "..") for part in parts[1:]):
        raise ConfigError(
            f"home_pattern must not hold '.', '..' or empty components ('//', a trailing '/'), "
            f"got {pattern!r}"
        )
    if any("{" in part or "}" in part for part in parts[1:] if part != "{name}"):
        raise ConfigError(f"home_pattern may hold no braces but {{name}}, got {pattern!r}")


def _check_modes(settings: RestuserSettings) -> None:
    socket_mode, home_mode = settings.socket_mode, settings.home_mode
    if socket_mode & 0o7007:
        raise ConfigError(
            f"socket_mode {socket_mode:04o} gives other users access (anyone who can connect "
            "can create accounts) or has setuid/setgid/sticky bits; use 0660 or 0600"
        )
    if home_mode & 0o6022:
        raise ConfigError(
            f"home_mode {home_mode:04o} lets others write into the homes or has setuid/setgid "
            "bits; use 0700, 0750 or 0755"
        )


def _check_groups(groups: tuple[str, ...], root: Path) -> None:
    """The supplementary groups must exist where useradd looks for them (the prefix root's
    etc/group), or every creation would fail with 500."""
    if not groups:
        return
    group_file = root / "etc" / "group"
    try:
        existing = group_names(root)
    except OSError as error:
        raise ConfigError(f"cannot read {group_file}: {error.strerror}") from None
    missing = [group for group in groups if group not in existing]
    if missing:
        raise ConfigError(f"groups: no group {missing[0]!r} in {group_file}")


def state_dir(settings: RestuserSettings) -> Path:
    """The state directory; under --prefix unless it was set explicitly."""
    path = Path(settings.state_dir)
    if settings.prefix and settings.state_dir == DEFAULT_STATE_DIR:
        path = Path(settings.prefix) / path.relative_to("/")
    return path
