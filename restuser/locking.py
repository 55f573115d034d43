"""An exclusive lock across processes (gunicorn workers) with a timeout."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path


class LockTimeout(Exception):
    """The account database stayed locked for longer than the timeout (HTTP 503)."""


class FileLock:
    """flock() on a lock file, a fresh open file description per acquisition, so threads of
    one process exclude each other as well as separate processes.

    Waiters block in flock() rather than poll, so the lock passes to the next waiter the
    moment it is released: creations are serialised, and any idle gap would cost throughput.
    """

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> "FileLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not _wait_for_lock(fd, self.timeout):
                raise LockTimeout(f"{self.path} stayed locked for {self.timeout:g} s") from None
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._fd is not None
        os.close(self._fd)  # closing releases the flock
        self._fd = None


def _wait_for_lock(fd: int, timeout: float) -> bool:
    """Block in flock() on a helper thread, because a blocking flock() cannot time out by
    itself (signals would only work on the main thread). If the caller gives up first, the
    helper takes ownership of `fd` and closes it, releasing the lock, once it gets it."""
    acquired = threading.Event()
    guard = threading.Lock()
    abandoned = False

    def block() -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with guard:
            if abandoned:
                os.close(fd)
            else:
                acquired.set()

    threading.Thread(target=block, name="account-lock", daemon=True).start()
    if acquired.wait(timeout):
        return True
    with guard:
        if acquired.is_set():
            return True
        abandoned = True
    return False
