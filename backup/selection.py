"""What of a home is handed to duplicity, seen the way duplicity sees it.

duplicity matches `--exclude` globs against full paths: `**` is any characters, `*` and `?`
any but `/`, `[...]` a class, and a pattern matching a directory excludes all below it. The
skip-unchanged check, the size limit and the drill walk the home with the same meaning, so
that what they look at is exactly what duplicity backs up: a change in a directory they
wrongly took for excluded would otherwise go unnoticed, and a giant in it be read for hours.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Sequence

# A file over this size with under a tenth of it in data extents is a sparse giant.
SPARSE_FLOOR = 1 << 30
# Changes stamped up to this long before a backup began count as made after it: the file
# server's clock (NFS stamps ctime itself) may be behind ours. A change in that window costs
# one more incremental, never a missed one.
CLOCK_MARGIN_S = 300.0


def glob_regex(glob: str) -> str:
    """A duplicity glob as a regular expression (without anchors)."""
    out, i = [], 0
    while i < len(glob):
        char = glob[i]
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        i += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = i + (1 if glob[i:i + 1] in ("!", "^") else 0)
            end += 1 if glob[end:end + 1] == "]" else 0
            end = glob.find("]", end)
            if end < 0:
                out.append(r"\[")
                continue
            body = glob[i:end].replace("\\", "\\\\").replace("[", "\\[")
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append(f"[{body}]")
            i = end + 1
        else:
            out.append(re.escape(char))
    return "".join(out)


def literal(path: str) -> str:
    """`path` as a duplicity glob matching only itself: each of * ? [ in a class of its own."""
    return "".join(f"[{char}]" if char in "*?[" else char for char in path)


def fingerprint(excludes: Sequence[str], max_file_size: int) -> str:
    """A short digest of the settings that decide what is backed up: a backup made with
    other ones does not show that the home is unchanged as now configured."""
    text = json.dumps({"excludes": list(excludes), "max_file_size": max_file_size})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Selection:
    """The files of one home (or the whole source, for the single layout) that duplicity
    is given: `excludes` are home-relative (anchored at the home) or start with `**`."""

    def __init__(self, home: str, excludes: Sequence[str], max_bytes: int) -> None:
        self.home = home.rstrip("/") or "/"
        self.max_bytes = max_bytes
        self.patterns = [self._anchored(pattern) for pattern in excludes]
        self._rules = []
        for pattern in self.patterns:
            dir_only = pattern.endswith("/") and pattern != "/"
            body = glob_regex(pattern.rstrip("/") if dir_only else pattern)
            self._rules.append((re.compile(f"^{body}($|/)", re.S), dir_only))

    def _anchored(self, pattern: str) -> str:
        if pattern.startswith(("/", "**")):
            return pattern
        return f"{literal(self.home)}/{pattern}"

    def excluded(self, path: str, is_dir: bool) -> bool:
        return any(rule.match(path) and (is_dir or not dir_only) for rule, dir_only in self._rules)

    def walk(self, strict: bool = False) -> Iterator[tuple[str, os.stat_result]]:
        """(path relative to the home, lstat) of every entry below the home duplicity would
        see; excluded directories are not entered, symlinks not followed. With `strict`, a
        directory or entry that cannot be read raises OSError; else it is passed over."""
        stack = [""]
        while stack:
            relative_dir = stack.pop()
            directory = os.path.join(self.home, relative_dir) if relative_dir else self.home
            try:
                entries = list(os.scandir(directory))
            except OSError:
                if strict:
                    raise
                continue
            for entry in entries:
                relative = f"{relative_dir}/{entry.name}" if relative_dir else entry.name
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    if strict:
                        raise
                    continue
                is_dir = stat.S_ISDIR(info.st_mode)
                if self.excluded(entry.path, is_dir):
                    continue
                yield relative, info
                if is_dir:
                    stack.append(relative)

    def left_out(self, relative: str, info: os.stat_result) -> bool:
        """A regular file not handed to duplicity: larger than max_bytes (0: no limit), or
        over 1 GiB with less than a tenth of it in data extents. A sparse `truncate -s 1T`
        costs its owner no space or quota, yet duplicity reads every zero (about 40 s per GB
        here): one such file would hold a chain, a worker and the job lock for hours."""
        if not stat.S_ISREG(info.st_mode):
            return False
        if self.max_bytes and info.st_size > self.max_bytes:
            return True
        if info.st_size <= SPARSE_FLOOR or info.st_blocks * 512 >= info.st_size // 10:
            return False
        # st_blocks also undercounts a file compressed by the file system (btrfs, ZFS):
        # only the holes say it is sparse.
        return _data_bytes(os.path.join(self.home, relative), info.st_size) < info.st_size // 10

    def too_big(self) -> list[tuple[str, int]]:
        """(relative path, size) of every file left_out leaves out."""
        return [(relative, info.st_size) for relative, info in self.walk()
                if self.left_out(relative, info)]  # fmt: skip

    def over_budget(self, budget: int) -> tuple[list[tuple[str, int]], int,
                                                 list[tuple[str, int]]]:  # fmt: skip
        """In one walk of the home: the files `too_big` leaves out, the bytes of the regular
        files duplicity would be given without them, and the biggest of those to leave out
        too so that the rest fits in `budget` bytes (0: no budget). Sizes are apparent
        sizes: duplicity reads a sparse file's holes as zeros."""
        too_big, files = [], []
        for relative, info in self.walk():
            if self.left_out(relative, info):
                too_big.append((relative, info.st_size))
            elif stat.S_ISREG(info.st_mode):
                files.append((relative, info.st_size))
        total = sum(size for _, size in files)
        dropped = []
        if budget and total > budget:
            kept = total
            for relative, size in sorted(files, key=lambda item: (-item[1], item[0])):
                if kept <= budget:
                    break
                dropped.append((relative, size))
                kept -= size
        return too_big, total, dropped

    def duplicity_excludes(self, left_out: Sequence[str] = ()) -> list[str]:
        """The --exclude patterns: the configured ones and each left-out file, literally."""
        return [*self.patterns, *(f"{literal(self.home)}/{literal(path)}" for path in left_out)]

    def changed_since(self, since: float) -> bool:
        """Whether the home itself or anything in it duplicity would see has a ctime or mtime
        at or after `since` - CLOCK_MARGIN_S; what cannot be examined counts as a change.
        ctime moves on every write, create, rename, delete, chmod and chown, and no user can
        set it back."""
        since -= CLOCK_MARGIN_S
        try:
            home = os.lstat(self.home)
            if max(home.st_ctime, home.st_mtime) >= since:
                return True
            return any(max(info.st_ctime, info.st_mtime) >= since
                       for _, info in self.walk(strict=True))  # fmt: skip
        except OSError:
            return True

    def unchanged_files(self, before: float) -> list[str]:
        """Regular files (relative paths) not modified since `before` and not left out."""
        return [relative for relative, info in self.walk()
                if stat.S_ISREG(info.st_mode) and info.st_mtime < before
                and not self.left_out(relative, info)]  # fmt: skip


def _data_bytes(path: str, size: int) -> int:
    """Bytes of `path` in data extents, counted up to a tenth of `size` (SEEK_DATA and
    SEEK_HOLE); `size` when that cannot be told."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return size
    try:
        data = offset = 0
        while data < size // 10:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as error:
                return data if error.errno == errno.ENXIO else size  # ENXIO: no data after
            offset = os.lseek(fd, start, os.SEEK_HOLE)
            data += offset - start
        return data
    except OSError:
        return size
    finally:
        os.close(fd)
