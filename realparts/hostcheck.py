"""What the test suite leaves on the host: mounts, listening sockets, processes and /tmp entries
compared before and after a run, so that a run which changes the host fails.

Only what the suite can be held to is counted: a process or listener is the suite's when its
environment carries the run's marker or its command line names the checkout or the run's
temporary directory; a mount when it is new (and not another pytest run's) or when a mount that
was there before changed its options (the read-only /sys/fs/cgroup that systemd containers
used to leave behind).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "HUB_SIDECARS_TEST_RUN"
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp
# where pytest runs keep their temporary files (tests/conftest.py's own, and pytest's default)
OTHER_RUNS = ("/tmp/hst-", "/tmp/pytest-of-")


@dataclass(frozen=True)
class Process:
    pid: int
    started: int  # clock ticks after boot: tells a new process from a reused pid
    argv: str


@dataclass
class HostSnapshot:
    mounts: dict[str, tuple[str, str]] = field(default_factory=dict)  # point -> (type, options)
    listeners: dict[int, str] = field(default_factory=dict)  # socket inode -> "addr:port"
    processes: dict[int, Process] = field(default_factory=dict)
    tmp_entries: set[str] = field(default_factory=set)

    @classmethod
    def take(cls, tmp: Path = Path("/tmp")) -> HostSnapshot:
        return cls(mounts(), _listeners(), _processes(), {entry.name for entry in tmp.iterdir()})


def leftovers(before: HostSnapshot, after: HostSnapshot, run_id: str, own_paths: list[str],
              own_pids: set[int]) -> list[str]:  # fmt: skip
    """One line per thing the run changed and did not put back."""
    found: list[str] = []

    def ours(pid: int) -> bool:
        process = after.processes.get(pid)
        if process is None or pid in own_pids:
            return False
        if before.processes.get(pid) == process:
            return False
        return any(path in process.argv for path in own_paths) or _has_marker(pid, run_id)

    for point, (fstype, options) in sorted(after.mounts.items()):
        if point not in before.mounts:
            if not _another_runs(point, own_paths):
                found.append(f"mount {point} ({fstype}) was added")
        elif before.mounts[point] != (fstype, options):
            found.append(f"mount {point} changed from {before.mounts[point][1]} to {options}")
    for point in sorted(set(before.mounts) - set(after.mounts)):
        found.append(f"mount {point} ({before.mounts[point][0]}) was removed")
    new_listeners = {inode: address for inode, address in after.listeners.items()
                     if inode not in before.listeners}  # fmt: skip
    if new_listeners:
        for pid, inodes in _socket_owners(set(new_listeners)).items():
            if ours(pid):
                for inode in inodes:
                    found.append(f"port {new_listeners[inode]} is still listened on by pid {pid} "
                                 f"({after.processes[pid].argv[:120]})")  # fmt: skip
    for pid in sorted(after.processes):
        if ours(pid):
            found.append(f"process {pid} is still running: {after.processes[pid].argv[:160]}")
    for name in sorted(after.tmp_entries - before.tmp_entries):
        if any(path.startswith(f"/tmp/{name}/") for path in own_paths):
            continue  # the run's own directory, kept after a failure for its logs
        found.append(f"/tmp/{name} was left behind")
    return found


def _another_runs(point: str, own_paths: list[str]) -> bool:
    """A mount under some other pytest run's temporary directory (a second suite on the host)."""
    return point.startswith(OTHER_RUNS) and not any(point.startswith(p) for p in own_paths)


def _unescape(text: str) -> str:
    """/proc/self/mountinfo writes space, tab, newline and backslash as octal escapes."""
    for escaped, plain in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(escaped, plain)
    return text


def mounts() -> dict[str, tuple[str, str]]:
    mounts = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        point = _unescape(fields[4])
        # per-mount options (ro/rw, ...) and the superblock's, which a remount changes
        mounts[point] = (fields[separator + 1], f"{fields[5]} {fields[separator + 3]}")
    return mounts


def _listeners() -> dict[int, str]:
    found = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == LISTEN:
                address, port = fields[1].rsplit(":", 1)
                found[int(fields[9])] = f"{table}:{int(port, 16)}"
    return found


def _processes() -> dict[int, Process]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        if rest[0] == "Z" or not argv:  # zombies and kernel threads
            continue
        found[int(entry.name)] = Process(int(entry.name), int(rest[19]), argv.strip())
    return found


def _has_marker(pid: int, run_id: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER}={run_id}".encode() in environ.split(b"\0")


def _socket_owners(inodes: set[int]) -> dict[int, list[int]]:
    owners: dict[int, list[int]] = {}
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(entry / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(entry / "fd" / fd)
            except OSError:
                continue
            if target in wanted:
                owners.setdefault(int(entry.name), []).append(wanted[target])
    return owners

