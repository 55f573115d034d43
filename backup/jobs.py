"""The hub-backup jobs: run, cleanup, status; each over every chain, chains side by side.

Locks: one for the whole job (run and cleanup take it: a second run waits `lock_wait` or exits
saying who holds it) and one per chain (restore, verify and drill take only that one). Both are
flock()s: the kernel drops them with the process, so a kill -9 never leaves a stale lock.
duplicity's own lock is not relied on (REALPARTS: it is broken).

Every chain's attempt is recorded before duplicity starts (`in_progress`) and after it ends:
a run killed mid-full leaves `in_progress` (and `unfinished`), which keeps cleanup away from
that chain until a later run has removed the unfinished set and made it afresh.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hubsidecars.commands import CommandError
from hubsidecars.errors import EXIT_FAILED, EXIT_OK, Busy
from hubsidecars.files import private_directory
from hubsidecars.locking import FileLock, LockTimeout
from hubsidecars.logs import log_event

from backup.chains import Chain, list_chains
from backup.selection import Selection, fingerprint
from backup.state import ChainRecord, StateStore

log = logging.getLogger("backup")

class JobBusy(Busy):
    """Another hub-backup run or cleanup holds the job lock."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


@dataclass
class ChainOutcome:
    chain: str
    user: str
    ok: bool
    action: str  # full, incremental, cleanup, skipped, would-...
    detail: str = ""
    seconds: float = 0.0


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


