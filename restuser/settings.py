"""Every setting of `hub-restuser serve`, declared once; and building the service from them."""

from __future__ import annotations

import grp
import re
from pathlib import Path
from typing import Any

from hubsidecars.config import (
    ConfigError,
    Option,
    parse_bool,
    parse_int,
    parse_list,
    parse_mode,
    parse_str,
)
from hubsidecars.secrets import read_secret
from restuser.accounts import AccountStore
from restuser.home import HomeBuilder
from restuser.names import DEFAULT_DENY_NAMES, DEFAULT_NAME_PATTERN, NamePolicy
from restuser.useradd import UserAdd

ENV_PREFIX = "HUB_RESTUSER"
TOKEN_CREDENTIAL = "restuser-token"
DEFAULT_STATE_DIR = "/var/lib/hub-sidecars/restuser"

OPTIONS = [
    Option("bind", parse_str, "unix:/run/hub-restuser/restuser.sock",
           "where to listen: unix:PATH or HOST:PORT; ignored when systemd passes a socket"),
    Option("socket_mode", parse_mode, 0o660, "permissions of the unix socket", "MODE"),
    Option("socket_group", parse_str, "", "group owning the unix socket (e.g. the hub's group)", "GROUP"),
    Option("token_file", parse_str, "",
           f"file holding the bearer token (else $CREDENTIALS_DIRECTORY/{TOKEN_CREDENTIAL}); "
           "required on TCP", "FILE"),
    Option("allow_remote", parse_bool, False,
           "allow a TCP address other than loopback (the token then crosses a network)", "BOOL"),
    Option("skel", parse_str, "/etc/hub-sidecars/skel", "skeleton directory copied into new homes", "DIR"),
    Option("prefix", parse_str, "",
           "root directory holding etc/passwd & co. and the homes (useradd --prefix); empty: /", "DIR"),
    Option("home_pattern", parse_str, "/home/{name}", "home directory of a new account", "PATTERN"),
    Option("home_mode", parse_mode, 0o700, "permissions of a new home", "MODE"),
    Option("shell", parse_str, "/bin/bash", "login shell of a new account", "PATH"),
    Option("uid_min", parse_int, 1000,
           "lowest uid handed out; existing accounts below it are refused as system accounts", "UID"),
    Option("uid_max", parse_int, 59999, "highest uid handed out", "UID"),
    Option("groups", parse_list, [], "supplementary groups for new accounts (comma separated)", "LIST"),
    Option("name_pattern", parse_str, DEFAULT_NAME_PATTERN, "regular expression a name must match fully",
           "REGEX"),
    Option("deny_names", parse_list, list(DEFAULT_DENY_NAMES),
           "names (shell globs) always refused with 403 (comma separated)", "LIST"),
    Option("state_dir", parse_str, DEFAULT_STATE_DIR,
           "lock file and pending-creation markers (under --prefix when that is set)", "DIR"),
    Option("lock_timeout", parse_int, 10, "seconds to wait for the account lock before answering 503",
           "SECONDS"),
    Option("workers", parse_int, 4, "gunicorn worker processes", "N"),
    Option("threads", parse_int, 1, "threads per worker (more than 1 selects the gthread worker)", "N"),
    Option("access_log", parse_bool, False, "log every request", "BOOL"),
    Option("log_format", parse_str, "kv", "log line format: kv or json", "FORMAT"),
    Option("log_level", parse_str, "info", "debug, info, warning or error", "LEVEL"),
]  # fmt: skip


def validate(settings: dict[str, Any]) -> dict[str, Any]:
    """Check what can be checked before starting; raise ConfigError with a one-line reason."""
    pattern = settings["home_pattern"]
    if not pattern.startswith("/") or "{name}" not in pattern:
        raise ConfigError(
            f"home_pattern must be an absolute path holding {{name}}, got {pattern!r}"
        )
    try:
        pattern.format(name="x")
        re.compile(settings["name_pattern"])
    except (KeyError, IndexError, ValueError, re.error) as error:
        raise ConfigError(f"bad home_pattern or name_pattern: {error}") from None
    if not 1 <= settings["uid_min"] <= settings["uid_max"] < 2**32 - 1:
        raise ConfigError("need 1 <= uid_min <= uid_max")
    if not settings["shell"].startswith("/"):
        raise ConfigError("shell must be an absolute path")
    if not Path(settings["skel"]).is_dir():
        raise ConfigError(f"skeleton directory {settings['skel']} does not exist")
    prefix = settings["prefix"]
    if prefix and not (Path(prefix) / "etc" / "passwd").is_file():
        raise ConfigError(
            f"--prefix {prefix} has no etc/passwd (create it with: hub-restuser init-prefix {prefix})"
        )
    if settings["workers"] < 1 or settings["threads"] < 1 or settings["lock_timeout"] < 1:
        raise ConfigError("workers, threads and lock_timeout must be at least 1")
    if settings["log_format"] not in ("kv", "json"):
        raise ConfigError("log_format must be kv or json")
    if settings["log_level"].lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level must be debug, info, warning or error")
    if settings["socket_group"]:
        try:
            grp.getgrnam(settings["socket_group"])
        except KeyError:
            raise ConfigError(f"socket_group {settings['socket_group']!r} does not exist") from None
    return settings


def read_token(settings: dict[str, Any]) -> str | None:
    return read_secret(settings["token_file"] or None, TOKEN_CREDENTIAL)


def state_dir(settings: dict[str, Any]) -> Path:
    """The state directory; under --prefix unless it was set explicitly."""
    path = Path(settings["state_dir"])
    if settings["prefix"] and settings["state_dir"] == DEFAULT_STATE_DIR:
        path = Path(settings["prefix"]) / path.relative_to("/")
    return path


def build_store(settings: dict[str, Any]) -> AccountStore:
    skel = Path(settings["skel"]).resolve()
    useradd = UserAdd(
        skel=skel,
        home_pattern=settings["home_pattern"],
        shell=settings["shell"],
        uid_min=settings["uid_min"],
        uid_max=settings["uid_max"],
        groups=tuple(settings["groups"]),
        prefix=Path(settings["prefix"]).resolve() if settings["prefix"] else None,
    )
    state = state_dir(settings)
    try:
        return AccountStore(
            policy=NamePolicy(settings["name_pattern"], tuple(settings["deny_names"])),
            useradd=useradd,
            home=HomeBuilder(skel, settings["home_mode"]),
            state_dir=state,
            lock_timeout=settings["lock_timeout"],
        )
    except OSError as error:
        raise ConfigError(f"cannot create state directory {state}: {error.strerror}") from None
