"""Which duplicity chains there are: one per home (per-user layout) or one for the source.

A home is a subdirectory of the source root (not a symlink, not hidden). A user whose home is
gone keeps their chain: it is still listed from the state records, so status shows it and
cleanup keeps its newest fulls until the policy says otherwise.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from hubsidecars.config import ConfigError
from hubsidecars.errors import Failed

# A chain name is duplicity's --name (its archive-dir subdirectory) and our lock/record file
# name: one path component, no surprises.
_SAFE_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,128}")
SINGLE = "all-homes"


@dataclass(frozen=True)
class Chain:
    """One duplicity chain: `user` ("" for the single layout), its source directory and its
    target URL; `present` is False for a user whose home is gone."""

    name: str
    user: str
    source: str
    target: str
    present: bool = True


def chain_name(user: str) -> str:
    if user and _SAFE_NAME.fullmatch(user) and user not in (".", ".."):
        return f"home-{user}"
    # quoted so that any home name maps to one safe, distinct, reversible name
    return "home-" + quote(user, safe="").replace("%", "=")


def list_homes(source: str) -> list[str]:
    """The user names: real directories right under `source`, hidden ones and symlinks left
    out (a symlink could point a chain at anything)."""
    homes = []
    try:
        entries = os.scandir(source)
    except FileNotFoundError:
        raise Failed(f"the source {source} does not exist (not mounted?)") from None
    except NotADirectoryError:
        raise ConfigError(f"the source {source} is not a directory") from None
    except PermissionError:
        raise ConfigError(f"the source {source} cannot be read: permission denied") from None
    with entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                homes.append(entry.name)
    return sorted(homes)


def list_chains(source: str, target: str, layout: str, known_users: set[str] = frozenset(),
                only: set[str] | None = None) -> list[Chain]:  # fmt: skip
    """The chains to back up or report on. `known_users` are users with a record in the state
    (their homes may be gone); `only` limits the per-user layout to those users."""
    if layout == "single":
        return [Chain(SINGLE, "", source, target)]
    present = set(list_homes(source))
    users = sorted(present | set(known_users))
    if only is not None:
        users = [user for user in users if user in only]
    return [
        Chain(chain_name(user), user, str(Path(source) / user),
              target.replace("{user}", quote(user, safe="")), user in present)  # fmt: skip
        for user in users
    ]