class BackupJobs:
    def __init__(self, settings, duplicity, encryption, *, state: StateStore | None = None,
                 now: Callable[[], datetime] = utcnow) -> None:  # fmt: skip
        self.settings = settings
        self.duplicity = duplicity
        self.encryption = encryption
        # duplicity's archive holds every home's file names and signatures, unencrypted; the
        # state directory the records: neither may be readable by other local users.
        private_directory(duplicity.archive_dir, "archive_dir")
        private_directory(settings.state_dir, "state_dir")
        self.state = state or StateStore(settings.state_dir)
        self._fingerprint = fingerprint(settings.excludes, settings.max_file_size)
        self.now = now
        locks = private_directory(Path(settings.state_dir) / "locks", "the locks directory")
        self._locks_dir = locks
        self._record_lock = threading.Lock()
        self.stopped_by: str | None = None  # the signal that stopped the job, if one did
        self._stopping = threading.Event()

    def stop(self, why: str) -> None:
        """Stop the job from a signal handler: chains not begun are not begun, the running
        duplicity processes are terminated (the next run makes their sets afresh)."""
        self.stopped_by = why
        self._stopping.set()
        self.duplicity.terminate()

    # -- locks -----------------------------------------------------------------------------

    def job_lock(self) -> FileLock:
        return FileLock(self._locks_dir / "job.lock", max(self.settings.lock_wait, 0.001))

    def chain_lock(self, chain: Chain, wait: float = 0.001) -> FileLock:
        return FileLock(self._locks_dir / f"{chain.name}.lock", wait)

    def _holding_job_lock(self, job: str, work: Callable[[], JobReport]) -> JobReport:
        try:
            with self.job_lock().held():
                return work()
        except LockTimeout:
            raise JobBusy(f"another hub-backup run or cleanup is running (lock "
                          f"{self._locks_dir / 'job.lock'}); {job} not started") from None  # fmt: skip

    # -- chains ----------------------------------------------------------------------------

    def chains(self, only: Iterable[str] | None = None) -> list[Chain]:
        known = {record.user for record in self.state.all() if record.user}
        return list_chains(self.settings.source, self.settings.target, self.settings.layout,
                           known, set(only) if only is not None else None)  # fmt: skip

    def _record(self, chain: Chain) -> ChainRecord:
        return self.state.load(chain.name) or ChainRecord(chain.name, chain.user, chain.target)

    def _side_by_side(self, chains: list[Chain], work: Callable[[Chain], ChainOutcome],
                      job: str) -> JobReport:  # fmt: skip
        report = JobReport(job)
        # A run killed with -9 leaves its gpg-agent behind, and the agent (started by
        # duplicity) holds duplicity's lock file open: the next run would fail with "another
        # duplicity instance is running". Under the job lock no duplicity of ours runs.
        self._stop_agent()

        def guarded(chain: Chain) -> ChainOutcome:
            if self._stopping.is_set():
                return ChainOutcome(chain.name, chain.user, True, "skipped",
                                    f"not begun: hub-backup was stopped ({self.stopped_by})")
            # One chain's surprise (its record cannot be saved on a full disk, ...) is that
            # chain's failed line, never a traceback that loses the other chains' outcomes.
            try:
                return work(chain)
            except OSError as error:
                line = f"{job} stopped: {error.strerror or error} ({error.filename or ''})"
                log_event(log, f"{job} failed", logging.ERROR, chain=chain.name, error=line)
                return ChainOutcome(chain.name, chain.user, False, "failed", line)

        with ThreadPoolExecutor(max_workers=self.settings.parallelism,
                                thread_name_prefix=job) as pool:  # fmt: skip
            report.outcomes = list(pool.map(guarded, chains))
        self._stop_agent()
        return report

    def _stop_agent(self) -> None:
        try:
            self.duplicity.stop_agent()
        except Exception as error:  # noqa: BLE001 - a leftover agent is not worth failing for
            log_event(log, "could not stop gpg-agent", logging.WARNING, error=str(error))

    # -- run -------------------------------------------------------------------------------

    def run(self, only: Iterable[str] | None = None, *, full: bool = False,
            on_start: Callable[[], None] | None = None) -> JobReport:  # fmt: skip
        """Back up every chain (or `only` those users'); `full`: a new full chain for each,
        whatever is due (after a scare, before a migration). `on_start` is called once the
        job lock is held (a run that finds another running never starts)."""

        def work() -> JobReport:
            if on_start is not None:
                on_start()
            return self._run_chains(only, full)

        return self._holding_job_lock("run", work)

    def _run_chains(self, only: Iterable[str] | None, full: bool = False) -> JobReport:
        chains = self.chains(only)
        if self.settings.layout == "per-user" and chains and not any(c.present for c in chains):
            # Every home gone at once is a /home that is not mounted, not a mass deletion:
            # skipping them all would make the run (and its unit) a success that saved nothing.
            report = JobReport("run")
            report.outcomes = [ChainOutcome(
                chain.name, chain.user, False, "failed",
                f"the source {self.settings.source} holds no home at all (not mounted?); "
                "nothing backed up") for chain in chains]  # fmt: skip
            log_event(log, "source holds no home", logging.ERROR, source=self.settings.source,
                      chains=len(chains))  # fmt: skip
            return report
        return self._side_by_side(chains, lambda chain: self._backup_chain(chain, full), "run")

    def _backup_chain(self, chain: Chain, full: bool = False) -> ChainOutcome:
        if not chain.present:
            return ChainOutcome(chain.name, chain.user, True, "skipped",
                                "home gone; its backups are kept for cleanup to judge")  # fmt: skip
        if self.settings.dry_run:
            record = self._record(chain)
            kind = "full" if full or self._full_due(record) else "incremental"
            log_event(log, "would back up", chain=chain.name, kind=kind, target=chain.target)
            return ChainOutcome(chain.name, chain.user, True, f"would-{kind}")
        try:
            with self.chain_lock(chain).held():
                return self._backup_locked(chain, full)
        except LockTimeout:
            return ChainOutcome(chain.name, chain.user, False, "skipped",
                                "its chain is locked by a restore, verify or drill")  # fmt: skip

    def _unchanged(self, chain: Chain, record: ChainRecord) -> bool:
        """True when the last backup succeeded whole, no full is due, and no file or directory
        of the home (outside the excludes) was modified, created, renamed, deleted or had its
        mode or owner changed since that backup began (ctime moves on each of those and
        cannot be set back by a user)."""
        if not (self.settings.skip_unchanged and record.succeeded_last and not record.error
                and record.last_success and record.last_success_end
                and not self._full_due(record)):  # fmt: skip
            return False
        # duplicity still runs at least every max_age / 2, so that a target gone bad is found
        # (and status turns stale) even for a home nobody touches.
        contact = (self.now() - datetime.fromisoformat(record.last_success_end)).total_seconds()
        if contact >= self.settings.max_age / 2:
            return False
        if record.selection != self._fingerprint:
            return False  # backed up under other excludes or size limit: not as now configured
        since = datetime.fromisoformat(record.last_success).timestamp()
        return not self._selection(chain).changed_since(since)

    def _selection(self, chain: Chain) -> Selection:
        return Selection(chain.source, self.settings.excludes,
                         self.settings.max_file_size * 1024 * 1024)  # fmt: skip

    def _excludes(self, chain: Chain, log_left_out: bool = False) -> list[str]:
        """duplicity's --exclude patterns for `chain`: the configured ones, and each file
        too big to back up (Selection.left_out) or past the home's budget, named literally."""
        return self._plan(chain, log_left_out)[0]

    def _plan(self, chain: Chain, log_left_out: bool = False) -> tuple[list[str], str | None]:
        """The --exclude patterns, and a line saying which files the home's budget left out
        (None when it fits)."""
        selection = self._selection(chain)
        budget = self.settings.home_budget * 1024 * 1024 if chain.user else 0
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
                    f"{self.settings.home_budget} MB; {len(dropped)} of the biggest left "
                    f"out: {biggest}")[:500]  # fmt: skip
            if log_left_out:
                log_event(log, "home over its budget: biggest files left out", logging.WARNING,
                          chain=chain.name, bytes=total, budget=budget, left_out=len(dropped),
                          biggest=biggest)  # fmt: skip
            left_out += [relative for relative, _ in dropped]
        return selection.duplicity_excludes(left_out), over

    def _full_due(self, record: ChainRecord) -> bool:
        if not record.newest_full:
            return True
        age = (self.now() - datetime.fromisoformat(record.newest_full)).total_seconds()
        return age >= self.settings.full_every

    def _backup_locked(self, chain: Chain, full: bool = False) -> ChainOutcome:
        record = self._record(chain)
        started = self.now()
        behind = _clock_behind(record, started)
        if behind:
            # duplicity would write a set older than the chain's newest, which belongs to no
            # chain, and call it good
            record.error = behind
            self.state.save(record)
            log_event(log, "host clock behind the newest backup: not backed up", logging.ERROR,
                      chain=chain.name, error=behind)  # fmt: skip
            return ChainOutcome(chain.name, chain.user, False, "failed", behind)
        owner = _home_owner(chain)
        handed_over = None not in (owner, record.owner_uid) and owner != record.owner_uid
        if handed_over:
            # The new owner's backups start afresh, and a restore of a time before this one
            # (the previous person's files) is refused unless asked for by name.
            record.owner_since = iso(started)
            log_event(log, "home now belongs to another uid: starting a new full chain",
                      logging.WARNING, chain=chain.name, user=chain.user, uid=owner,
                      was=record.owner_uid)  # fmt: skip
        elif not full and self._unchanged(chain, record):
            # Nothing in the home changed since its last backup: that backup is still the
            # home as it is, so it counts as this hour's. An unchanged incremental would cost
            # duplicity's full start-up and five gpg runs (about 1.2 CPU s per home, measured)
            # and add an empty set to the chain every hour.
            record.last_attempt = record.last_success = iso(started)
            record.last_kind, record.last_bytes = "unchanged", 0
            record.last_duration_s = round((self.now() - started).total_seconds(), 3)
            record.history.append({"at": record.last_attempt, "kind": "unchanged", "ok": True,
                                   "seconds": record.last_duration_s, "bytes": 0})  # fmt: skip
            self.state.save(record)
            log_event(log, "unchanged since its last backup", chain=chain.name,
                      seconds=record.last_duration_s)  # fmt: skip
            return ChainOutcome(chain.name, chain.user, True, "unchanged",
                                seconds=record.last_duration_s)  # fmt: skip
        if record.unfinished or record.in_progress or self.duplicity.partial_files(chain.name):
            # Never let duplicity resume a set: a resumed set skips what sorts before the
            # point it was cut at, and a later restore lacks files or brings back old ones.
            record.last_attempt = iso(started)
            try:
                gone = self.duplicity.discard_partial(chain.target, name=chain.name,
                                                      encryption=self.encryption)  # fmt: skip
            except CommandError as error:
                return self._failed(record, chain, started, error,
                                    "could not remove the set the last run left unfinished: ")
            log_event(log, "removed the set the last run left unfinished; making it afresh",
                      logging.WARNING, chain=chain.name, files=len(gone))  # fmt: skip
        record.last_attempt = iso(started)
        record.in_progress = record.unfinished = True
        self.state.save(record)
        excludes, over_budget = self._plan(chain, log_left_out=True)
        try:
            result = self.duplicity.backup(
                chain.source, chain.target, name=chain.name, encryption=self.encryption,
                full=handed_over or full, full_if_older_than=self.settings.full_every,
                excludes=excludes,
            )  # fmt: skip
        except CommandError as error:
            return self._failed(record, chain, started, error)
        finished = self.now()
        kind = result.kind or ("full" if self._full_due(record) else "incremental")
        record.in_progress = record.unfinished = False
        record.owner_uid = owner
        record.last_kind = kind
        record.last_duration_s = round((finished - started).total_seconds(), 3)
        record.last_bytes = result.bytes
        record.exit_code, record.meaning = result.exit_code, result.meaning
        if kind == "full":
            # the set is in the target, and duplicity counts it as a full chain, complete or not
            record.newest_full = record.last_attempt
            record.incrementals = 0
            record.fulls = [*record.fulls, record.last_attempt]
        else:
            record.incrementals += 1
        record.incomplete = bool(result.errors or over_budget)
        if over_budget and not result.errors:
            # the home's biggest files were left out on purpose, so that it cannot hold up
            # everyone else: incomplete all the same, until its owner or the admin acts
            record.error = (f"incomplete: {over_budget} (the last complete backup: "
                            f"{record.last_success or 'none'})")[:500]  # fmt: skip
            record.history.append({"at": record.last_attempt, "kind": kind, "ok": False,
                                   "incomplete": True, "seconds": record.last_duration_s,
                                   "bytes": result.bytes, "error": record.error})  # fmt: skip
            self.state.save(record)
            log_event(log, "backed up incompletely", logging.ERROR, chain=chain.name, kind=kind,
                      reason=over_budget)  # fmt: skip
            return ChainOutcome(chain.name, chain.user, False, "incomplete", record.error,
                                record.last_duration_s)  # fmt: skip
        if result.errors:
            # duplicity finished the set, but files are missing from it (root without its read
            # powers, an NFS home with root_squash, an I/O error): no success. last_success and
            # the set time a default restore and the drill use stay at the last complete
            # backup, and cleanup leaves the chain alone until a complete one follows.
            first = result.unreadable[0] if result.unreadable else "see duplicity's log"
            record.error = (f"incomplete: {result.errors} file(s) could not be read and are not "
                            f"in this backup (the last complete one: "
                            f"{record.last_success or 'none'}); first: {first}")[:500]  # fmt: skip
            record.history.append({"at": record.last_attempt, "kind": kind, "ok": False,
                                   "incomplete": True, "seconds": record.last_duration_s,
                                   "bytes": result.bytes, "error": record.error})  # fmt: skip
            self.state.save(record)
            log_event(log, "backed up incompletely", logging.ERROR, chain=chain.name, kind=kind,
                      unreadable=result.errors, first=first)  # fmt: skip
            return ChainOutcome(chain.name, chain.user, False, "incomplete", record.error,
                                record.last_duration_s)  # fmt: skip
        record.last_success = record.last_attempt
        record.last_success_end = iso(finished)
        record.last_set_time = result.set_time
        record.selection = self._fingerprint
        record.error = None
        record.history.append({"at": record.last_attempt, "kind": kind, "ok": True,
                               "seconds": record.last_duration_s, "bytes": result.bytes})  # fmt: skip
        self.state.save(record)
        log_event(log, "backed up", chain=chain.name, kind=kind,
                  seconds=record.last_duration_s, bytes=result.bytes)  # fmt: skip
        return ChainOutcome(chain.name, chain.user, True, kind, seconds=record.last_duration_s)

    def _failed(self, record: ChainRecord, chain: Chain, started: datetime,
                error: CommandError, doing: str = "") -> ChainOutcome:  # fmt: skip
        record.in_progress = False
        record.exit_code = getattr(error, "exit_code", None)
        record.meaning = getattr(error, "meaning", None)
        record.error = (doing + str(error).splitlines()[0])[:500]
        record.last_duration_s = round((self.now() - started).total_seconds(), 3)
        record.history.append({"at": record.last_attempt, "ok": False, "error": record.error})
        self.state.save(record)
        log_event(log, "backup failed", logging.ERROR, chain=chain.name, error=record.error)
        return ChainOutcome(chain.name, chain.user, False, "failed", record.error,
                            record.last_duration_s)  # fmt: skip

    # -- cleanup ---------------------------------------------------------------------------

    def cleanup(self, only: Iterable[str] | None = None) -> JobReport:
        return self._holding_job_lock("cleanup", lambda: self._side_by_side(
            self.chains(only), self._cleanup_chain, "cleanup"))

    def _cleanup_chain(self, chain: Chain) -> ChainOutcome:
        record = self.state.load(chain.name)
        if record is None or not record.succeeded_last:
            why = "never backed up" if record is None else (
                "its last backup did not complete" if record.in_progress
                else "its last backup was incomplete"
                if record.incomplete else "its last backup failed")  # fmt: skip
            log_event(log, "cleanup skipped", chain=chain.name, reason=why)
            return ChainOutcome(chain.name, chain.user, True, "skipped", why)
        dry = self.settings.dry_run
        try:
            with self.chain_lock(chain).held():
                keep = self.settings.keep_full
                self.duplicity.remove_all_but_n_full(chain.target, keep, name=chain.name,
                                                     encryption=self.encryption, dry_run=dry)  # fmt: skip
                self.duplicity.cleanup(chain.target, name=chain.name, encryption=self.encryption,
                                       dry_run=dry)  # fmt: skip
        except LockTimeout:
            return ChainOutcome(chain.name, chain.user, False, "skipped",
                                "its chain is locked by a restore, verify or drill")  # fmt: skip
        except CommandError as error:
            line = str(error).splitlines()[0][:500]
            log_event(log, "cleanup failed", logging.ERROR, chain=chain.name, error=line)
            return ChainOutcome(chain.name, chain.user, False, "failed", line)
        if not dry:
            record = self.state.load(chain.name) or record
            record.last_cleanup = iso(self.now())
            record.fulls = record.fulls[-self.settings.keep_full:]
            self.state.save(record)
        log_event(log, "cleaned up" if not dry else "would clean up", chain=chain.name,
                  keep_full=self.settings.keep_full)  # fmt: skip
        return ChainOutcome(chain.name, chain.user, True, "would-cleanup" if dry else "cleanup")

    # -- verify and drill ----------------------------------------------------------------

    def verify(self, only: Iterable[str] | None = None) -> JobReport:
        """Every chain's latest backup against its home (duplicity verify --compare-data).
        Files changed since that backup show as differences too."""
        return self._holding_job_lock("verify", lambda: self._side_by_side(
            [c for c in self.chains(only) if c.present], self._verify_chain, "verify"))

    def _verify_chain(self, chain: Chain) -> ChainOutcome:
        try:
            with self.chain_lock(chain, 60).held():
                result = self.duplicity.verify(
                    chain.source, chain.target, name=chain.name, encryption=self.encryption,
                    excludes=self._excludes(chain),
                )  # fmt: skip
        except (LockTimeout, CommandError) as error:
            line = str(error).splitlines()[0][:500]
            log_event(log, "verify failed", logging.ERROR, chain=chain.name, error=line)
            return ChainOutcome(chain.name, chain.user, False, "failed", line)
        if result.exit_code == 0:
            log_event(log, "verified", chain=chain.name, compared=result.compared)
            return ChainOutcome(chain.name, chain.user, True, "verified",
                                f"{result.compared} file(s) compared")  # fmt: skip
        first = result.differences[0] if result.differences else ""
        detail = (f"{len(result.differences)} difference(s) with the home (files changed since "
                  f"the backup count too); first: {first}")  # fmt: skip
        log_event(log, "verify found differences", logging.WARNING, chain=chain.name,
                  differences=len(result.differences))  # fmt: skip
        return ChainOutcome(chain.name, chain.user, False, "differences", detail[:500])

    def drill(self, only: Iterable[str] | None = None) -> JobReport:
        """Restore a sample of files of every chain into a temporary directory and compare
        them with the home (content, mode, owner): the files that have not changed since the
        chain's last successful backup."""
        return self._holding_job_lock("drill", lambda: self._side_by_side(
            [c for c in self.chains(only) if c.present], self._drill_chain, "drill"))

    def _drill_chain(self, chain: Chain) -> ChainOutcome:
        import random
        import shutil
        import tempfile

        record = self.state.load(chain.name)
        if record is None or not record.last_success:
            return ChainOutcome(chain.name, chain.user, False, "failed", "never backed up")
        since = datetime.fromisoformat(record.last_success).timestamp() - 2
        # after a failed or killed run, "latest" would include its half-written set
        complete_time = None if record.succeeded_last else record.complete_time
        selection = self._selection(chain)
        budget = self.settings.home_budget * 1024 * 1024
        over = {relative for relative, _ in selection.over_budget(budget)[2]} \
            if budget and chain.user else set()  # fmt: skip
        candidates = sorted(set(selection.unchanged_files(since)) - over)
        sample = random.Random(f"{chain.name}:{record.last_success}").sample(
            candidates, min(self.settings.drill_files, len(candidates)))  # fmt: skip
        problems = []
        scratch = tempfile.mkdtemp(prefix=f"hub-backup-drill-{chain.name}-",
                                   dir=self.settings.state_dir)  # fmt: skip
        try:
            with self.chain_lock(chain, 60).held():
                for number, relative in enumerate(sample):
                    restored = Path(scratch) / str(number)
                    # relative to the chain's source: the home, or the root in the single layout
                    self.duplicity.restore(chain.target, str(restored), name=chain.name,
                                           encryption=self.encryption, path=relative,
                                           time=complete_time)  # fmt: skip
                    problem = _same_file(Path(chain.source) / relative, restored)
                    if problem:
                        problems.append(f"{relative}: {problem}")
        except (LockTimeout, CommandError) as error:
            line = str(error).splitlines()[0][:500]
            log_event(log, "drill failed", logging.ERROR, chain=chain.name, error=line)
            if not isinstance(error, LockTimeout):
                self._note_drill(chain, False, line)
            return ChainOutcome(chain.name, chain.user, False, "failed", line)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self._note_drill(chain, not problems,
                         f"{len(problems)} of {len(sample)} differ" if problems else
                         f"{len(sample)} file(s) identical")  # fmt: skip
        if problems:
            log_event(log, "drill found differences", logging.ERROR, chain=chain.name,
                      files=len(sample), problems=len(problems), first=problems[0])  # fmt: skip
            return ChainOutcome(chain.name, chain.user, False, "differences",
                                f"{len(problems)} of {len(sample)} restored file(s) differ; "
                                f"first: {problems[0]}"[:500])  # fmt: skip
        log_event(log, "drill passed", chain=chain.name, files=len(sample))
        return ChainOutcome(chain.name, chain.user, True, "drilled",
                            f"{len(sample)} file(s) restored and identical")  # fmt: skip

    def _note_drill(self, chain: Chain, ok: bool, detail: str) -> None:
        """The drill holds the job lock: no run rewrites this record meanwhile."""
        record = self._record(chain)
        record.last_drill, record.drill_ok, record.drill_detail = iso(self.now()), ok, detail
        self.state.save(record)

    def restore(self, user: str, path: str | None, *, time: str | None, to: str | None,
                in_place: bool, previous_owner: bool = False) -> int:  # fmt: skip
        from backup.restore import restore

        return restore(self, user, path, time=time, to=to, in_place=in_place,
                       previous_owner=previous_owner)  # fmt: skip

    # -- status ----------------------------------------------------------------------------

    def _job_running(self) -> bool:
        """True while a run, cleanup, verify or drill holds the job lock. Read from /proc/locks:
        taking the lock, even for a moment, would make a run starting then exit busy."""
        from backup.duplicity import lock_holder

        return lock_holder(str(self._locks_dir / "job.lock"), "FLOCK") is not None

    def status(self) -> list[dict]:
        """Per chain, from the records (no network): newest full, incrementals since, last
        success and its age, last error; `stale` when older than max_age or never."""
        now = self.now()
        rows = []
        running = self._job_running()
        for chain in self.chains():
            record = self.state.load(chain.name)
            success = record.last_success if record else None
            age = (now - datetime.fromisoformat(success)).total_seconds() if success else None
            # a removed user's kept backups are history, not a backup falling behind
            stale = chain.present and (age is None or age > self.settings.max_age)
            rows.append({
                "user": chain.user, "chain": chain.name, "target": chain.target,
                "home_present": chain.present,
                "newest_full": record.newest_full if record else None,
                "incrementals": record.incrementals if record else 0,
                "full_chains": len(record.fulls) if record else 0,
                "last_success": success,
                "age_s": None if age is None else round(age),
                "last_attempt": record.last_attempt if record else None,
                "last_attempt_ok": bool(record and record.succeeded_last and not record.error),
                "last_duration_s": record.last_duration_s if record else None,
                "last_bytes": record.last_bytes if record else None,
                "last_drill": record.last_drill if record else None,
                "drill_ok": record.drill_ok if record else None,
                "last_error": record.error if record else None,
                "in_progress": bool(record and record.in_progress),
                "owner_uid": record.owner_uid if record else None,
                "stale": stale,
                "incomplete": bool(record and record.incomplete),
                "problem": _problem(record, stale, running),
            })  # fmt: skip
        return rows


