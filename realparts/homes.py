"""Home directories with real content for the backup tests, and a way to compare trees.

`make_homes` builds homes owned by distinct numeric uids (no passwd entries needed: the files
carry the numbers), with nested directories, empty, small and 1 MB files, several modes, odd
names, a symlink and the junk a backup excludes. `snapshot` records a tree as
{relpath: Entry}; `compare` says how two snapshots differ in words; `mutate` changes a home the
way a day of work does, for incrementals. `big_home` is the benchmark's one large home.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

MEGABYTE = 1024 * 1024

# Paths below a home that a backup excludes by default; make_homes puts files in each.
JUNK_DIRS = (".cache", "projects/p0/.ipynb_checkpoints", ".local/share/Trash")


@dataclass(frozen=True)
class Home:
    name: str
    uid: int
    gid: int
    path: Path
    files: int  # regular files created, junk included


class Entry(NamedTuple):
    """One path of a snapshot. `content` is the sha256 of a regular file, the target of a
    symlink, "" for a directory."""

    mode: int  # full st_mode: a file turned into a directory is a difference too
    uid: int
    gid: int
    size: int
    content: str


@dataclass
class Mutation:
    """What `mutate` did, as paths relative to the home; `added` lists a new directory
    before the files in it."""

    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def is_junk(relpath: str) -> bool:
    """True for a path inside a cache, a notebook checkpoint dir or the trash, at any depth."""
    parts = relpath.split("/")
    return (".cache" in parts or ".ipynb_checkpoints" in parts
            or "/.local/share/Trash/" in f"/{relpath}/")  # fmt: skip


def make_homes(root: Path, users: Mapping[str, int], files_per_home: int = 700,
               megabyte_files: int = 1, seed: int = 0) -> dict[str, Home]:  # fmt: skip
    """Create `root`/NAME for each NAME: uid in `users` (gid = uid), each home with about
    `files_per_home` regular files (at least 20), `megabyte_files` of them 1 MB. Content and
    layout follow from `seed` and the name, so two calls with the same arguments build the
    same trees."""
    root.mkdir(parents=True, exist_ok=True)
    homes = {}
    for name, uid in users.items():
        rng = random.Random(f"{seed}:{name}")
        homes[name] = _make_home(root / name, name, uid, files_per_home, megabyte_files, rng)
    return homes


def _make_home(home: Path, name: str, uid: int, files: int, megabyte_files: int,
               rng: random.Random) -> Home:  # fmt: skip
    files = max(files, 20)
    home.mkdir()
    fixed = {  # path: (mode, size): the entries tests look for by name
        "notes/readme.md": (0o644, 120),
        "notes/empty.txt": (0o644, 0),
        "notes/with spaces.txt": (0o644, 40),
        "notes/données-été.csv": (0o644, 300),
        ".ssh/authorized_keys": (0o600, 90),
        "private/diary.txt": (0o600, 2000),
        "bin/run.sh": (0o755, 60),
        ".cache/pip/wheel.bin": (0o644, 5000),
        "projects/p0/.ipynb_checkpoints/analysis-checkpoint.ipynb": (0o644, 700),
        ".local/share/Trash/files/old.txt": (0o644, 100),
        ".local/share/Trash/info/old.txt.trashinfo": (0o644, 50),
    }
    for index in range(megabyte_files):
        fixed[f"data/big-{index}.bin"] = (0o644, MEGABYTE)
    for relpath, (mode, size) in fixed.items():
        _write(home / relpath, mode, _content(rng, size, relpath))
    for index in range(files - len(fixed)):
        relpath = _random_relpath(rng, index)
        roll = rng.random()
        size = 0 if roll < 0.05 else rng.randint(1, 512) if roll < 0.7 else rng.randint(513, 16384)
        mode = 0o600 if roll < 0.1 else 0o755 if roll > 0.97 else 0o644
        _write(home / relpath, mode, _content(rng, size, relpath))
    for directory, _dirnames, _filenames in os.walk(home):
        os.chmod(directory, 0o755)  # whatever the umask of the test run
    home.chmod(0o750)
    (home / ".ssh").chmod(0o700)
    (home / "private").chmod(0o700)
    (home / "notes/latest").symlink_to("readme.md")
    _chown_tree(home, uid, uid)
    return Home(name, uid, uid, home, files)


def _random_relpath(rng: random.Random, index: int) -> str:
    depth = rng.randint(0, 3)
    dirs = [f"projects/p{rng.randint(0, 9)}"] + [f"d{rng.randint(0, 4)}" for _ in range(depth)]
    return "/".join(dirs) + f"/f{index}{rng.choice(['.py', '.ipynb', '.csv', '.txt', ''])}"


def _content(rng: random.Random, size: int, relpath: str) -> bytes:
    if relpath.endswith(".sh"):
        return b"#!/bin/sh\necho hello\n".ljust(size, b"#")
    return rng.randbytes(size)


def _write(path: Path, mode: int, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.chown(top, uid, gid)
    for directory, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)


def big_home(root: Path, name: str, size_mb: int, uid: int = 3000, files: int = 4) -> Home:
    """A home of `files` large files of random bytes adding up to `size_mb` MB, plus a few
    small ones; random so that compression cannot shrink it."""
    home = root / name
    (home / "data").mkdir(parents=True)
    chunk = 4 * MEGABYTE
    remaining = size_mb * MEGABYTE
    for index in range(files):
        size = remaining // (files - index)
        remaining -= size
        with open(home / "data" / f"part-{index}.bin", "wb") as handle:
            handle.writelines(os.urandom(min(chunk, size - offset))
                              for offset in range(0, size, chunk))  # fmt: skip
    (home / "notes.txt").write_text("the big home\n")
    (home / "data" / "README").write_text("large random files\n")
    _chown_tree(home, uid, uid)
    return Home(name, uid, uid, home, files + 2)


def snapshot(root: Path, skip_junk: bool = False) -> dict[str, Entry]:
    """Every path below `root` (and "." for root itself) with mode, owner, size and content
    digest; symlinks are recorded, never followed. `skip_junk` leaves out what `is_junk` says
    a backup excludes."""
    found = {".": _entry(root, root.lstat())}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory, name)
            relpath = path.relative_to(root).as_posix()
            if skip_junk and is_junk(relpath):
                continue
            found[relpath] = _entry(path, path.lstat())
    return found


def _entry(path: Path, info: os.stat_result) -> Entry:
    if stat.S_ISLNK(info.st_mode):
        content = os.readlink(path)
    elif stat.S_ISREG(info.st_mode):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(MEGABYTE), b""):
                digest.update(block)
        content = digest.hexdigest()
    else:
        content = ""
    size = info.st_size if not stat.S_ISDIR(info.st_mode) else 0
    return Entry(info.st_mode, info.st_uid, info.st_gid, size, content)


def compare(before: Mapping[str, Entry], after: Mapping[str, Entry]) -> list[str]:
    """How `after` differs from `before`, one readable line per path; [] when equal."""
    lines = []
    for relpath in sorted(before.keys() | after.keys()):
        old, new = before.get(relpath), after.get(relpath)
        if new is None:
            lines.append(f"{relpath}: missing")
        elif old is None:
            lines.append(f"{relpath}: unexpected ({_describe(new)})")
        elif old != new:
            lines.append(f"{relpath}: " + ", ".join(_field_differences(old, new)))
    return lines


def _describe(entry: Entry) -> str:
    return f"{stat.filemode(entry.mode)} {entry.uid}:{entry.gid} {entry.size} B"


def _field_differences(old: Entry, new: Entry) -> list[str]:
    differences = []
    if old.mode != new.mode:
        differences.append(f"mode {stat.filemode(old.mode)} -> {stat.filemode(new.mode)}")
    if (old.uid, old.gid) != (new.uid, new.gid):
        differences.append(f"owner {old.uid}:{old.gid} -> {new.uid}:{new.gid}")
    if old.size != new.size:
        differences.append(f"size {old.size} -> {new.size}")
    if old.content != new.content:
        differences.append("symlink target" if stat.S_ISLNK(old.mode) else "content")
    return differences


def mutate(home: Path, count: int, seed: int = 0) -> Mutation:
    """Change, add and delete about `count` regular files each (not junk, not the fixed files
    tests name), as a user's day of work would; added files get the home's owner. A changed
    file changes size too, so that duplicity (which looks at size and whole-second mtime)
    always sees it."""
    rng = random.Random(f"mutate:{seed}")
    owner = home.stat()
    candidates = sorted(
        relpath for relpath, entry in snapshot(home, skip_junk=True).items()
        if stat.S_ISREG(entry.mode) and relpath.startswith("projects/")
    )  # fmt: skip
    picked = rng.sample(candidates, min(len(candidates), 2 * count))
    done = Mutation()
    for relpath in picked[:count]:
        path = home / relpath
        old_size = path.stat().st_size
        path.write_bytes(rng.randbytes(old_size + rng.randint(1, 4096)))
        done.changed.append(relpath)
    for relpath in picked[count:]:
        (home / relpath).unlink()
        done.deleted.append(relpath)
    for index in range(count):
        relpath = f"projects/new-{seed}/n{index}.txt"
        path = home / relpath
        if not path.parent.exists():
            path.parent.mkdir()
            path.parent.chmod(0o755)
            os.chown(path.parent, owner.st_uid, owner.st_gid)
            done.added.append(path.parent.relative_to(home).as_posix())
        path.write_bytes(rng.randbytes(rng.randint(0, 2048)))
        path.chmod(0o644)
        os.chown(path, owner.st_uid, owner.st_gid)
        done.added.append(relpath)
    return done
