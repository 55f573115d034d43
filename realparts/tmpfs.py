"""A small real tmpfs as a prefix root, to meet a full disk for real (needs root)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

from restuser.prefix import init_prefix


@contextlib.contextmanager
def tmpfs_prefix_root(mountpoint: Path, size: str = "2m"):
    """Mount a tmpfs of `size` at `mountpoint`, make it a prefix root (init_prefix), yield
    it, unmount it. A failing mount fails the test loudly."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                    str(mountpoint)], check=True, capture_output=True)  # fmt: skip
    try:
        init_prefix(mountpoint)
        yield mountpoint
    finally:
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=True, capture_output=True)


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill the file system holding `directory` up to `leave` free bytes (0: full) with one
    file; return it."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as handle:
        while True:
            free = _free(directory)
            if free <= leave:
                break
            try:
                handle.write(chunk[: max(1, min(len(chunk), free - leave))])
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                break
    return filler


def _free(directory: Path) -> int:
    fs = os.statvfs(directory)
    return fs.f_bfree * fs.f_frsize


@contextlib.contextmanager
def small_tmpfs(mountpoint: Path, size: str):
    """Mount a plain tmpfs of `size` at `mountpoint` (a disk that can fill up, and be grown
    with `grow`), yield it, unmount it."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(mountpoint)], check=True, capture_output=True)  # fmt: skip
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=True, capture_output=True)


def grow(mountpoint: Path, size: str) -> None:
    """Give the tmpfs at `mountpoint` a new size (as an admin grows a full disk)."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mountpoint)], check=True,
                   capture_output=True)  # fmt: skip