def _clock_behind(record: ChainRecord, now: datetime) -> str | None:
    """A line naming the host clock when it is behind the chain's newest set (or the last
    attempt, whose set may be in the target too); None when it is not."""
    moments = [record.last_set_time, record.last_attempt]
    newest = max((datetime.fromisoformat(m) for m in moments if m), default=None)
    if newest is None or now >= newest:
        return None
    return (f"the host clock ({iso(now)}) is behind the newest backup of this chain "
            f"({iso(newest)}): it went backwards; fix the clock (timedatectl, NTP) before "
            "backing up again")


def _problem(record: ChainRecord | None, stale: bool, running: bool) -> str | None:
    """What an admin must look at for this chain, in one line; None when nothing. Any of: no
    success within max_age, a last attempt that failed, was incomplete or was killed (in
    progress while no run holds the job lock), a failed drill."""
    problems = []
    if stale:
        problems.append("stale: no backup within max_age" if record and record.last_success
                        else "stale: never backed up")  # fmt: skip
    if record and record.last_attempt and not record.in_progress and not (
            record.succeeded_last and not record.error):  # fmt: skip
        problems.append(record.error if record.incomplete and record.error else
                        f"last backup failed: {record.error or 'no detail'}")  # fmt: skip
    if record and record.in_progress and not running:
        problems.append("last backup interrupted: hub-backup was killed during it")
    if record and record.last_drill and record.drill_ok is False:
        problems.append(f"last drill failed: {record.drill_detail or 'no detail'}")
    return "; ".join(problems)[:600] if problems else None


def _home_owner(chain: Chain) -> int | None:
    """The uid owning a per-user chain's home (None for the single layout, or unreadable)."""
    if not chain.user:
        return None
    try:
        return os.lstat(chain.source).st_uid
    except OSError:
        return None


def _same_file(original: Path, restored: Path) -> str:
    """'' when the restored file has the original's content, mode and owner."""
    try:
        want, got = original.lstat(), restored.lstat()
    except OSError as error:
        return f"missing after restore ({error.strerror})"
    if (want.st_mode, want.st_uid, want.st_gid) != (got.st_mode, got.st_uid, got.st_gid):
        return (f"mode/owner {oct(got.st_mode)} {got.st_uid}:{got.st_gid}, expected "
                f"{oct(want.st_mode)} {want.st_uid}:{want.st_gid}")  # fmt: skip
    if original.read_bytes() != restored.read_bytes():
        return "content differs"
    return ""
