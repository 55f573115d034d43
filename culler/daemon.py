"""One culler pass over every backend, and what it leaves behind (status file, metrics)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from culler import report
from culler.outcomes import PassResult
from hubsidecars.clock import utcnow
from hubsidecars.hubapi import HubError
from hubsidecars.logs import log_event
from hubsidecars.periodic import PassReport

log = logging.getLogger("culler")


class CullerJob:
    """The periodic job: the hub backend first (its servers tell the Docker backend which
    containers are orphans), then Docker. A backend that fails is one error in the pass; the
    other still runs unless it needs the failed one's answer."""

    def __init__(self, *, hub=None, docker=None, dry_run: bool = False, status_file: str = "",
                 metrics_file: str = "",
                 now: Callable[[], datetime] = utcnow) -> None:  # fmt: skip
        if hub is None and docker is None:
            raise ValueError("no backend to run")
        self.hub = hub
        self.docker = docker
        self.dry_run = dry_run
        self.status_file = status_file
        self.metrics_file = metrics_file
        self.now = now
        self.passes = 0
        self.totals = report.Totals()
        self.last_result: PassResult | None = None

    def __call__(self, stop: threading.Event) -> PassReport:
        started = self.now()
        result = PassResult(dry_run=self.dry_run)
        hub_servers = None
        hub_failed = False
        if self.hub is not None:
            try:
                hub_servers = self.hub.run_pass(result, stop)
            except HubError as error:
                result.errors.append(str(error))
                hub_failed = True
            except Exception as error:  # noqa: BLE001 - one line, the daemon goes on
                log_event(log, "hub backend crashed", logging.ERROR, exc_info=error)
                result.errors.append(f"hub backend: {type(error).__name__}: {error}")
                hub_failed = True
        if self.docker is not None and not stop.is_set():
            if hub_failed:
                result.errors.append("docker backend skipped: without the hub's servers, "
                                     "orphans cannot be told apart")  # fmt: skip
            else:
                try:
                    self.docker.run_pass(result, stop, hub_servers)
                except Exception as error:  # noqa: BLE001
                    log_event(log, "docker backend crashed", logging.ERROR, exc_info=error)
                    result.errors.append(f"docker backend: {type(error).__name__}: {error}")
        finished = self.now()
        self.passes += 1
        self.totals.add(result)
        self.last_result = result
        self._write_files(result, started, finished)
        return PassReport(report.summary_line(result), ok=result.ok)

    def _write_files(self, result: PassResult, started: datetime, finished: datetime) -> None:
        if self.status_file:
            report.write_status(self.status_file,
                                report.status_document(result, started, finished, self.passes))  # fmt: skip
        if self.metrics_file:
            duration = (finished - started).total_seconds()
            report.write_atomically(self.metrics_file,
                                    report.metrics_text(result, finished, duration, self.totals))  # fmt: skip
