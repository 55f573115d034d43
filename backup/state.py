"""What happened to each chain: one small JSON record per chain in the state directory.

Written after every attempt (atomically: a half record is never read), read by `status`,
`cleanup` (which only touches a chain whose last backup succeeded) and the metrics.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path

from hubsidecars.clock import iso
from hubsidecars.files import replace_file
from hubsidecars.logs import log_event

log = logging.getLogger("backup")


@dataclass
class ChainRecord:
    chain: str
    user: str
    target: str
    last_attempt: str | None = None  # UTC ISO 8601
    last_success: str | None = None
    last_success_end: str | None = None  # when that backup ended
    # duplicity's own time of that backup's set (from its manifest's name): a restore of the
    # last complete backup asks for exactly this time, since the set of a later run that
    # failed can carry a time in the same second as last_success_end
    last_set_time: str | None = None
    last_kind: str | None = None  # full / incremental
    last_duration_s: float | None = None
    last_bytes: int | None = None
    exit_code: int | None = None
    meaning: str | None = None
    error: str | None = None
    in_progress: bool = False  # set before duplicity starts, cleared after: a kill leaves it
    # set before duplicity starts, cleared only when it finished its set: a killed or failed
    # attempt leaves it, and the next run removes that attempt's partial set first
    unfinished: bool = False
    # the last attempt's set lacks files duplicity could not read: not a success (last_success
    # and last_set_time stay at the last complete backup)
    incomplete: bool = False
    last_cleanup: str | None = None
    last_drill: str | None = None  # when the last restore drill of this chain ran
    drill_ok: bool | None = None
    drill_detail: str | None = None
    newest_full: str | None = None  # when the newest full chain began (a full that succeeded)
    incrementals: int = 0  # incrementals since that full
    fulls: list[str] = field(default_factory=list)  # start times of the full chains kept
    history: list[dict] = field(default_factory=list)  # the last few attempts
    # uid owning the home when it was last backed up: another uid is another person given
    # the same name (a class hub's student1 next term), who gets a chain of their own
    owner_uid: int | None = None
    owner_since: str | None = None  # when a home owned by another uid was first seen
    # the excludes and size limit the last backup was made with (selection.fingerprint)
    selection: str | None = None

    @property
    def complete_time(self) -> str | None:
        """The time to restore "the last complete backup" at (None: never backed up)."""
        return self.last_set_time or self.last_success_end

    @property
    def succeeded_last(self) -> bool:
        return (not self.in_progress and self.exit_code == 0
                and self.last_success is not None and self.last_success == self.last_attempt)  # fmt: skip

    # -- what happens to a chain, as the record keeps it ------------------------------------

    def clock_behind(self, now: datetime) -> str | None:
        """A line naming the host clock when it is behind the chain's newest set (or the last
        attempt, whose set may be in the target too); None when it is not."""
        moments = [self.last_set_time, self.last_attempt]
        newest = max((datetime.fromisoformat(m) for m in moments if m), default=None)
        if newest is None or now >= newest:
            return None
        return (f"the host clock ({iso(now)}) is behind the newest backup of this chain "
                f"({iso(newest)}): it went backwards; fix the clock (timedatectl, NTP) before "
                "backing up again")

    def unchanged(self, at: str, seconds: float) -> None:
        """Nothing in the home changed since the last backup, which counts as this one."""
        self.last_attempt = self.last_success = at
        self.last_kind, self.last_bytes, self.last_duration_s = "unchanged", 0, seconds
        self.history.append({"at": at, "kind": "unchanged", "ok": True, "seconds": seconds,
                             "bytes": 0})  # fmt: skip

    def began(self, at: str) -> None:
        """duplicity is about to write a set: until `set_written`, a kill leaves it unfinished."""
        self.last_attempt = at
        self.in_progress = self.unfinished = True

    def failed(self, error: str, seconds: float, exit_code: int | None = None,
               meaning: str | None = None) -> None:  # fmt: skip
        self.in_progress = False
        self.exit_code, self.meaning = exit_code, meaning
        self.error = error[:500]
        self.last_duration_s = seconds
        self.history.append({"at": self.last_attempt, "ok": False, "error": self.error})

    def set_written(self, kind: str, owner: int | None, seconds: float, size: int | None,
                    exit_code: int, meaning: str) -> None:  # fmt: skip
        """duplicity finished the set of the attempt begun last: a `kind` set, `size` bytes."""
        self.in_progress = self.unfinished = False
        self.owner_uid = owner
        self.last_kind = kind
        self.last_duration_s = seconds
        self.last_bytes = size
        self.exit_code, self.meaning = exit_code, meaning
        if kind == "full":
            # the set is in the target, and duplicity counts it as a full chain, complete or not
            self.newest_full = self.last_attempt
            self.incrementals = 0
            self.fulls = [*self.fulls, self.last_attempt]
        else:
            self.incrementals += 1

    def written_incomplete(self, error: str) -> None:
        """The set lacks files: no success; last_success and the set time a default restore
        and the drill use stay at the last complete backup, and cleanup leaves the chain alone
        until a complete one follows."""
        self.incomplete = True
        self.error = error[:500]
        self.history.append({"at": self.last_attempt, "kind": self.last_kind, "ok": False,
                             "incomplete": True, "seconds": self.last_duration_s,
                             "bytes": self.last_bytes, "error": self.error})  # fmt: skip

    def written_whole(self, ended: str, set_time: str | None, selection: str) -> None:
        self.incomplete = False
        self.last_success = self.last_attempt
        self.last_success_end = ended
        self.last_set_time = set_time
        self.selection = selection
        self.error = None
        self.history.append({"at": self.last_attempt, "kind": self.last_kind, "ok": True,
                             "seconds": self.last_duration_s, "bytes": self.last_bytes})  # fmt: skip

    def cleaned(self, at: str, keep_full: int) -> None:
        self.last_cleanup = at
        self.fulls = self.fulls[-keep_full:]

    def drilled(self, at: str, ok: bool, detail: str) -> None:
        self.last_drill, self.drill_ok, self.drill_detail = at, ok, detail


class StateStore:
    HISTORY = 20

    def __init__(self, state_dir: str) -> None:
        self.directory = Path(state_dir) / "chains"
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, chain: str) -> Path:
        return self.directory / f"{chain}.json"

    def load(self, chain: str) -> ChainRecord | None:
        path = self.path(chain)
        try:
            data = json.loads(path.read_text())
            record = ChainRecord(**data)
            _check(record)
            return record
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as error:
            # unreadable or malformed (a hand edit, an older version, a damaged restore of
            # /var): as if never backed up, and the next attempt rewrites it
            log_event(log, "ignoring an unreadable chain record", level=logging.WARNING,
                      file=str(path), error=str(error))  # fmt: skip
            return None

    def all(self) -> list[ChainRecord]:
        records = []
        for path in sorted(self.directory.glob("*.json")):
            record = self.load(path.stem)
            if record is not None:
                records.append(record)
        return records

    def save(self, record: ChainRecord) -> None:
        record.history = record.history[-self.HISTORY:]
        replace_file(self.path(record.chain), json.dumps(asdict(record), indent=1) + "\n",
                     0o600)


_TIMESTAMPS = ("last_attempt", "last_success", "last_success_end", "last_set_time", "owner_since",
               "last_cleanup", "last_drill", "newest_full")  # fmt: skip
_TYPES = {"chain": str, "user": str, "target": str, "incrementals": int, "in_progress": bool,
          "unfinished": bool, "incomplete": bool,
          "fulls": list, "history": list}  # fmt: skip


_OPTIONAL = {  # fields that may be null, and the types they may have otherwise
    "last_kind": (str,), "meaning": (str,), "error": (str,), "drill_detail": (str,),
    "selection": (str,), "last_duration_s": (float, int), "last_bytes": (int, float),
    "exit_code": (int,), "owner_uid": (int,), "drill_ok": (bool,),
}  # fmt: skip


def _check(record: ChainRecord) -> None:
    """Raise ValueError/TypeError for a record whose values the code that reads it cannot use."""
    for item in fields(record):
        value = getattr(record, item.name)
        wanted = _TYPES.get(item.name)
        if wanted is not None and (type(value) is not wanted):
            raise TypeError(f"{item.name} is {value!r}, not a {wanted.__name__}")
    for moment in [*(getattr(record, name) for name in _TIMESTAMPS), *record.fulls]:
        if moment is None:
            continue
        if not isinstance(moment, str) or datetime.fromisoformat(moment).tzinfo is None:
            raise ValueError(f"{moment!r} is not a timestamp with a UTC offset")
    for name, allowed in _OPTIONAL.items():
        value = getattr(record, name)
        if value is not None and type(value) not in allowed:
            raise TypeError(f"{name} is {value!r}, not a {allowed[0].__name__}")
    if not all(isinstance(entry, dict) for entry in record.history):
        raise TypeError("history holds something other than objects")
