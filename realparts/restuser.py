"""Start a real `hub-restuser serve` (gunicorn and all) as a subprocess for a test."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from realparts.net import Endpoint
from realparts.process import ManagedProcess

REPO = Path(__file__).resolve().parents[1]
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
        if bind is None:
            bind = f"unix:{endpoint.unix}" if endpoint.unix else f"{endpoint.host}:{endpoint.port}"
        args = [
            "--prefix", str(prefix), "--skel", str(SKEL), "--bind", bind,
            "--uid-min", str(UID_MIN), "--uid-max", str(UID_MAX),
        ]  # fmt: skip
        argv = (launcher or []) + restuser_command() + args + (extra_args or [])
        self.process = ManagedProcess(argv, log_path, env={**os.environ, **(env or {})})
        self.argv = argv

    def start(
        self, timeout: float = 20.0, headers: dict[str, str] | None = None
    ) -> RestuserProcess:
        def healthy() -> bool:
            return self.endpoint.request("GET", "/healthz", headers, timeout=2).status == 200

        self.process.start(healthy, timeout, "hub-restuser")
        return self

    def log(self) -> str:
        return self.process.log()

    def stop(self) -> None:
        self.process.stop(timeout=15)
