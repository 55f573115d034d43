"""Reading secrets (tokens, passphrases) safely. The policy, for every service:

- A secret is never a setting: no flag, environment variable or TOML key holds the secret
  itself, only the path of the file holding it (`token_file`, `passphrase_file`). So a secret
  never shows in argv (`ps`, /proc/PID/cmdline), in `--help` or in a config file.
- Where it comes from, first found wins: the file the admin named; the systemd credential
  `$CREDENTIALS_DIRECTORY/NAME` (LoadCredential=); an environment variable, but only where the
  caller names one, for the hub's own convention: a service the hub manages receives its token
  as JUPYTERHUB_API_TOKEN.
- A file is refused, with a one-line reason, when other users could read it or anyone but its
  owner could change it (world-readable, group- or world-writable), when it belongs to a user
  other than root or the service's own, when it is not a regular file, and when the secret is
  empty or shorter than `min_length` (16 by default; a short token can be guessed over HTTP).
- A bearer token (read_bearer_token) must also be sendable as it is in an Authorization
  header: one line of RFC 6750 token68 characters.
- A named environment variable is removed from os.environ once this runs (read or not): the
  environment is inherited by every child process (useradd, duplicity, docker), and a token
  there would end up in their /proc/PID/environ and in any core or debug dump they write.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import MutableMapping
from pathlib import Path

from hubsidecars.config import ConfigError

# RFC 6750's b64token (token68): what may follow "Bearer " in an Authorization header.
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")


def read_secret(
    path: str | None,
    credential: str,
    *,
    environ: MutableMapping[str, str] | None = None,
    env_var: str | None = None,
    min_length: int = 16,
) -> str | None:
    """The secret from `path`, else $CREDENTIALS_DIRECTORY/`credential`, else the environment
    variable `env_var` (when given), else None. Raise ConfigError when it is unsafe."""
    environ = os.environ if environ is None else environ
    from_env = environ.pop(env_var, None) if env_var else None
    if not path and environ.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(environ["CREDENTIALS_DIRECTORY"]) / credential
        if candidate.exists():
            path = str(candidate)
    if path:
        return _check_value(_read_secret_file(path), f"secret file {path}", min_length)
    if from_env is not None:
        return _check_value(from_env.strip(), f"environment variable {env_var}", min_length)
    return None


def _read_secret_file(path: str) -> str:
    try:
        # O_NONBLOCK: a FIFO put in the file's place must not hang the service at startup.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        raise ConfigError(f"cannot read secret file {path}: {error.strerror}") from None
    try:
        # Checked on the open file, so a rename between the check and the read changes nothing.
        _check_file(path, os.fstat(fd))
        with os.fdopen(os.dup(fd), encoding="utf-8") as handle:
            return handle.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read secret file {path}: {error}") from None
    finally:
        os.close(fd)


def _check_file(path: str, info: os.stat_result) -> None:
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"secret file {path} is not a regular file")
    if mode & stat.S_IROTH:
        raise ConfigError(
            f"secret file {path} is readable by every user (mode {mode:04o}); chmod o-rwx it"
        )
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"secret file {path} is writable by other users (mode {mode:04o}); chmod go-w it"
        )
    if info.st_uid not in (0, os.geteuid()):
        raise ConfigError(
            f"secret file {path} belongs to uid {info.st_uid}, neither root nor this service "
            f"(uid {os.geteuid()}); chown it"
        )


def _check_value(secret: str, where: str, min_length: int) -> str:
    if not secret:
        raise ConfigError(f"{where} is empty")
    if len(secret) < min_length:
        raise ConfigError(
            f"{where} holds a secret of {len(secret)} characters; at least {min_length} needed"
        )
    return secret


def read_bearer_token(path: str | None, credential: str) -> str | None:
    """The bearer token an API demands, from `path` or the systemd credential, or None;
    refused (ConfigError) unless a client can send it in an Authorization header as it is:
    one line of RFC 6750 token68 characters."""
    token = read_secret(path or None, credential)
    if token is None or _TOKEN68.fullmatch(token):
        return token
    where = path or f"systemd credential {credential}"
    found = "more than one line" if "\n" in token or "\r" in token else "other characters"
    # The message never quotes the token or the offending character: it goes to the journal.
    raise ConfigError(
        f"the token in {where} has {found}; it must be one line of letters, digits and "
        "- . _ ~ + / with = only at the end (one line without spaces or other characters), "
        "e.g. from: openssl rand -hex 32"
    )
