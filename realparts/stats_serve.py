"""Start a real `hub-stats serve` (gunicorn and all) as a subprocess for a test."""

from __future__ import annotations

import os
from pathlib import Path

from realparts.net import Endpoint
from realparts.served import ServedProcess, venv_command


class StatsServeProcess(ServedProcess):
    """`hub-stats serve --db DB`, with no HUB_STATS_* setting or credential of the test's own
    environment."""

    name = "hub-stats serve"

    def __init__(self, db: Path, endpoint: Endpoint, log_path: Path,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 launcher: list[str] | None = None, bind: str | None = None) -> None:  # fmt: skip
        clean = {key: value for key, value in os.environ.items()
                 if not key.startswith("HUB_STATS_") and key != "CREDENTIALS_DIRECTORY"}  # fmt: skip
        super().__init__([str(venv_command("hub-stats")), "serve"], ["--db", str(db)], endpoint, log_path,
                         extra_args=extra_args, env={**clean, **(env or {})}, launcher=launcher,
                         bind=bind)  # fmt: skip

    def start(self, timeout: float = 30, headers: dict[str, str] | None = None):
        return super().start(timeout, headers)
