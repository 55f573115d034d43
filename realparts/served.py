"""A served sidecar (`hub-restuser serve`, `hub-stats serve`: gunicorn and all) as a
subprocess for a test: started at an endpoint, ready when /healthz answers 200, failing
loudly with its log when it does not."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from realparts.net import Endpoint
from realparts.process import ManagedProcess


def venv_command(name: str) -> Path:
    """A console script of this suite, installed in the venv that runs the tests."""
    found = Path(sys.executable).parent / name
    if not os.access(found, os.X_OK):
        raise RuntimeError(f"{found} is missing: pip install -e .[test]")
    return found


def default_bind(endpoint: Endpoint) -> str:
    return f"unix:{endpoint.unix}" if endpoint.unix else f"{endpoint.host}:{endpoint.port}"


class ServedProcess:
    """`launcher... command... --bind BIND args... extra_args...`. `endpoint` is where the
    test talks to it; `bind` defaults to the same address; `launcher` goes before the
    command (e.g. prlimit, systemd-socket-activate)."""

    name = "the service"

    def __init__(self, command: list[str], args: list[str], endpoint: Endpoint, log_path: Path,
                 *, extra_args: list[str] | None = None, env: dict[str, str],
                 launcher: list[str] | None = None, bind: str | None = None) -> None:  # fmt: skip
        self.endpoint = endpoint
        self.argv = [*(launcher or []), *command, "--bind", bind or default_bind(endpoint),
                     *args, *(extra_args or [])]  # fmt: skip
        self.process = ManagedProcess(self.argv, log_path, env=env)

    def start(self, timeout: float = 20.0, headers: dict[str, str] | None = None):
        def healthy() -> bool:
            return self.endpoint.request("GET", "/healthz", headers, timeout=2).status == 200

        self.process.start(healthy, timeout, self.name)
        return self

    def log(self) -> str:
        return self.process.log()

    def stop(self) -> None:
        self.process.stop(timeout=15)
