"""A real Docker engine: use the one answering on /var/run/docker.sock, or start dockerd.

dockerd is started with --bridge=none and --iptables=false: containers get only
--network none or --network host, so no test traffic goes anywhere but loopback.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path


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
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "DockerEngine":
        if engine_answers():
            return self
        if not shutil.which("dockerd"):
            raise RuntimeError("dockerd is missing: ./scripts/test installs docker.io")
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if engine_answers():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"dockerd did not start:\n{self.log_path.read_text(errors='replace')[-4000:]}"
        )

    def stop(self) -> None:
        """Stop dockerd if this fixture started it; an engine found running is left alone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        self.process = None
