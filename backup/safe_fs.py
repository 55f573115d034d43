"""Directory file descriptors for root's writes into places users control (restores).

Every operation here is relative to a directory descriptor and never follows a symlink a user
could have planted: a path is walked one component at a time with O_NOFOLLOW, and a symlink is
followed only when root owns it and the directory holding it is one no other user can change
(`/srv/restores -> /data/restores` made by an admin works; a link in a home or in /tmp does
not). Whatever a user renames or swaps after a directory was opened, writes relative to its
descriptor stay in that directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from dataclasses import dataclass, field

DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40  # as the kernel's path walk


class UnsafePath(Exception):
    """A path leads through a symlink a user could control, or is not a directory."""


@dataclass
class OpenedPath:
    """A directory opened by `open_directory`: `fd` is the directory itself; `created` the
    directories made on the way, outermost first, as (descriptor of the parent, name, dev, ino),
    so that a failed restore can take back exactly those and nothing a user put there."""

    fd: int
    created: list[tuple[int, str, int, int]] = field(default_factory=list)
    _held: list[int] = field(default_factory=list)

    def close(self) -> None:
        for fd in {self.fd, *self._held}:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._held.clear()

    def remove_created(self) -> None:
        """rmdir the (empty) directories this walk made, innermost first."""
        for parent, name, dev, ino in reversed(self.created):
            remove_empty_directory(parent, name, (dev, ino))


def _trusted(directory: os.stat_result) -> bool:
    """No user but root can add, rename or remove entries of this directory."""
    return directory.st_uid == 0 and not directory.st_mode & 0o022


def open_directory(path: str, *, create: bool = False, mode: int = 0o700) -> OpenedPath:
    """Open the directory `path` (absolute), walking from / without following any symlink a
    user could control; with `create`, make the missing directories (`mode`, owned by the
    caller). Raises UnsafePath, FileNotFoundError (without `create`), other OSError."""
    if not os.path.isabs(path):
        raise ValueError(f"not an absolute path: {path!r}")
    root = os.open("/", DIRECTORY)
    opened = OpenedPath(root, _held=[root])
    stack = [opened.fd]  # the descriptors of the directories walked, for ".."
    pending = [part for part in path.split("/") if part and part != "."]
    links = 0
    try:
        while pending:
            part = pending.pop(0)
            current = stack[-1]
            if part == "..":
                if len(stack) > 1:
                    stack.pop()
                continue
            try:
                next_fd = os.open(part, DIRECTORY, dir_fd=current)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, mode, dir_fd=current)
                next_fd = os.open(part, DIRECTORY, dir_fd=current)
                made = os.fstat(next_fd)
                opened.created.append((current, part, made.st_dev, made.st_ino))
            except OSError as error:
                info = os.stat(part, dir_fd=current, follow_symlinks=False)
                if not stat.S_ISLNK(info.st_mode):
                    raise UnsafePath(f"{path}: {part} is not a directory") from error
                if not (_trusted(os.fstat(current)) and info.st_uid == 0):
                    raise UnsafePath(f"{path}: {part} is a symlink a user could "
                                     "change; give the path it points to") from None  # fmt: skip
                links += 1
                if links > _MAX_LINKS:
                    raise UnsafePath(f"{path}: too many symlinks") from None
                target = os.readlink(part, dir_fd=current)
                if target.startswith("/"):
                    del stack[1:]
                pending[:0] = [p for p in target.split("/") if p and p != "."]
                continue
            stack.append(next_fd)
            opened._held.append(next_fd)
        opened.fd = stack[-1]
        return opened
    except BaseException:
        opened.remove_created()
        opened.close()
        raise


def make_private_directory(parent: int, prefix: str, attempts: int = 20) -> tuple[int, str]:
    """A new directory in `parent`, root-only (0700, owned by us), under a name nobody can
    guess in advance; its descriptor and name. When a user who owns `parent` swaps it for
    something else between the mkdir and the open, that is refused (O_NOFOLLOW, then owner and
    mode) and another name tried; the swapped-out one stays, empty and root-only."""
    for _ in range(attempts):
        name = f"{prefix}{secrets.token_hex(6)}"
        os.mkdir(name, 0o700, dir_fd=parent)
        try:
            fd = os.open(name, DIRECTORY, dir_fd=parent)
        except OSError:
            continue
        info = os.fstat(fd)
        if info.st_uid == os.geteuid() and not info.st_mode & 0o077:
            return fd, name
        os.close(fd)
    raise UnsafePath(f"a directory made in it was replaced {attempts} times in a row")


def same_entry(parent: int, name: str, identity: tuple[int, int]) -> bool:
    """`name` in `parent` is (still) the directory entry with this (st_dev, st_ino)."""
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == identity


def remove_empty_directory(parent: int, name: str, identity: tuple[int, int]) -> None:
    """rmdir `name` in `parent` if it is still the directory `identity` (a user may have
    renamed ours and put something of theirs under its name)."""
    if same_entry(parent, name, identity):
        with contextlib.suppress(OSError):
            os.rmdir(name, dir_fd=parent)


def empty_directory(fd: int) -> None:
    """Remove everything inside the directory `fd` (never following a symlink)."""
    for name in os.listdir(fd):
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(name, dir_fd=fd)  # fd-based and symlink-safe on Linux
        else:
            os.unlink(name, dir_fd=fd)


def identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino
