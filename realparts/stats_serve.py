"""Start a real `hub-stats serve` (gunicorn and all) as a subprocess for a test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from realparts.net import Endpoint
from realparts.process import ManagedProcess

HUB_STATS = Path(sys.executable).parent / "hub-stats"


class StatsServeProcess:
    """`hub-stats serve --db DB --bind ENDPOINT ...`; ready when /healthz answers 200."""

    def __init__(self, db: Path, endpoint: Endpoint, log_path: Path,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 launcher: list[str] | None = None, bind: str | None = None):  # fmt: skip
        """`endpoint` is where the test talks to it; `bind` defaults to the same address;
        `launcher` goes before the command (e.g. systemd-socket-activate)."""
        if not HUB_STATS.exists():
            raise RuntimeError(f"{HUB_STATS} is missing: pip install -e .[test]")
        if bind is None:
            bind = f"unix:{endpoint.unix}" if endpoint.unix else f"{endpoint.host}:{endpoint.port}"
        self.endpoint = endpoint
        self.argv = [*(launcher or []), str(HUB_STATS), "serve", "--db", str(db),
                     "--bind", bind, *(extra_args or [])]  # fmt: skip
        clean = {key: value for key, value in os.environ.items()
                 if not key.startswith("HUB_STATS_") and key != "CREDENTIALS_DIRECTORY"}  # fmt: skip
        self.process = ManagedProcess(self.argv, log_path, env={**clean, **(env or {})})

    def start(self, timeout: float = 30) -> StatsServeProcess:
        def healthy() -> bool:
            return self.endpoint.request("GET", "/healthz", timeout=2).status == 200

        self.process.start(healthy, timeout, "hub-stats serve")
        return self

    def log(self) -> str:
        return self.process.log()

    def stop(self) -> None:
        self.process.stop(timeout=15)
