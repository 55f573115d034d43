"""A real Docker engine: use the one answering on /var/run/docker.sock, or start dockerd.

dockerd is started with --bridge=none and --iptables=false: containers get only
--network none or --network host, so no test traffic goes anywhere but loopback.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from realparts.hostcheck import mounts
from realparts.process import ManagedProcess


def docker(
    *args: str, check: bool = True, timeout: float = 600, **kwargs
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=timeout, **kwargs
    )


def engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return (
            docker("version", "--format", "{{.Server.Version}}", check=False, timeout=10).returncode
            == 0
        )
    except subprocess.TimeoutExpired:
        return False


class DockerEngine:
    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: ManagedProcess | None = None
        self.mounts_before: set[str] = set()

    def start(self, timeout: float = 60) -> DockerEngine:
        if engine_answers():
            return self
        if not shutil.which("dockerd"):
            raise RuntimeError("dockerd is missing: ./scripts/test installs docker.io")
        self.mounts_before = set(mounts())
        self.process = ManagedProcess(
            ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false"], self.log_path
        )
        self.process.start(engine_answers, timeout, "dockerd")
        return self

    def stop(self) -> None:
        """Stop dockerd if this fixture started it; an engine found running is left alone."""
        if self.process is not None:
            self.process.stop()
            self.process = None
            # dockerd leaves the nsfs mount of the host's network namespace it made
            # (/run/docker/netns/default) mounted after it exits.
            for point in set(mounts()) - self.mounts_before:
                if point.startswith(("/run/docker/", "/var/run/docker/")):
                    subprocess.run(["umount", point], check=True, capture_output=True)


BUSYBOX_IMAGE = "hub-sidecars-busybox:test"


def busybox_image(name: str = BUSYBOX_IMAGE, env: dict[str, str] | None = None) -> str:
    """A tiny local image holding only busybox-static (no registry can be reached): built once
    with `docker import`, then reused. Commands: sh, sleep, yes, true, and busybox's others.
    `env` names another engine (DOCKER_HOST), e.g. the test's swarm."""
    if docker("image", "inspect", name, check=False, timeout=30, env=env).returncode == 0:
        return name
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox is missing: ./scripts/test installs busybox-static")
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "bin").mkdir()
        shutil.copy(busybox, Path(root) / "bin" / "busybox")
        for command in ("sh", "sleep", "yes", "true", "cat"):
            (Path(root) / "bin" / command).symlink_to("busybox")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        try:
            docker("import", "-", name, stdin=tar.stdout, timeout=120, env=env)
        finally:
            tar.stdout.close()
            tar.wait()
    return name
