"""What /proc says about processes: the tree below a process, whether one still runs (a
zombie does not), its process group, and a one-line description for assertion messages."""

from __future__ import annotations

import os
from pathlib import Path


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and ")"):
    state, ppid, pgrp, session, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, parents before their children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry))[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return _stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def parent(pid: int) -> int | None:
    try:
        return int(_stat_fields(pid)[1])
    except (OSError, IndexError, ValueError):
        return None


def process_group(pid: int) -> int | None:
    try:
        return int(_stat_fields(pid)[2])
    except (OSError, IndexError, ValueError):
        return None


def command_line(pid: int) -> bytes:
    """The process's argv, NUL-separated (b"" when gone: a gpg may end while it is read)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def program(pid: int) -> str:
    """The base name of the program's argv[0] ("" when gone)."""
    argv0 = command_line(pid).split(b"\0", 1)[0]
    return os.path.basename(argv0.decode(errors="replace"))


def describe(pid: int) -> str:
    """A process's command line and state, for an assertion message."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        state, ppid, pgrp, session = _stat_fields(pid)[:4]
    except (OSError, ValueError):
        return "gone"
    return f"{argv.strip()} (state {state}, parent {ppid}, group {pgrp}, session {session})"
