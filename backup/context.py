"""What every hub-backup action works with: the settings it needs as typed values (JobOptions),
the duplicity adapter and the encryption, the chain records, the locks and the clock
(JobContext); and what an action says of one chain (ChainOutcome) and of a job (JobReport).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from backup.chains import Chain, list_chains
from backup.duplicity import Duplicity, Encryption
from backup.selection import Selection, fingerprint
from backup.state import ChainRecord, StateStore
from hubsidecars.errors import EXIT_FAILED, EXIT_OK
from hubsidecars.files import private_directory
from hubsidecars.locking import FileLock
from hubsidecars.logs import log_event

log = logging.getLogger("backup")


@dataclass(frozen=True)
class JobOptions:
    """The settings the actions read (backup.settings.BackupSettings declares and checks
    them; sizes in MB, durations in seconds)."""

    source: str
    target: str
    layout: str
    state_dir: str
    dry_run: bool
    parallelism: int
    lock_wait: float
    full_every: float
    max_age: float
    skip_unchanged: bool
    excludes: tuple[str, ...]
    max_file_size: int
    home_budget: int
    keep_full: int
    drill_files: int

    @classmethod
    def from_settings(cls, settings) -> JobOptions:
        return cls(
            source=settings.source, target=settings.target, layout=settings.layout,
            state_dir=settings.state_dir, dry_run=settings.dry_run,
            parallelism=settings.parallelism, lock_wait=settings.lock_wait,
            full_every=settings.full_every, max_age=settings.max_age,
            skip_unchanged=settings.skip_unchanged, excludes=tuple(settings.excludes),
            max_file_size=settings.max_file_size, home_budget=settings.home_budget,
            keep_full=settings.keep_full, drill_files=settings.drill_files,
        )  # fmt: skip


@dataclass
class ChainOutcome:
    chain: str
    user: str
    ok: bool
    action: str  # full, incremental, cleanup, skipped, would-...
    detail: str = ""
    seconds: float = 0.0

    @classmethod
    def of(cls, chain: Chain, ok: bool, action: str, detail: str = "",
           seconds: float = 0.0) -> ChainOutcome:  # fmt: skip
        return cls(chain.name, chain.user, ok, action, detail, seconds)


@dataclass
class JobReport:
    job: str
    outcomes: list[ChainOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[ChainOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.failed else EXIT_OK

    def summary(self) -> str:
        done = sum(1 for outcome in self.outcomes if outcome.ok)
        return f"{self.job}: {done} chain(s) ok, {len(self.failed)} failed"


@dataclass
class JobContext:
    """Everything an action needs, and nothing of the settings it does not (`now` is the
    clock, replaceable in tests)."""

    options: JobOptions
    duplicity: Duplicity
    encryption: Encryption
    state: StateStore
    now: Callable[[], datetime]
    locks_dir: Path

    @classmethod
    def create(cls, options: JobOptions, duplicity: Duplicity, encryption: Encryption, *,
               state: StateStore | None, now: Callable[[], datetime]) -> JobContext:  # fmt: skip
        # duplicity's archive holds every home's file names and signatures, unencrypted; the
        # state directory the records: neither may be readable by other local users.
        private_directory(duplicity.archive_dir, "archive_dir")
        private_directory(options.state_dir, "state_dir")
        state = state or StateStore(options.state_dir)
        locks = private_directory(Path(options.state_dir) / "locks", "the locks directory")
        return cls(options, duplicity, encryption, state, now, locks)

    # -- chains and their records ----------------------------------------------------------

    def chains(self, only: Iterable[str] | None = None) -> list[Chain]:
        known = {record.user for record in self.state.all() if record.user}
        return list_chains(self.options.source, self.options.target, self.options.layout,
                           known, set(only) if only is not None else None)  # fmt: skip

    def record(self, chain: Chain) -> ChainRecord:
        return self.state.load(chain.name) or ChainRecord(chain.name, chain.user, chain.target)

    # -- locks -----------------------------------------------------------------------------

    @property
    def job_lock_path(self) -> Path:
        return self.locks_dir / "job.lock"

    def job_lock(self) -> FileLock:
        return FileLock(self.job_lock_path, max(self.options.lock_wait, 0.001))

    def chain_lock(self, chain: Chain, wait: float = 0.001) -> FileLock:
        return FileLock(self.locks_dir / f"{chain.name}.lock", wait)

    # -- what of a home is backed up -------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.options.excludes, self.options.max_file_size)

    def selection(self, chain: Chain) -> Selection:
        return Selection(chain.source, self.options.excludes,
                         self.options.max_file_size * 1024 * 1024)  # fmt: skip

    def excludes(self, chain: Chain) -> list[str]:
        """duplicity's --exclude patterns for `chain`: the configured ones, and each file
        too big to back up (Selection.left_out) or past the home's budget, named literally."""
        return self.plan(chain)[0]

    def plan(self, chain: Chain, log_left_out: bool = False) -> tuple[list[str], str | None]:
        """The --exclude patterns, and a line saying which files the home's budget left out
        (None when it fits)."""
        selection = self.selection(chain)
        budget = self.options.home_budget * 1024 * 1024 if chain.user else 0
        too_big, total, dropped = selection.over_budget(budget)
        if log_left_out:
            for relative, size in too_big:
                log_event(log, "file left out of the backup: too big, or a sparse giant",
                          logging.WARNING, chain=chain.name, path=relative, bytes=size)  # fmt: skip
        left_out = [relative for relative, _ in too_big]
        over = None
        if dropped:
            biggest = ", ".join(f"{relative} ({size / 2**20:.0f} MB)"
                                for relative, size in dropped[:5])  # fmt: skip
            over = (f"over its budget: {total / 2**20:.0f} MB of files, home_budget "
                    f"{self.options.home_budget} MB; {len(dropped)} of the biggest left "
                    f"out: {biggest}")[:500]  # fmt: skip
            if log_left_out:
                log_event(log, "home over its budget: biggest files left out", logging.WARNING,
                          chain=chain.name, bytes=total, budget=budget, left_out=len(dropped),
                          biggest=biggest)  # fmt: skip
            left_out += [relative for relative, _ in dropped]
        return selection.duplicity_excludes(left_out), over

    def full_due(self, record: ChainRecord) -> bool:
        if not record.newest_full:
            return True
        age = (self.now() - datetime.fromisoformat(record.newest_full)).total_seconds()
        return age >= self.options.full_every

    def seconds_since(self, started: datetime) -> float:
        return round((self.now() - started).total_seconds(), 3)
