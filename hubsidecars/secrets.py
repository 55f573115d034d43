"""Read secrets from files only: an explicit path or systemd's $CREDENTIALS_DIRECTORY.

Secrets never come from argv or plain environment values, and a secret file that other
users can read is refused rather than trusted.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Mapping

from hubsidecars.config import ConfigError


def read_secret(
    path: str | None, credential: str, environ: Mapping[str, str] | None = None
) -> str | None:
    """Return the secret from `path`, else from $CREDENTIALS_DIRECTORY/`credential`, else None."""
    environ = os.environ if environ is None else environ
    if not path and environ.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(environ["CREDENTIALS_DIRECTORY"]) / credential
        if candidate.exists():
            path = str(candidate)
    if not path:
        return None
    try:
        info = os.stat(path)
        with open(path, encoding="utf-8") as handle:
            secret = handle.read().strip()
    except OSError as error:
        raise ConfigError(f"cannot read secret file {path}: {error.strerror}") from None
    if info.st_mode & stat.S_IROTH:
        raise ConfigError(
            f"secret file {path} is readable by every user (mode {stat.S_IMODE(info.st_mode):04o}); "
            "chmod o-rwx it"
        )
    if not secret:
        raise ConfigError(f"secret file {path} is empty")
    return secret
