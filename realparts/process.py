"""A background process for a test: started in its own session, output to a log file,
ready when a probe says so, failing loudly with its log, stopped with its whole group."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def as_if_from_a_terminal() -> None:
    """preexec_fn: Ctrl-C's and Ctrl-\\'s default dispositions, as a command typed in a terminal
    gets them. A suite started in the background (cron, a CI runner, nohup, `cmd &`) has SIGINT
    ignored, and an ignored signal stays ignored across exec: a test sending SIGINT to a child
    would otherwise test nothing, and a bash script could not even trap it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


class ManagedProcess:
    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:  # fmt: skip
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Start, then call `ready` until it returns True; an OSError from it counts as not yet."""
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=as_if_from_a_terminal,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{what} exited {self.process.returncode}:\n{self.log()[-6000:]}"
                )
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{what} was not ready within {timeout} s:\n{self.log()[-6000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the process group, SIGKILL if it is still there after `timeout`."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


class LoggedDaemon:
    """What the tests' daemons (hub-culler, hub-stats) share: a ManagedProcess `process` whose
    log file `log_path` says msg=started once it runs. Subclasses set both and `name`."""

    name = "daemon"
    process: ManagedProcess
    log_path: Path

    def start(self, timeout: float = 30):
        self.process.start(lambda: "msg=started" in self.log(), timeout, self.name)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, needle: str, count: int = 1, timeout: float = 60) -> str:
        """Wait until `needle` appears `count` times in the log; return the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if log.count(needle) >= count:
                return log
            if self.process.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited {self.process.process.returncode}:\n{log}"
                )
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} x{count} not in {self.name}'s log in {timeout} s:\n"
                             f"{self.log()[-4000:]}")  # fmt: skip


def hub_client_env(prefix: str, token: str, **extra: str) -> dict[str, str]:
    """This process's environment for a hub client command: none of its PREFIX_* settings nor
    the JUPYTERHUB_* variables a test run may carry, the hub token, and `extra`."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith((prefix, "JUPYTERHUB_"))}  # fmt: skip
    env["JUPYTERHUB_API_TOKEN"] = token
    env.update(extra)
    return env
