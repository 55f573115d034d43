"""Snapshots of an account database under a prefix root, to prove nothing changed."""

from __future__ import annotations

import os
from pathlib import Path

ACCOUNT_FILES = ("passwd", "group", "shadow", "gshadow")


def snapshot(root: Path) -> dict[str, bytes]:
    """The bytes of every account file (backups included) and the list of homes."""
    state = {}
    for entry in sorted((root / "etc").iterdir()):
        if entry.name.rstrip("-") in ACCOUNT_FILES:
            state[entry.name] = entry.read_bytes()
    state["homes"] = "\n".join(sorted(os.listdir(root / "home"))).encode()
    return state


def accounts(root: Path, uid_min: int, uid_max: int) -> dict[str, tuple[int, int, str]]:
    """name -> (uid, gid, home) for every account with uid_min <= uid <= uid_max."""
    found = {}
    for line in (root / "etc" / "passwd").read_text().splitlines():
        name, _, uid, gid, _, home, _ = line.split(":")
        if uid_min <= int(uid) <= uid_max:
            found[name] = (int(uid), int(gid), home)
    return found
