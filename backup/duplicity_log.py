"""What duplicity says, read: its --log-fd records split and interpreted (backup kind, set time,
statistics, unreadable and unrestored files, collection-status chains, verify differences,
the one line that says why a run failed). Pure functions of text: no process, no file."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

DETAIL_CHARS = 300
# duplicity's own messages (under LC_ALL=C) saying a `backup` became a full one.
_FULL_MESSAGES = (
    "No signatures found, switching to full backup.",
    "Last full backup is too old, forcing full backup",
    "Latest chain has too many incrementals, forcing full backup",
)
_MANIFEST = re.compile(r"\bduplicity-(full|inc)\.([0-9A-Za-z.]+?)\.manifest\b")
_SET_TIME = re.compile(r"(\d{8}T\d{6}Z)$")  # the last time in a manifest's name: the set's
_RESTART = "Restarting after volume"
_RECORD_HEADER = re.compile(r"^(DEBUG|INFO|NOTICE|WARNING|ERROR) (\d+)(?: (.*))?$")
_VERIFY_SUMMARY = re.compile(r"Verify complete: (\d+) file\(s\) compared, (\d+) difference")
_DIFFERENCE = "Difference found: "
_COLLECTION_STATUS_CODE = 3  # log.InfoCode.collection_status


@dataclass(frozen=True)
class LogRecord:
    """One record of duplicity's --log-fd output: `LEVEL CODE [EXTRA]` then the message."""

    level: str
    code: int
    extra: str
    message: str


@dataclass(frozen=True)
class BackupSet:
    kind: str  # "full" or "incremental"
    time: datetime  # UTC; for an incremental, the time it brings the chain up to
    volumes: int
    encrypted: bool


@dataclass(frozen=True)
class FullChain:
    """A full backup and its incrementals, oldest first.

    `complete` is duplicity's own label (chain-complete): the newest chain, whose signatures
    match and which the next incremental extends; older chains are listed as "no-sig". It does
    not prove the last backup finished: after a killed run duplicity still says complete and its
    next backup would resume (see discard_partial). Keep your own record of successful runs."""

    sets: tuple[BackupSet, ...]
    complete: bool

    @property
    def start(self) -> datetime:
        return self.sets[0].time

    @property
    def end(self) -> datetime:
        return self.sets[-1].time

    @property
    def incrementals(self) -> int:
        return sum(1 for backup_set in self.sets if backup_set.kind == "incremental")

    @property
    def volumes(self) -> int:
        return sum(backup_set.volumes for backup_set in self.sets)


@dataclass(frozen=True)
class Collection:
    """What collection-status reports for one target, chains oldest first."""

    chains: tuple[FullChain, ...]
    orphaned_sets: int
    incomplete_sets: int

    @property
    def last_full(self) -> datetime | None:
        return self.chains[-1].start if self.chains else None

    @property
    def last_backup(self) -> datetime | None:
        return self.chains[-1].end if self.chains else None



def parse_log(text: str) -> list[LogRecord]:
    """Split --log-fd output into records. Each is a header line `LEVEL CODE[ EXTRA]`, maybe
    more EXTRA lines (collection-status puts its chains there), message lines each starting
    with ". ", and a blank line."""
    records: list[LogRecord] = []
    header = None
    extra: list[str] = []
    message: list[str] = []

    def close() -> None:
        if header is not None:
            level, code, first = header
            records.append(LogRecord(level, code, "\n".join([first, *extra]).strip("\n"),
                                     "\n".join(message)))  # fmt: skip

    for line in text.splitlines():
        if header is None:
            match = _RECORD_HEADER.match(line)
            if match:
                header = (match[1], int(match[2]), match[3] or "")
                extra, message = [], []
            continue
        if line == "":
            close()
            header = None
        elif line.startswith("."):
            message.append(line[2:] if line.startswith(". ") else line[1:])
        else:
            extra.append(line)
    close()
    return records


UNREADABLE_FILE = 10  # duplicity's log code of "Error accessing possibly locked file PATH"
_UNLISTABLE = "Error listing directory "  # a generic warning (code 1), not counted in Errors


def unreadable_files(records: Sequence[LogRecord]) -> tuple[str, ...]:
    """The paths duplicity warned it could not read and left out of the backup: files (code
    10, counted in the statistics' Errors) and directories it could not list (a generic
    warning that Errors does not count: a home it cannot list is backed up empty, exit 0)."""
    found = []
    for record in records:
        if record.level != "WARNING":
            continue
        if record.code == UNREADABLE_FILE:
            found.append(record.extra.strip().strip("'") or record.message.strip())
        elif record.message.strip().startswith(_UNLISTABLE):
            found.append(record.message.strip()[len(_UNLISTABLE):])
    return tuple(found)


# duplicity's log codes of a file it could not restore and went on without (exit 0):
# cannot_process ("Error '...' patching PATH", "... processing PATH") and process_skipped
# ("Skipping PATH because of previous error").
UNRESTORED_CODES = (12, 13)


def unrestored_files(records: Sequence[LogRecord]) -> tuple[str, ...]:
    """The paths a restore logged it could not restore, in the order logged, each once."""
    found: dict[str, None] = {}
    for record in records:
        if record.level in ("WARNING", "ERROR") and record.code in UNRESTORED_CODES:
            found[_unescape(record.extra.strip()) or record.message.strip()] = None
    return tuple(found)


def _unescape(text: str) -> str:
    """A path as duplicity's util.escape logged it: quoted, non-ASCII as Python escapes."""
    if len(text) >= 2 and text[0] == text[-1] == "'":
        text = text[1:-1]
    try:
        return text.encode("ascii").decode("unicode_escape")
    except (UnicodeError, ValueError):
        return text


