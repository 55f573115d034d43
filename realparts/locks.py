"""Looking at a flock from outside, as another program would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def can_lock_from_another_process(path: Path) -> bool:
    """True if a separate process gets the flock at once (nobody holds it)."""
    probe = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "except BlockingIOError:\n    sys.exit(1)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", probe, str(path)], check=False, timeout=30)
    return result.returncode == 0
