"""An exclusive lock across processes and threads, with a timeout: restuser's account lock
and hub-backup's per-chain and per-job locks."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hubsidecars.errors import Busy


class LockTimeout(Busy):
    """The lock stayed held by someone else for longer than the timeout."""


class FileLock:
    """flock() on a lock file, with a fresh open file description per acquisition, so threads
    of one process exclude each other as well as separate processes.

    The descriptor belongs to one `held()` block and is never stored on the object: threads
    share one FileLock (one store per worker), and a descriptor kept on `self` was cleared or
    closed by whichever thread left last, leaving the lock held forever.

    Waiters block in flock() rather than poll, so the lock passes to the next waiter the
    moment it is released: creations are serialised, and any idle gap would cost throughput.
    """

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        # Created now, so that the first acquisition does not add a file to the state dir
        # and a missing directory shows up when the service starts, not at the first call.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the block; raise LockTimeout if it cannot be had in time."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not _wait_for_lock(fd, self.timeout):  # on failure the helper owns fd now
                raise LockTimeout(f"{self.path} stayed locked for {self.timeout:g} s") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            yield
        finally:
            os.close(fd)  # closing releases the flock


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
