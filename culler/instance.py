"""One culler per set of state files.

Two cullers against one hub each ask servers about their kernels, and each takes the other's
questions (which the hub counts as activity) for a user's: a runaway kernel would then never
reach --max-busy, and the two would overwrite each other's state. The lock sits beside the
state files and is held for the life of the process (the kernel drops it when the process dies,
kill -9 included).
"""

from __future__ import annotations

import os

from hubsidecars.config import ConfigError
from hubsidecars.errors import Busy
from hubsidecars.locking import HeldElsewhere, hold_process_lock

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
        return hold_process_lock(path, record_pid=True)
    except HeldElsewhere as held:
        raise Busy(
            f"another hub-culler (pid {held.holder or 'unknown'}) already uses the state in "
            f"{os.path.dirname(path)}: two cullers against one hub take each other's questions "
            "to servers for user activity; stop the other one (or --dry-run, which takes no lock)"
        ) from None
    except OSError as error:
        raise ConfigError(
            f"cannot use the state directory {os.path.dirname(path)}: {error.strerror}; point "
            "--status-file, --probe-state-file and --docker-state-file somewhere writable, or "
            "set them empty"
        ) from None
