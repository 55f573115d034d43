"""One culler per set of state files.

Two cullers against one hub each ask servers about their kernels, and each takes the other's
questions (which the hub counts as activity) for a user's: a runaway kernel would then never
reach --max-busy, and the two would overwrite each other's state. The lock sits beside the
state files and is held for the life of the process (the kernel drops it when the process dies,
kill -9 included).
"""

from __future__ import annotations

import fcntl
import os

from hubsidecars.config import ConfigError
from hubsidecars.errors import Busy

LOCK_NAME = "hub-culler.lock"


def lock_path(*state_files: str) -> str | None:
    """The lock file beside the first state file that is set; None when none is."""
    for path in state_files:
        if path:
            return os.path.join(os.path.dirname(path), LOCK_NAME)
    return None


def hold_instance_lock(path: str) -> int:
    """Lock `path` for this process and write our pid into it; return the descriptor (keep
    it open). Raises Busy when another culler holds it, ConfigError when it cannot be made."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as error:
        raise ConfigError(
            f"cannot use the state directory {os.path.dirname(path)}: {error.strerror}; point "
            "--status-file, --probe-state-file and --docker-state-file somewhere writable, or "
            "set them empty"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise Busy(
            f"another hub-culler (pid {holder}) already uses the state in "
            f"{os.path.dirname(path)}: two cullers against one hub take each other's questions "
            "to servers for user activity; stop the other one (or --dry-run, which takes no lock)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
