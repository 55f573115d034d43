"""Start a real `hub-restuser serve` (gunicorn and all) as a subprocess for a test."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.realparts.net import Endpoint

REPO = Path(__file__).resolve().parents[2]
SKEL = REPO / "skel"
UID_MIN, UID_MAX = 20000, 29999


def restuser_command() -> list[str]:
    found = shutil.which("hub-restuser", path=os.path.dirname(sys.executable))
    if not found:
        raise RuntimeError("hub-restuser is not installed in this venv: pip install -e .[test]")
    return [found, "serve"]


class RestuserProcess:
    """One service process. Fails loudly (with its log) if it does not become healthy."""

    def __init__(
        self,
        prefix: Path,
        endpoint: Endpoint,
        log_path: Path,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        launcher: list[str] | None = None,
        bind: str | None = None,
    ) -> None:
        """`endpoint` is where the test talks to it; `bind` defaults to the same address."""
        self.endpoint = endpoint
        self.log_path = log_path
        if bind is None:
            bind = f"unix:{endpoint.unix}" if endpoint.unix else f"{endpoint.host}:{endpoint.port}"
        args = [
            "--prefix", str(prefix), "--skel", str(SKEL), "--bind", bind,
            "--uid-min", str(UID_MIN), "--uid-max", str(UID_MAX),
        ]  # fmt: skip
        self.argv = (launcher or []) + restuser_command() + args + (extra_args or [])
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(
        self, timeout: float = 20.0, headers: dict[str, str] | None = None
    ) -> "RestuserProcess":
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hub-restuser exited {self.process.returncode}:\n{self.log()}")
            try:
                if self.endpoint.request("GET", "/healthz", headers, timeout=2).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"hub-restuser did not become healthy in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process:
            self._log.close()
