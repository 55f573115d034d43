"""Run the real `hub-culler` command against a real hub: one pass, or the daemon.

The token travels in JUPYTERHUB_API_TOKEN, as for a hub-managed service; the status file goes
into the test's directory so that every run can be read back.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from realparts.process import LoggedDaemon, ManagedProcess, hub_client_env

CULLER = Path(sys.executable).parent / "hub-culler"
# The scopes docs/culler.md tells an admin to give the culler's token.
CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers",
                 "tokens"]  # fmt: skip


def culler_env(token: str, **extra: str) -> dict[str, str]:
    return hub_client_env("HUB_CULLER_", token, **extra)


@dataclass
class CullerRun:
    returncode: int
    log: str
    status: dict | None

    def lines(self, needle: str) -> list[str]:
        return [line for line in self.log.splitlines() if needle in line]


def run_once(hub, service: str, workdir: Path, *args: str, timeout: float = 180,
             **env: str) -> CullerRun:  # fmt: skip
    """`hub-culler --once --url HUB ... ARGS` as `service`; its exit code, log and status."""
    status_file = workdir / f"status-{time.monotonic_ns()}.json"
    argv = [str(CULLER), "--once", "--url", hub.api_url, "--status-file", str(status_file),
            "--probe-state-file", str(workdir / "probe-marks.json"), *args]  # fmt: skip
    done = subprocess.run(argv, env=culler_env(hub.token(service), **env), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip
    status = json.loads(status_file.read_text()) if status_file.exists() else None
    return CullerRun(done.returncode, done.stderr + done.stdout, status)


class CullerDaemon(LoggedDaemon):
    """`hub-culler` running in the background (its own session), log in a file."""

    name = "hub-culler"

    def __init__(self, hub, service: str, workdir: Path, *args: str, **env: str) -> None:
        self.status_file = workdir / "daemon-status.json"
        self.log_path = workdir / f"culler-{time.monotonic_ns()}.log"
        argv = [str(CULLER), "--url", hub.api_url, "--status-file", str(self.status_file),
                "--probe-state-file", str(workdir / "probe-marks.json"), *args]  # fmt: skip
        self.process = ManagedProcess(argv, self.log_path, env=culler_env(hub.token(service),
                                                                         **env))  # fmt: skip

    def status(self) -> dict:
        return json.loads(self.status_file.read_text())

    def signal(self, signum: int = signal.SIGTERM, timeout: float = 15) -> tuple[int, float]:
        """Send `signum`; wait for the exit; return (exit code, seconds it took)."""
        started = time.monotonic()
        self.process.process.send_signal(signum)
        code = self.process.process.wait(timeout)
        return code, time.monotonic() - started

    def stop(self) -> None:
        self.process.stop()


def running(hub, name: str, server: str = "") -> bool:
    """Whether the hub lists that server of `name` (asked as the hub's "admin" service)."""
    model = hub.api("GET", f"/users/{name}", "admin").json()
    return server in model.get("servers", {})
