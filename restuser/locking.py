"""An exclusive lock across processes (gunicorn workers) with a timeout."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path


class LockTimeout(Exception):
    """The account database stayed locked for longer than the timeout (HTTP 503)."""


class FileLock:
    """flock() on a lock file. A fresh open file description per acquisition, so threads of
    one process exclude each other as well as separate processes."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> "FileLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeout(f"{self.path} stayed locked for {self.timeout:g} s") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.02)
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._fd is not None
        os.close(self._fd)  # closing releases the flock
        self._fd = None
