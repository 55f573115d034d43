"""The hub-backup jobs: each action (backup.actions) over every chain, chains side by side.

Locks: one for the whole job (run and cleanup take it: a second run waits `lock_wait` or exits
saying who holds it) and one per chain (restore, verify and drill take only that one). Both are
flock()s: the kernel drops them with the process, so a kill -9 never leaves a stale lock.
duplicity's own lock is not relied on (REALPARTS: it is broken).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from backup.actions import cleanup as cleanup_action
from backup.actions import drill as drill_action
from backup.actions import restore as restore_action
from backup.actions import run as run_action
from backup.actions import status as status_action
from backup.actions import verify as verify_action
from backup.chains import Chain
from backup.context import ChainOutcome, JobContext, JobOptions, JobReport
from backup.duplicity import Duplicity, Encryption
from backup.hooks import HookOptions
from backup.state import StateStore
from hubsidecars.clock import utcnow
from hubsidecars.errors import Busy
from hubsidecars.locking import FileLock, LockTimeout
from hubsidecars.logs import log_event

__all__ = ["BackupJobs", "ChainOutcome", "JobBusy", "JobReport", "Reporting"]

log = logging.getLogger("backup")


class JobBusy(Busy):
    """Another hub-backup run or cleanup holds the job lock."""


@dataclass(frozen=True)
class Reporting:
    """What the command does around a job: the metrics file written after it ("": none) and
    the monitoring hooks of a run."""

    metrics_file: str = ""
    hooks: HookOptions | None = None


class BackupJobs:
    def __init__(self, options: JobOptions, duplicity: Duplicity, encryption: Encryption, *,
                 reporting: Reporting = Reporting(), state: StateStore | None = None,
                 now: Callable[[], datetime] = utcnow) -> None:  # fmt: skip
        self.context = JobContext.create(options, duplicity, encryption, state=state, now=now)
        self.reporting = reporting
        self.stopped_by: str | None = None  # the signal that stopped the job, if one did
        self._stopping = threading.Event()

    # what the command line and the tests reach through the jobs
    options = property(lambda self: self.context.options)
    duplicity = property(lambda self: self.context.duplicity)
    encryption = property(lambda self: self.context.encryption)
    state = property(lambda self: self.context.state)

    @property
    def now(self) -> Callable[[], datetime]:
        return self.context.now

    @now.setter
    def now(self, clock: Callable[[], datetime]) -> None:
        self.context.now = clock

    def chains(self, only: Iterable[str] | None = None) -> list[Chain]:
        return self.context.chains(only)

    def job_lock(self) -> FileLock:
        return self.context.job_lock()

    def chain_lock(self, chain: Chain, wait: float = 0.001) -> FileLock:
        return self.context.chain_lock(chain, wait)

    def stop(self, why: str) -> None:
        """Stop the job from a signal handler: chains not begun are not begun, the running
        duplicity processes are terminated (the next run makes their sets afresh)."""
        self.stopped_by = why
        self._stopping.set()
        self.duplicity.terminate()

    # -- the actions -----------------------------------------------------------------------

    def run(self, only: Iterable[str] | None = None, *, full: bool = False,
            on_start: Callable[[], None] | None = None) -> JobReport:  # fmt: skip
        """Back up every chain (or `only` those users'); `full`: a new full chain for each,
        whatever is due (after a scare, before a migration). `on_start` is called once the
        job lock is held (a run that finds another running never starts)."""

        def work() -> JobReport:
            if on_start is not None:
                on_start()
            chains = self.chains(only)
            missing = run_action.source_missing(self.context, chains)
            if missing is not None:
                return JobReport("run", missing)
            return self._side_by_side(
                chains, lambda chain: run_action.backup_chain(self.context, chain, full), "run")

        return self._holding_job_lock("run", work)

    def cleanup(self, only: Iterable[str] | None = None) -> JobReport:
        return self._each("cleanup", lambda: self.chains(only), cleanup_action.cleanup_chain)

    def verify(self, only: Iterable[str] | None = None) -> JobReport:
        """Every chain's latest backup against its home."""
        return self._each("verify", lambda: self._present(only), verify_action.verify_chain)

    def drill(self, only: Iterable[str] | None = None) -> JobReport:
        """A sample of every chain's files restored and compared with the home."""
        return self._each("drill", lambda: self._present(only), drill_action.drill_chain)

    def status(self) -> list[dict]:
        return status_action.status_rows(self.context)

    def restore(self, user: str, path: str | None, *, time: str | None, to: str | None,
                in_place: bool, previous_owner: bool = False) -> int:  # fmt: skip
        """backup.actions.restore.restore; returns 0, the command's exit code (what was
        restored where is logged; the command line prints it from the action's result)."""
        restore_action.restore(self.context, user, path, time=time, to=to, in_place=in_place,
                               previous_owner=previous_owner)  # fmt: skip
        return 0

    # -- over the chains, under the job lock -----------------------------------------------

    def _present(self, only: Iterable[str] | None) -> list[Chain]:
        return [chain for chain in self.chains(only) if chain.present]

    def _each(self, job: str, chains: Callable[[], list[Chain]],
              action: Callable[[JobContext, Chain], ChainOutcome]) -> JobReport:  # fmt: skip
        """`action` over `chains` (listed once the job lock is held), side by side."""
        return self._holding_job_lock(job, lambda: self._side_by_side(
            chains(), lambda chain: action(self.context, chain), job))  # fmt: skip

    def _holding_job_lock(self, job: str, work: Callable[[], JobReport]) -> JobReport:
        try:
            with self.context.job_lock().held():
                return work()
        except LockTimeout:
            raise JobBusy(f"another hub-backup run or cleanup is running (lock "
                          f"{self.context.job_lock_path}); {job} not started") from None  # fmt: skip

    def _side_by_side(self, chains: list[Chain], work: Callable[[Chain], ChainOutcome],
                      job: str) -> JobReport:  # fmt: skip
        report = JobReport(job)
        # A run killed with -9 leaves its gpg-agent behind, and the agent (started by
        # duplicity) holds duplicity's lock file open: the next run would fail with "another
        # duplicity instance is running". Under the job lock no duplicity of ours runs.
        self._stop_agent()

        def guarded(chain: Chain) -> ChainOutcome:
            if self._stopping.is_set():
                return ChainOutcome.of(chain, True, "skipped",
                                       f"not begun: hub-backup was stopped ({self.stopped_by})")
            # One chain's surprise (its record cannot be saved on a full disk, ...) is that
            # chain's failed line, never a traceback that loses the other chains' outcomes.
            try:
                return work(chain)
            except OSError as error:
                line = f"{job} stopped: {error.strerror or error} ({error.filename or ''})"
                return ChainOutcome.of(chain, False, "failed", line)

        with ThreadPoolExecutor(max_workers=self.options.parallelism,
                                thread_name_prefix=job) as pool:  # fmt: skip
            report.outcomes = list(pool.map(guarded, chains))
        self._stop_agent()
        return report

    def _stop_agent(self) -> None:
        try:
            self.duplicity.stop_agent()
        except Exception as error:  # noqa: BLE001 - a leftover agent is not worth failing for
            log_event(log, "could not stop gpg-agent", logging.WARNING, error=str(error))
