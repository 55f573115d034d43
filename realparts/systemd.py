"""A real systemd as PID 1 in a --network host container, to run the suite's units for real.

The image is a debootstrap'd Debian bookworm root (systemd, python3-venv, ...), built once
and cached in the Docker engine under IMAGE. `--privileged` fails on these machines; the
flags below are the combination known to boot systemd here (see shared/REALPARTS.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from realparts.docker import docker
from realparts.waiting import wait_until

IMAGE = "hub-sidecars/systemd-bookworm:2"
MIRROR = os.environ.get("HUB_SIDECARS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# gnupg: scripts/install would otherwise apt-get it in every module that installs the suite
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,passwd,procps,iproute2,curl,gnupg"
# Units that make no sense in a container sharing the host's network and clock.
MASKED = ("systemd-networkd.service", "systemd-resolved.service", "systemd-timesyncd.service",
          "getty@tty1.service", "console-getty.service")  # fmt: skip

BASE_RUN_FLAGS = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined",
    "--network", "host", "--cgroupns=host",
    "--tmpfs", "/run", "--tmpfs", "/run/lock",
]  # fmt: skip


def cgroup_flags(cgroup_root: Path = Path("/sys/fs/cgroup")) -> list[str]:
    """The container's /sys/fs/cgroup: a tmpfs of its own with each of the host's hierarchies
    bound into it. Binding the host's /sys/fs/cgroup tmpfs itself shares its superblock, and
    systemd's read-only remount inside then leaves the HOST's /sys/fs/cgroup read-only."""
    if _fstype(cgroup_root) != "tmpfs":
        raise RuntimeError(
            f"{cgroup_root} is {_fstype(cgroup_root) or 'not a mount point'}, not the cgroup v1/"
            "hybrid tmpfs these tests know how to share with a systemd container without "
            "changing the host's mounts (see shared/REALPARTS.md)"
        )
    flags = ["--tmpfs", f"{cgroup_root}:mode=755"]
    for hierarchy in sorted(cgroup_root.iterdir()):
        if _fstype(hierarchy) in ("cgroup", "cgroup2"):
            flags += ["-v", f"{hierarchy}:{hierarchy}:rw"]
    return flags


def _fstype(path: Path) -> str:
    """The file system type mounted at `path` (the topmost mount), or "" when none is."""
    found = ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(path):
            found = fields[fields.index("-") + 1]
    return found


def ensure_image(workdir: Path) -> str:
    """Build IMAGE unless the engine has it already (about a minute the first time)."""
    if docker("image", "inspect", IMAGE, check=False).returncode == 0:
        return IMAGE
    if not shutil.which("debootstrap"):
        raise RuntimeError("debootstrap is missing: ./scripts/test installs it")
    rootfs = workdir / "rootfs"
    result = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(rootfs), MIRROR],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"debootstrap failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    (rootfs / "etc/machine-id").write_text("")
    for unit in MASKED:
        mask = rootfs / "etc/systemd/system" / unit
        mask.unlink(missing_ok=True)
        mask.symlink_to("/dev/null")
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    base = IMAGE + "-base"
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    docker("import", "-", base, stdin=tar.stdout)
    tar.wait()
    # `docker import --change` refuses STOPSIGNAL; a two-line build adds it, so that a stop
    # asks systemd to shut down instead of waiting 10 s for a SIGTERM it ignores.
    context = workdir / "image"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nSTOPSIGNAL SIGRTMIN+3\n")
    docker("build", "-q", "-t", IMAGE, str(context))
    shutil.rmtree(rootfs, ignore_errors=True)
    return IMAGE


class SystemdContainer:
    def __init__(self, image: str) -> None:
        self.image = image
        self.name = f"hub-sidecars-test-{uuid.uuid4().hex[:10]}"

    def start(self, timeout: float = 60) -> SystemdContainer:
        # systemd makes "/" a shared mount only when the kernel starts it, not under a container
        # manager; LoadCredential= needs /run shared (systemd issue 38103), as it is on a host.
        boot = "mount --make-rshared / && exec /lib/systemd/systemd"
        docker("run", "-d", "--name", self.name, *BASE_RUN_FLAGS, *cgroup_flags(), self.image,
               "/bin/sh", "-c", boot)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run("test", "-S", "/run/systemd/private", check=False).returncode == 0:
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return self
            time.sleep(0.3)
        logs = docker("logs", self.name, check=False)
        self.stop()
        raise RuntimeError(f"systemd did not come up in {timeout} s: {logs.stdout}{logs.stderr}")

    def run(
        self, *argv: str, check: bool = True, timeout: float = 300, **kwargs
    ) -> subprocess.CompletedProcess:
        """Run a command inside the container (docker exec)."""
        return docker("exec", self.name, *argv, check=check, timeout=timeout, **kwargs)

    def copy_in(self, source: Path, target: str) -> None:
        docker("cp", str(source), f"{self.name}:{target}")

    def put_tree(self, source: Path, names: list[str], target: str) -> None:
        """Copy `names` (relative to `source`) under `target` through one tar stream."""
        self.run("mkdir", "-p", target)
        tar = subprocess.Popen(["tar", "-C", str(source), "-c", *names], stdout=subprocess.PIPE)
        untar = subprocess.run(["docker", "exec", "-i", self.name, "tar", "-C", target, "-x"],
                               stdin=tar.stdout, capture_output=True, text=True,
                               check=False)  # fmt: skip
        tar.stdout.close()
        if tar.wait() != 0 or untar.returncode != 0:
            raise RuntimeError(f"copying {names} from {source} to {target} failed: {untar.stderr}")

    def write_file(self, path: str, text: str, mode: str = "0644") -> None:
        script = 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"'
        docker("exec", "-i", self.name, "sh", "-c", script, "write_file", path, mode, input=text)

    def journal(self, unit: str, *options: str, **match: str) -> str:
        """The unit's journal as text; `options` go to journalctl (e.g. "-p", "err"), and
        `match` (e.g. _SYSTEMD_INVOCATION_ID=...) selects the lines instead of the unit."""
        selection = [f"{key}={value}" for key, value in match.items()] or ["-u", unit]
        return self.run("journalctl", "--no-pager", "-o", "cat", *options, *selection,
                        check=False).stdout  # fmt: skip

    def journal_with(self, unit: str, *needles: str | re.Pattern, timeout: float = 20,
                     **match: str) -> str:  # fmt: skip
        """`journal(unit, **match)` once every needle, a substring or a pattern, is in it.
        journald reads a unit's output and PID 1's own lines on its own schedule: a line may
        reach the journal after the stop, exit or state change the test waited for."""

        def with_every_needle() -> str | None:
            text = self.journal(unit, **match)
            found = all(n.search(text) if isinstance(n, re.Pattern) else n in text
                        for n in needles)  # fmt: skip
            return text if found else None

        return wait_until(
            with_every_needle,
            timeout,
            lambda: f"{needles} in the journal of {unit}:\n{self.journal(unit, **match)}",
        )

    def stop(self) -> None:
        docker("rm", "-f", self.name, check=False)


def show(container: SystemdContainer, unit: str, *props: str) -> dict[str, str]:
    """`systemctl show UNIT -p PROPS` as a dict."""
    out = container.run("systemctl", "show", unit, "-p", ",".join(props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def build_installed_image(base: str, repo: Path, wheelhouse: Path) -> tuple[str, str]:
    """`base` with this checkout in /src, the wheels in /wheels and scripts/install run once
    (nothing enabled), committed as an image of its own: every systemd module boots from it
    instead of installing again. Returns the image and what scripts/install printed."""
    container = SystemdContainer(base).start()
    try:
        container.put_tree(repo, ["scripts", "units", "skel", "docs"], "/src")
        container.put_tree(wheelhouse, ["."], "/wheels")
        result = container.run("/src/scripts/install", "--wheels", "/wheels", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"scripts/install failed:\n{result.stdout}{result.stderr}")
        image = f"hub-sidecars/systemd-installed:{uuid.uuid4().hex[:12]}"
        docker("commit", container.name, image)
    finally:
        container.stop()
    return image, result.stdout + result.stderr
