"""What happened to each chain: one small JSON record per chain in the state directory.

Written after every attempt (atomically: a half record is never read), read by `status`,
`cleanup` (which only touches a chain whose last backup succeeded) and the metrics.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class ChainRecord:
    chain: str
    user: str
    target: str
    last_attempt: str | None = None  # UTC ISO 8601
    last_success: str | None = None
    last_kind: str | None = None  # full / incremental
    last_duration_s: float | None = None
    last_bytes: int | None = None
    exit_code: int | None = None
    meaning: str | None = None
    error: str | None = None
    in_progress: bool = False  # set before duplicity starts, cleared after: a kill leaves it
    last_cleanup: str | None = None
    newest_full: str | None = None  # when the newest full chain began (a full that succeeded)
    incrementals: int = 0  # incrementals since that full
    fulls: list[str] = field(default_factory=list)  # start times of the full chains kept
    history: list[dict] = field(default_factory=list)  # the last few attempts

    @property
    def succeeded_last(self) -> bool:
        return (not self.in_progress and self.exit_code == 0
                and self.last_success is not None and self.last_success == self.last_attempt)  # fmt: skip


class StateStore:
    HISTORY = 20

    def __init__(self, state_dir: str) -> None:
        self.directory = Path(state_dir) / "chains"
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, chain: str) -> Path:
        return self.directory / f"{chain}.json"

    def load(self, chain: str) -> ChainRecord | None:
        try:
            data = json.loads(self.path(chain).read_text())
            return ChainRecord(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            return None  # unreadable: as if never backed up, and the next attempt rewrites it

    def all(self) -> list[ChainRecord]:
        records = []
        for path in sorted(self.directory.glob("*.json")):
            record = self.load(path.stem)
            if record is not None:
                records.append(record)
        return records

    def save(self, record: ChainRecord) -> None:
        record.history = record.history[-self.HISTORY:]
        text = json.dumps(asdict(record), indent=1) + "\n"
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path(record.chain))
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
