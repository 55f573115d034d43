"""Build, adopt and repair home directories without ever following a symbolic link.

useradd copies the skeleton itself, but silently skips it in some sandboxes (no
CAP_DAC_OVERRIDE) and leaves nothing behind if it is killed midway; HomeBuilder fills in
whatever is missing without ever overwriting a file the user already has.

A home may hold symlinks its owner planted (or a previous owner, in a leftover home), and
this runs as root: every step works relative to directory descriptors opened with
O_NOFOLLOW, so a symlink is at most chowned itself, never followed or descended into, and a
directory swapped for a symlink midway makes the open fail instead of leading elsewhere.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Opening a file only to fchown it: never block on a FIFO, never become a controlling tty.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


# Deeper leftover trees are not adopted (the walk holds one descriptor per level).
MAX_ADOPT_DEPTH = 200


class UnsafeHome(OSError):
    """The home is a symbolic link or not a directory: nothing was done inside it."""


class TooDeep(OSError):
    """The leftover home nests directories deeper than MAX_ADOPT_DEPTH: not adopted."""


@dataclass
class Adoption:
    """What adopting a leftover home did, for the log line."""

    chowned: int = 0  # entries now owned by the new account
    hardlinked: int = 0  # files with other hard links, possibly outside the home: left alone
    skipped: int = 0  # other file systems mounted inside, entries that changed during the walk,
    # device nodes and sockets (also counted in `devices`)
    devices: int = 0  # block/char devices and sockets: keep their owner (a device node owned
    # by the user would give them the device, e.g. /dev/loop0)
    added: list[str] = field(default_factory=list)  # skeleton entries that were missing


def lstat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


class HomeBuilder:
    def __init__(self, skel: Path, mode: int = 0o700) -> None:
        self.skel = skel
        self.mode = mode

    def populate(self, home: Path, uid: int, gid: int) -> list[str]:
        """Create `home` if missing and any missing skeleton entries; return what was added.
        Raises UnsafeHome if `home` is a symlink or not a directory."""
        fd, created = _open_home(home, create=True)
        try:
            added = ["."] if created else []
            self._fill(fd, self.skel, "", uid, gid, added)
            _own_and_close_up(fd, uid, gid, self.mode)
        finally:
            os.close(fd)
        return added

    def adopt(self, home: Path, uid: int, gid: int) -> Adoption:
        """Give an existing home and everything in it to uid/gid, then fill in the skeleton.

        A file with more than one hard link is left alone: its other names may be outside
        the home (a link to a file of someone else's), and chowning it would give that file
        away. Other file systems mounted inside the home are not entered.
        """
        fd, _ = _open_home(home, create=False)
        try:
            _refuse_too_deep(fd, home)  # before anything is changed
            adoption = Adoption()
            _chown_tree(fd, uid, gid, adoption)
            self._fill(fd, self.skel, "", uid, gid, adoption.added)
            _own_and_close_up(fd, uid, gid, self.mode)
        finally:
            os.close(fd)
        return adoption

    def check_adoptable(self, home: Path) -> None:
        """Raise TooDeep (or UnsafeHome) if adopt() would refuse `home`; changes nothing."""
        fd, _ = _open_home(home, create=False)
        try:
            _refuse_too_deep(fd, home)
        finally:
            os.close(fd)

    def recopy_differing(self, home: Path, uid: int, gid: int) -> list[str]:
        """In a home just created and not yet handed out, rewrite every regular skeleton file
        whose copy has another size or type (useradd truncates copies silently on a full
        disk, and exits 0); return the rewritten names. Never for a home with user files:
        they would be overwritten."""
        fd, _ = _open_home(home, create=False)
        rewritten: list[str] = []
        try:
            _recopy(fd, self.skel, "", uid, gid, rewritten)
        finally:
            os.close(fd)
        return rewritten

    def move_aside(self, home: Path) -> Path:
        """Rename `home` (whatever it is: a symlink is moved, not followed) to a new sibling
        NAME.orphaned-<UTC time>; return the new path. The sibling is in the homes' own
        directory, which only root can write to, and never matches the default name pattern."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        parent = os.open(home.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for attempt in range(1, 1000):
                candidate = f"{home.name}.orphaned-{stamp}" + (f"-{attempt}" if attempt > 1 else "")
                if _lexists_at(candidate, parent):
                    continue
                os.rename(home.name, candidate, src_dir_fd=parent, dst_dir_fd=parent)
                return home.parent / candidate
        finally:
            os.close(parent)
        raise FileExistsError(errno.EEXIST, "no free name to move the old home to", str(home))

    def move_back(self, moved: Path, home: Path) -> bool:
        """Undo move_aside() if nothing took the home's place since; True if it was undone."""
        if os.path.lexists(home):
            return False
        os.rename(moved, home)
        return True

    def _fill(self, fd: int, source: Path, prefix: str, uid: int, gid: int, added: list) -> None:
        """Copy the entries of skeleton directory `source` missing in directory `fd`."""
        with os.scandir(source) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            source_info = entry.stat(follow_symlinks=False)
            try:
                target_mode = os.stat(entry.name, dir_fd=fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                if not _copy_entry(entry, source_info, fd, uid, gid):
                    continue
                added.append(prefix + entry.name)
                target_mode = source_info.st_mode
            # Descend only into a real directory on both sides: what the user put in place
            # of a skeleton directory (a file, a symlink) is theirs and stays as it is.
            if stat.S_ISDIR(source_info.st_mode) and stat.S_ISDIR(target_mode):
                try:
                    sub = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                except OSError as error:
                    if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                        continue  # swapped for something else since the stat
                    raise
                try:
                    self._fill(sub, Path(entry.path), prefix + entry.name + "/", uid, gid, added)
                finally:
                    os.close(sub)


def _open_home(home: Path, create: bool) -> tuple[int, bool]:
    """A descriptor of directory `home` (never through a symlink), and whether it was made."""
    if create and not home.parent.is_dir():
        home.parent.mkdir(parents=True, mode=0o755)
    parent = os.open(home.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        created = False
        if create:
            try:
                os.mkdir(home.name, 0o700, dir_fd=parent)
                created = True
            except FileExistsError:
                pass
        try:
            return os.open(home.name, _DIR_FLAGS, dir_fd=parent), created
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeHome(
                    error.errno, "the home is a symbolic link or not a directory", str(home)
                ) from None
            raise
    finally:
        os.close(parent)


def _own_and_close_up(fd: int, uid: int, gid: int, mode: int) -> None:
    info = os.fstat(fd)
    if (info.st_uid, info.st_gid) != (uid, gid):
        os.fchown(fd, uid, gid)
    if stat.S_IMODE(info.st_mode) != mode:
        os.fchmod(fd, mode)


def _copy_entry(entry: os.DirEntry, info: os.stat_result, fd: int, uid: int, gid: int) -> bool:
    """Create skeleton entry `entry` in directory `fd`, owned by uid/gid; False if skipped."""
    name, mode = entry.name, stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(entry.path), name, dir_fd=fd)
        os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
        return True
    if stat.S_ISDIR(info.st_mode):
        os.mkdir(name, 0o700, dir_fd=fd)
        target = os.open(name, _DIR_FLAGS, dir_fd=fd)
    elif stat.S_ISREG(info.st_mode):
        # O_EXCL: fails rather than write through anything that appeared under this name.
        target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=fd)  # fmt: skip
        try:
            _copy_bytes(entry.path, target, info.st_size)
        except BaseException:
            os.close(target)
            raise
    else:
        return False  # FIFOs and devices have no place in a skeleton
    try:
        os.fchown(target, uid, gid)
        os.fchmod(target, mode)  # after the chown, which may clear set-id bits
        if stat.S_ISREG(info.st_mode):
            os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    finally:
        os.close(target)
    return True


def _copy_bytes(source: str, target: int, size: int) -> None:
    with open(source, "rb") as reader:
        offset = 0
        while True:
            sent = os.sendfile(target, reader.fileno(), offset, max(size - offset, 1 << 20))
            if sent == 0:
                return
            offset += sent


def _lexists_at(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _walk_below(top: int, visit: Callable[[int, str, os.stat_result, int], int | None]) -> None:
    """Call visit(parent fd, name, lstat, depth) for every entry below directory `top`,
    depth first, holding one descriptor per level and never following a symlink. `visit`
    returns an open descriptor of a directory to descend into it (the walk closes it)."""
    stack = [(top, iter(os.listdir(top)))]
    try:
        while stack:
            fd, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if fd != top:
                    os.close(fd)
                continue
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            sub = visit(fd, name, info, len(stack))
            if sub is not None:
                stack.append((sub, iter(())))  # on the stack first: closed if listdir fails
                stack[-1] = (sub, iter(os.listdir(sub)))
    finally:
        for fd, _ in stack[1:]:
            os.close(fd)


def _chown_tree(top: int, uid: int, gid: int, adoption: Adoption) -> None:
    """chown everything below directory `top` (not `top` itself); symlinks are chowned
    themselves and never followed."""
    device = os.fstat(top).st_dev

    def visit(fd: int, name: str, info: os.stat_result, depth: int) -> int | None:
        if stat.S_ISDIR(info.st_mode):
            if info.st_dev != device:
                adoption.skipped += 1
                return None
            if depth > MAX_ADOPT_DEPTH:  # grown since _refuse_too_deep looked
                raise TooDeep(errno.ELOOP, f"deeper than {MAX_ADOPT_DEPTH} levels")
            sub = _open_same(name, fd, _DIR_FLAGS, info, adoption)
            if sub is not None:
                try:
                    _chown_fd(sub, uid, gid, adoption)
                except BaseException:
                    os.close(sub)
                    raise
            return sub
        if _is_device(info.st_mode):
            adoption.devices += 1
            adoption.skipped += 1
        elif info.st_nlink > 1:
            adoption.hardlinked += 1
        elif stat.S_ISREG(info.st_mode):
            # Through a descriptor: the name could be swapped for a hard link between the
            # stat and a chown by name; the opened file's own link count is what counts.
            opened = _open_same(name, fd, _FILE_FLAGS, info, adoption)
            if opened is not None:
                try:
                    if os.fstat(opened).st_nlink > 1:
                        adoption.hardlinked += 1
                    else:
                        _chown_fd(opened, uid, gid, adoption)
                finally:
                    os.close(opened)
        else:
            os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
            adoption.chowned += 1
        return None

    _walk_below(top, visit)


def _open_same(name: str, dir_fd: int, flags: int, info: os.stat_result, adoption: Adoption):
    """Open `name` if it is still the entry `info` describes, else count it skipped."""
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.ENXIO):
            adoption.skipped += 1
            return None
        raise
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
        os.close(fd)
        adoption.skipped += 1
        return None
    return fd


def _chown_fd(fd: int, uid: int, gid: int, adoption: Adoption) -> None:
    os.fchown(fd, uid, gid)
    adoption.chowned += 1


def _is_device(mode: int) -> bool:
    return stat.S_ISBLK(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def _refuse_too_deep(top: int, home: Path) -> None:
    """Raise TooDeep if directories nest more than MAX_ADOPT_DEPTH levels below `top` (on
    its file system, never through a symlink)."""
    device = os.fstat(top).st_dev

    def visit(fd: int, name: str, info: os.stat_result, depth: int) -> int | None:
        if not stat.S_ISDIR(info.st_mode) or info.st_dev != device:
            return None
        if depth > MAX_ADOPT_DEPTH:
            raise TooDeep(errno.ELOOP, f"nests directories deeper than {MAX_ADOPT_DEPTH} "
                          "levels", str(home))  # fmt: skip
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                return None
            raise

    _walk_below(top, visit)


def _recopy(fd: int, source: Path, prefix: str, uid: int, gid: int, rewritten: list) -> None:
    """Rewrite the regular files of skeleton directory `source` whose copy in directory `fd`
    differs in size or type; descend into directories that are directories on both sides."""
    with os.scandir(source) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        source_info = entry.stat(follow_symlinks=False)
        try:
            target = os.stat(entry.name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue  # populate() adds what is missing
        if stat.S_ISREG(source_info.st_mode):
            if stat.S_ISREG(target.st_mode) and target.st_size == source_info.st_size:
                continue
            if stat.S_ISDIR(target.st_mode):
                raise IsADirectoryError(errno.EISDIR, "a directory where the skeleton has a "
                                        "file", prefix + entry.name)  # fmt: skip
            # unlink + O_EXCL create: never writes through whatever is under that name.
            os.unlink(entry.name, dir_fd=fd)
            _copy_entry(entry, source_info, fd, uid, gid)
            rewritten.append(prefix + entry.name)
        elif stat.S_ISDIR(source_info.st_mode) and stat.S_ISDIR(target.st_mode):
            try:
                sub = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                    continue
                raise
            try:
                _recopy(sub, Path(entry.path), prefix + entry.name + "/", uid, gid, rewritten)
            finally:
                os.close(sub)
