"""Replacing a small file whole: the status, metrics and state files every service writes.

Written beside the target, fsynced, then renamed over it, and the directory fsynced: a reader
(or a crash at any moment) sees the old file or the new one, never half of one. A symlink
planted at the path is replaced, never written through.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def replace_file(path: str | os.PathLike, text: str, mode: int = 0o644) -> None:
    """Make `path` hold `text` with `mode`, atomically; its directories are made. Raises
    OSError when that cannot be done (and leaves no temporary file behind)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                         suffix=".tmp")  # fmt: skip
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def private_directory(path: str | os.PathLike, what: str) -> Path:
    """Make sure `path` is a directory only this user can enter (0700): created when missing,
    made private when an admin's `mkdir -p` or a package left it open, refused (ConfigError)
    when it is someone else's. For directories holding what other local users must not read
    (duplicity's unencrypted file lists, the backup records, locks). A symlink is followed
    (systemd's DynamicUser= state directories are symlinks; so is a state moved to a bigger
    disk): what is checked and made private is the directory it leads to."""
    from hubsidecars.config import ConfigError

    directory = Path(path)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.stat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{what} {directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise ConfigError(f"{what} {directory} belongs to uid {info.st_uid}, not to this "
                          f"service (uid {os.geteuid()})")  # fmt: skip
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(directory, 0o700)
    return directory
