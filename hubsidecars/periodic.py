"""Run one job every N seconds until SIGTERM or SIGINT: the loop of the culler and the collector.

Passes never overlap (APScheduler, max_instances=1, coalesced ticks); a pass that raises is one
log line and the next pass runs on time; systemd hears READY=1 once the scheduler runs, each
pass's summary as STATUS=, WATCHDOG=1 from the scheduler itself (a dead scheduler stops
pinging) and STOPPING=1 when a signal asks the daemon to stop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES
from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler

from hubsidecars.errors import EXIT_FAILED, EXIT_OK
from hubsidecars.logs import log_event
from hubsidecars.notify import Notifier

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_EXECUTOR = "hubsidecars-periodic"
# APScheduler logs two INFO lines per run, watchdog pings included; our own line per pass
# replaces them, so its loggers are kept at WARNING unless the daemon logs at debug.
_SCHEDULER_LOGGER = "hubsidecars.periodic.apscheduler"


@dataclass(frozen=True)
class PassReport:
    """What a pass did: `summary` becomes the log line's summary and systemd's STATUS text;
    `ok=False` counts the pass as failed (for `--once`'s exit code); `fields` are logged too."""

    summary: str
    ok: bool = True
    fields: Mapping[str, Any] = field(default_factory=dict)


Job = Callable[[threading.Event], "PassReport | str | None"]


class PeriodicRunner:
    def __init__(
        self,
        job: Job,
        interval: float,
        *,
        name: str = "pass",
        notifier: Notifier | None = None,
        logger: logging.Logger | None = None,
        scheduler: BaseScheduler | None = None,
        stop_timeout: float = 8.0,
        misfire_grace: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`job(stop_event)` does one pass; it should check `stop_event` between steps (or sleep
        with `stop_event.wait(...)`) so that a stop request cuts a long pass short.

        `stop_timeout` bounds how long a stop waits for the running pass; a pass still running
        then is abandoned (passes run in daemon threads, so it cannot hold the process open).
        """
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.job = job
        self.interval = float(interval)
        self.name = name
        self.notifier = notifier or Notifier(None)
        self.logger = logger or logging.getLogger(__name__)
        self.stop_timeout = stop_timeout
        # APScheduler takes whole seconds here; a tick that late is still worth running.
        grace = self.interval if misfire_grace is None else misfire_grace
        self.misfire_grace = max(1, math.ceil(grace))
        self.clock = clock
        quiet = logging.getLogger(_SCHEDULER_LOGGER)
        if not self.logger.isEnabledFor(logging.DEBUG):
            quiet.setLevel(logging.WARNING)
        self.scheduler = scheduler or BackgroundScheduler(timezone=UTC, logger=quiet)
        # (a scheduler given here logs where it was told to: its logger gets the filter too)
        for target in {quiet, getattr(self.scheduler, "_logger", quiet)}:
            if isinstance(target, logging.Logger) and not any(
                    isinstance(f, _NoSkipWarnings) for f in target.filters):  # fmt: skip
                target.addFilter(_NoSkipWarnings())
        self.passes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._stop_signal: int | None = None
        # Held for the whole of a pass: the stop path acquires it to wait for the running pass.
        self._pass_lock = threading.Lock()
        # Held while pinging, and while announcing STOPPING=1: no ping can follow that.
        self._ping_lock = threading.Lock()
        self._stopping_announced = False
        # Ticks that came while a pass was still running (skipped: passes never overlap);
        # said in one line when that pass ends, not in one APScheduler warning per tick.
        self._ticks_skipped = 0

    def run_once(self) -> int:
        """One pass in this thread; EXIT_OK, or EXIT_FAILED when it raised or said not ok."""
        with self._signals_request_stop():
            ok = self._run_pass(skip_when_stopping=False)
        return EXIT_OK if ok else EXIT_FAILED

    def run_forever(self) -> int:
        """First pass now, then one every `interval` s, until SIGTERM/SIGINT or `stop()`.

        Returns EXIT_OK after a clean stop: the running pass finished, was cut short or was
        abandoned after `stop_timeout`; failed passes do not end the loop.
        """
        with self._signals_request_stop():
            self._schedule_jobs()
            # Paused until READY is out, so that the first pass's STATUS comes after READY's.
            self.scheduler.start(paused=True)
            log_event(self.logger, "started", interval_s=f"{self.interval:g}", first_pass="now",
                      watchdog_s=self.notifier.watchdog_interval)  # fmt: skip
            self.notifier.ready(f"started; first {self.name} now, then every {self.interval:g} s")
            if self.notifier.watchdog_interval:
                self.notifier.watchdog()
            self.scheduler.resume()
            self._stop.wait()
            return self._shut_down()

    def stop(self) -> None:
        """Ask the loop to stop (what SIGTERM and SIGINT do); safe from any thread."""
        self._stop.set()

    def _schedule_jobs(self) -> None:
        self.scheduler.add_executor(_DaemonThreadExecutor(_SCHEDULER_LOGGER), _EXECUTOR)
        self.scheduler.add_listener(self._tick_skipped, EVENT_JOB_MAX_INSTANCES)
        common = {"executor": _EXECUTOR, "max_instances": 1, "coalesce": True,
                  "replace_existing": True}  # fmt: skip
        self.scheduler.add_job(
            self._run_pass, "interval", seconds=self.interval, id="pass", name=self.name,
            next_run_time=datetime.now(UTC), misfire_grace_time=self.misfire_grace,
            **common,
        )  # fmt: skip
        ping_every = self.notifier.watchdog_interval
        if ping_every:
            self.scheduler.add_job(
                self._ping, "interval", seconds=ping_every, id="watchdog",
                name="watchdog", misfire_grace_time=max(1, math.ceil(ping_every)), **common,
            )  # fmt: skip

    def _tick_skipped(self, event) -> None:
        if event.job_id == "pass":
            self._ticks_skipped += 1

    def _ping(self) -> None:
        with self._ping_lock:
            if not self._stopping_announced:
                self.notifier.watchdog()

    def _run_pass(self, skip_when_stopping: bool = True) -> bool | None:
        """One pass: run the job, log one line, update STATUS. True when it went well,
        None when skipped because a stop is under way."""
        with self._pass_lock:
            if skip_when_stopping and self._stop.is_set():
                return None
            number = self.passes + 1
            started = self.clock()
            try:
                report = _as_report(self.job(self._stop))
                error = None
            except Exception as exc:
                report, error = None, exc
            duration_ms = round((self.clock() - started) * 1000)
            self.passes = number
            skipped, self._ticks_skipped = self._ticks_skipped, 0
            if skipped:
                log_event(self.logger, f"{self.name} overran its interval", logging.WARNING,
                          pass_number=number, duration_ms=duration_ms,
                          interval_s=f"{self.interval:g}", ticks_skipped=skipped)  # fmt: skip
            if report is not None and report.ok:
                log_event(self.logger, f"{self.name} done", pass_number=number,
                          duration_ms=duration_ms, summary=report.summary,
                          **report.fields)  # fmt: skip
                self.notifier.status(report.summary)
                return True
            self.failures += 1
            if report is not None:
                log_event(self.logger, f"{self.name} failed", logging.WARNING, pass_number=number,
                          duration_ms=duration_ms, failures=self.failures,
                          summary=report.summary, **report.fields)  # fmt: skip
                self.notifier.status(f"last {self.name} failed: {report.summary}")
                return False
            reason = f"{type(error).__name__}: {error}"
            # One line: the traceback rides along only when debugging.
            traceback = error if self.logger.isEnabledFor(logging.DEBUG) else None
            log_event(self.logger, f"{self.name} failed", logging.ERROR, exc_info=traceback,
                      pass_number=number, duration_ms=duration_ms, failures=self.failures,
                      error=reason)  # fmt: skip
            self.notifier.status(f"last {self.name} failed: {reason}")
            return False

    def _shut_down(self) -> int:
        signame = signal.Signals(self._stop_signal).name if self._stop_signal else None
        running = self._pass_lock.locked()
        log_event(self.logger, "stopping", signal=signame, pass_running=running)
        with self._ping_lock:  # a ping already on its way goes out first, none after
            self._stopping_announced = True
            self.notifier.stopping(f"stopping; {self.name} running" if running else "stopping")
        # No new passes and no more pings: systemd's stop timeout applies from here on.
        self.scheduler.pause()
        if self._pass_lock.acquire(timeout=self.stop_timeout):
            self._pass_lock.release()
        else:
            log_event(self.logger, f"{self.name} still running after {self.stop_timeout:g} s; "
                      "abandoning it", logging.WARNING)  # fmt: skip
        self.scheduler.shutdown(wait=False)
        log_event(self.logger, "stopped", passes=self.passes, failures=self.failures)
        return EXIT_OK

    @contextlib.contextmanager
    def _signals_request_stop(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return

        def request_stop(signum: int, frame: object) -> None:
            self._stop_signal = signum
            self._stop.set()

        previous = {signum: signal.signal(signum, request_stop) for signum in STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


class _NoSkipWarnings(logging.Filter):
    """Drops APScheduler's "maximum number of running instances reached" warning, logged
    once per tick that comes while a pass is still running: the runner says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances" not in str(record.msg)


def _as_report(result: PassReport | str | None) -> PassReport:
    if isinstance(result, PassReport):
        return result
    return PassReport("done" if result is None else str(result))


class _DaemonThreadExecutor(BaseExecutor):
    """Runs each job in a new daemon thread. APScheduler's thread pool joins its workers at
    interpreter exit, so one stuck pass would keep a stopping daemon alive past any bound."""

    def __init__(self, logger_name: str) -> None:
        super().__init__()
        self._run_logger_name = logger_name

    def _do_submit_job(self, job, run_times) -> None:
        def run() -> None:
            try:
                # _jobstore_alias is what APScheduler's own executors hand to run_job.
                events = run_job(job, job._jobstore_alias, run_times, self._run_logger_name)
            except BaseException:
                self._run_job_error(job.id, *sys.exc_info()[1:])
            else:
                self._run_job_success(job.id, events)

        threading.Thread(target=run, name=f"periodic-{job.id}", daemon=True).start()