_DELETING = "Deleting these file(s) from backend:"


def deleted_files(records: Sequence[LogRecord]) -> list[str]:
    """The files a `cleanup --force` says it deleted."""
    for record in records:
        lines = record.message.splitlines()
        if lines and lines[0].strip() == _DELETING:
            return [line.strip() for line in lines[1:] if line.strip()]
    return []


def backup_statistics(records: Sequence[LogRecord]) -> dict[str, float]:
    """The figures of duplicity's "Backup Statistics" block (the last one), e.g. SourceFiles,
    RawDeltaSize, TotalDestinationSizeChange, Errors; {} when it printed none."""
    for record in reversed(records):
        if "[ Backup Statistics ]" in record.message:
            figures: dict[str, float] = {}
            for line in record.message.splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0].isalpha():
                    try:
                        figures[parts[0]] = float(parts[1])
                    except ValueError:
                        continue
            return figures
    return {}


def backup_set_time(records: Sequence[LogRecord]) -> str | None:
    """The time duplicity gave the set a backup run wrote, from the name of its manifest
    (duplicity-full.T.manifest, duplicity-inc.T0.to.T.manifest), as UTC ISO 8601; None when
    the run named no manifest."""
    names = {match[2] for record in records for match in _MANIFEST.finditer(record.message)}
    times = sorted({found[1] for name in names if (found := _SET_TIME.search(name))})
    if not times:
        return None
    moment = datetime.strptime(times[-1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return moment.isoformat()


def backup_kind(records: Sequence[LogRecord], *, full_requested: bool) -> str | None:
    """"full" or "incremental" for a backup run that printed statistics, else None.

    From duplicity's messages saying it turned the run into a full one; else from the name of
    the manifest it wrote (duplicity 3.2 notes each file it finishes): a run that resumes a
    killed full says neither "switching" nor "forcing", and is a full all the same."""
    if full_requested or any(
        text in record.message for record in records for text in _FULL_MESSAGES
    ):
        return "full"
    written = {match[1] for record in records for match in _MANIFEST.finditer(record.message)}
    if len(written) == 1:
        return "full" if written == {"full"} else "incremental"
    if any(_RESTART in record.message for record in records):
        return None  # resumed a set of a kind this duplicity did not name
    return "incremental" if backup_statistics(records) else None


def parse_collection(records: Sequence[LogRecord]) -> Collection:
    """The collection-status record (INFO 3): `chain-no-sig N` / `chain-complete` lines, each
    followed by ` full|inc TIME VOLUMES enc|noenc` lines, then the orphaned and incomplete
    set counts."""
    status = [r for r in records if r.level == "INFO" and r.code == _COLLECTION_STATUS_CODE]
    if not status:
        raise ValueError("duplicity collection-status printed no collection status record")
    chains: list[FullChain] = []
    sets: list[BackupSet] | None = None
    complete = False
    counts = {"orphaned-sets-num": 0, "incomplete-sets-num": 0}

    def close() -> None:
        if sets:
            chains.append(FullChain(tuple(sets), complete))

    for line in status[-1].extra.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] in ("chain-no-sig", "chain-complete"):
            close()
            sets, complete = [], words[0] == "chain-complete"
        elif words[0] in ("full", "inc") and sets is not None and len(words) >= 3:
            sets.append(BackupSet(
                kind="full" if words[0] == "full" else "incremental",
                time=parse_duplicity_time(words[1]),
                volumes=int(words[2]),
                encrypted=len(words) < 4 or words[3] == "enc",
            ))  # fmt: skip
        elif words[0] in counts and len(words) == 2:
            counts[words[0]] = int(words[1])
    close()
    chains.sort(key=lambda chain: chain.start)
    return Collection(tuple(chains), counts["orphaned-sets-num"], counts["incomplete-sets-num"])


def parse_duplicity_time(text: str) -> datetime:
    """duplicity's time string (20261123T082642Z, always UTC) as an aware datetime."""
    return datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def verify_outcome(records: Sequence[LogRecord]) -> tuple[int | None, tuple[str, ...]]:
    """(files compared, difference messages) of a verify run; (None, ()) without a summary."""
    compared = None
    differences = []
    for record in records:
        if record.message.startswith(_DIFFERENCE):
            differences.append(record.message[len(_DIFFERENCE):].strip())
        match = _VERIFY_SUMMARY.search(record.message)
        if match:
            compared = int(match[1])
    return compared, tuple(differences)


def failure_detail(records: Sequence[LogRecord], stderr: str) -> str:
    """The one line that best says why duplicity failed: from its last ERROR record the last
    `gpg:` line of an embedded GnuPG log, else the whole message joined on one line (duplicity
    often gives the reason in its later lines); without an ERROR record, the last stderr line
    that is not part of a traceback. Cut at DETAIL_CHARS."""
    errors = [record for record in records if record.level == "ERROR"]
    line = ""
    if errors:
        lines = [text.strip() for text in errors[-1].message.splitlines() if text.strip()]
        gpg_lines = [text for text in lines if text.startswith("gpg: ")]
        line = gpg_lines[-1] if gpg_lines else " ".join(lines)
    if not line:
        for text in reversed(stderr.splitlines()):
            text = text.strip()
            if text and not text.startswith(("File ", "Traceback", "^", "~")):
                line = text
                break
    line = " ".join(line.split())
    return line if len(line) <= DETAIL_CHARS else line[: DETAIL_CHARS - 3] + "..."
