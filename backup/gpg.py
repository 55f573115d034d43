"""The GnuPG home duplicity's gpg runs in: a private directory, and the gpg-agent each run leaves.

Every duplicity call gets an explicit GNUPGHOME so that the agent gpg starts is ours alone and
can be stopped afterwards (`gpgconf --kill gpg-agent` with the same home); otherwise every run
would leave one agent behind (REALPARTS).
"""

from __future__ import annotations

import logging
import os
import stat

from hubsidecars.commands import CommandError, Tool, run_command

GPGCONF = Tool("gpgconf", {1: "error", 2: "bad usage"})
GPG = Tool("gpg", {1: "bad signature or other error", 2: "error"})
# sockaddr_un.sun_path holds 108 bytes including the final NUL. Without /run/user/UID, gpg puts
# its agent sockets in the home itself; the longest name it uses is S.gpg-agent.browser.
_SOCKET_PATH_MAX = 107
_LONGEST_SOCKET = "S.gpg-agent.browser"
_TIMEOUT = 30.0

_log = logging.getLogger("backup.gpg")


class GnupgHomeError(ValueError):
    """The GnuPG home cannot be used (unsafe mode, path too long for gpg-agent's sockets)."""


def prepare_home(path: str) -> str:
    """Create `path` (0700) when missing and check it can serve as GNUPGHOME; return it absolute.

    gpg refuses (with a warning that duplicity turns into a failure later) a home other users can
    read, and the agent cannot listen on a socket path longer than the kernel allows: both are
    found here, in one line, before duplicity runs."""
    path = os.path.abspath(path)
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise GnupgHomeError(f"GnuPG home {path} is not a directory")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)
    socket_path = os.path.join(path, _LONGEST_SOCKET)
    if len(os.fsencode(socket_path)) > _SOCKET_PATH_MAX and not os.path.isdir(
        f"/run/user/{os.geteuid()}"
    ):
        raise GnupgHomeError(
            f"GnuPG home {path} is too long for gpg-agent's sockets "
            f"({len(socket_path)} > {_SOCKET_PATH_MAX} characters); choose a shorter path"
        )
    return path


def home_env(home: str) -> dict[str, str]:
    """The environment gpg (and duplicity's gpg) needs to use `home` and nothing else."""
    return {"GNUPGHOME": home}


def stop_agent(
    home: str, *, gpgconf: str = "gpgconf", logger: logging.Logger | None = None
) -> None:
    """Stop the gpg-agent serving `home`, if any. Never raises: a leftover agent is untidy, not
    a failed backup; the failure is logged."""
    try:
        run_command([gpgconf, "--kill", "gpg-agent"], tool=GPGCONF, timeout=_TIMEOUT,
                    env=home_env(home), logger=logger or _log)  # fmt: skip
    except CommandError:
        pass  # run_command has logged it


def has_key(home: str, key_id: str, *, secret: bool = False, gpg: str = "gpg") -> bool:
    """Whether the keyring in `home` holds `key_id` (its secret part when `secret`), usable to
    encrypt: present, not revoked, not expired, not disabled."""
    listing = "--list-secret-keys" if secret else "--list-keys"
    try:
        result = run_command([gpg, "--batch", "--with-colons", listing, "--", key_id], tool=GPG,
                             timeout=_TIMEOUT, env=home_env(home), ok_codes=(0, 2),
                             logger=_log)  # fmt: skip
    except CommandError:
        return False
    if result.exit_code != 0:
        return False
    for line in result.stdout.splitlines():
        fields = line.split(":")
        # pub/sec records: field 2 is the validity (r revoked, e expired, d disabled, i invalid),
        # field 12 the capabilities, upper case for the key as a whole (subkeys included).
        if fields[0] in ("pub", "sec") and len(fields) > 11:
            if fields[1] in ("r", "e", "d", "i"):
                continue
            if "E" in fields[11]:
                return True
    return False
