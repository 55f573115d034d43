"""systemd's own tools on unit files, without systemd running: the exposure score, verify,
and a unit's [Service] settings read as systemd reads repeated keys."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

SYSTEMD_UNIT_DIR = Path("/usr/lib/systemd/system")


def exposure(unit: Path) -> float:
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                            capture_output=True, text=True, check=True)  # fmt: skip
    return float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout).group(1))


def verify(root: Path, *units: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units],
                          capture_output=True, text=True)  # fmt: skip


def unit_settings(text: str) -> dict[str, list[str]]:
    """[Service] keys of a unit, each with every value it is given (systemd allows repeats)."""
    values: dict[str, list[str]] = {}
    section = None
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values
