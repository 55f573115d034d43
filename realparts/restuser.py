"""Start a real `hub-restuser serve` (gunicorn and all) as a subprocess for a test."""

from __future__ import annotations

import os
from pathlib import Path

from realparts.net import Endpoint
from realparts.served import ServedProcess, venv_command

REPO = Path(__file__).resolve().parents[1]
SKEL = REPO / "skel"
UID_MIN, UID_MAX = 20000, 29999


def restuser_command() -> list[str]:
    return [str(venv_command("hub-restuser")), "serve"]


class RestuserProcess(ServedProcess):
    """`hub-restuser serve` on a prefix root, with the repository's skel and a test uid range."""

    name = "hub-restuser"

    def __init__(self, prefix: Path, endpoint: Endpoint, log_path: Path,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None,
                 launcher: list[str] | None = None, bind: str | None = None) -> None:  # fmt: skip
        args = ["--prefix", str(prefix), "--skel", str(SKEL),
                "--uid-min", str(UID_MIN), "--uid-max", str(UID_MAX)]  # fmt: skip
        super().__init__(restuser_command(), args, endpoint, log_path, extra_args=extra_args,
                         env={**os.environ, **(env or {})}, launcher=launcher, bind=bind)  # fmt: skip
