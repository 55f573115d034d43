"""Exclusive locks on files: one across processes and threads, with a timeout (restuser's
account lock, hub-backup's per-chain and per-job locks); and one held for the life of a
process, so that a daemon runs once per resource (the culler's state, the collector's
database)."""

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


class HeldElsewhere(Busy):
    """Another process holds a process lock; `holder` is the pid it wrote, "" when unknown.
    A Busy (exit 75) as it is; the services catch it to say what the other process is."""

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(f"{path} is locked by {holder or 'another process'}")
        self.path = path
        self.holder = holder


def hold_process_lock(path: str, *, record_pid: bool = False) -> int:
    """One instance per resource: flock `path` for the life of this process and return the
    descriptor (keep it open; the kernel drops the lock with the process, kill -9 included).

    With `record_pid` the file is a pid file: our pid is written into it, shown to the next
    instance in HeldElsewhere, and a symlink in its place is refused (we write into it).
    Without, the file is only locked, never written: it may be the resource itself (the
    collector locks the database file, so that a second path to it meets the same lock).
    Raises HeldElsewhere, or OSError when the file cannot be opened or created."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | (os.O_NOFOLLOW if record_pid else 0)
    fd = os.open(path, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() if record_pid else ""
        os.close(fd)
        raise HeldElsewhere(path, holder) from None
    if record_pid:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
