"""Create a scratch root for `--prefix`: the host's system accounts and an empty home/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hubsidecars.config import ConfigError

# Mode of each account file, and the file whose names decide which of its lines are kept.
_ACCOUNT_FILES = {
    "passwd": (0o644, "passwd"),
    "group": (0o644, "group"),
    "shadow": (0o640, "passwd"),
    "gshadow": (0o640, "group"),
}
_ALWAYS_KEPT = {"nobody", "nogroup"}


def _system_names(path: Path) -> set[str]:
    """Names whose numeric id (third field) is below 1000, plus nobody/nogroup."""
    names = set()
    for line in path.read_text().splitlines():
        fields = line.split(":")
        if len(fields) > 2 and (
            fields[0] in _ALWAYS_KEPT or (fields[2].isdigit() and int(fields[2]) < 1000)
        ):
            names.add(fields[0])
    return names


def init_prefix(root: Path, host_etc: Path = Path("/etc")) -> None:
    etc = root / "etc"
    if (etc / "passwd").exists():
        raise ConfigError(f"{etc / 'passwd'} exists already; not overwriting it")
    etc.mkdir(parents=True, exist_ok=True)
    (root / "home").mkdir(exist_ok=True)
    kept = {
        "passwd": _system_names(host_etc / "passwd"),
        "group": _system_names(host_etc / "group"),
    }
    for name, (mode, names_from) in _ACCOUNT_FILES.items():
        lines = [
            line
            for line in (host_etc / name).read_text().splitlines()
            if line.split(":", 1)[0] in kept[names_from]
        ]
        target = etc / name
        target.write_text("".join(line + "\n" for line in lines))
        os.chmod(target, mode)
    # With --prefix, shadow reads login.defs from the prefix: give it the host's policy.
    if (host_etc / "login.defs").is_file():
        shutil.copyfile(host_etc / "login.defs", etc / "login.defs")
