"""After each pass: the summary line, the status file (JSON) and Prometheus textfile metrics.

Both files are replaced atomically (written beside, fsynced, renamed), so a reader never sees
half a file, and a failed write is one warning: the culling itself does not depend on them.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from culler.outcomes import RESULTS, PassResult
from hubsidecars.files import replace_file
from hubsidecars.logs import log_event
from hubsidecars.prometheus import MetricsText

log = logging.getLogger("culler.report")


def summary_line(result: PassResult) -> str:
    """`seen=12 idle=3 busy_kept=1 culled=2 failed=0 skipped=1` (+ dry-run / errors)."""
    counts = result.counts()
    words = [f"{key}={counts[key]}"
             for key in ("seen", "idle", "busy_kept", "culled", "failed", "skipped")]  # fmt: skip
    if counts["stopping"]:
        words.append(f"stopping={counts['stopping']}")
    if counts["kept_active"]:
        words.append(f"kept_active={counts['kept_active']}")
    if result.dry_run:
        words.append(f"would_cull={counts['would_cull']} (dry run)")
    if result.errors:
        words.append(f"error={result.errors[0]!r}")
    return " ".join(words)


def status_document(result: PassResult, started: datetime, finished: datetime,
                    pass_number: int) -> dict:  # fmt: skip
    return {
        "pass": pass_number,
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        "duration_s": round((finished - started).total_seconds(), 3),
        "ok": result.ok,
        "dry_run": result.dry_run,
        "counts": result.counts(),
        "counts_by_kind": result.counts_by_kind(),
        "errors": list(result.errors),
        "decisions": [outcome.as_dict() for outcome in result.outcomes],
    }


@dataclass
class Totals:
    """Counters since the daemon started, for the metrics' *_total series."""

    passes: int = 0
    failed_passes: int = 0
    by_kind_result: Counter = field(default_factory=Counter)

    def add(self, result: PassResult) -> None:
        self.passes += 1
        self.failed_passes += 0 if result.ok else 1
        for outcome in result.outcomes:
            self.by_kind_result[(outcome.kind, outcome.result)] += 1


def metrics_text(result: PassResult, finished: datetime, duration_s: float,
                 totals: Totals) -> str:  # fmt: skip
    metrics = MetricsText("hub_culler")
    metric = metrics.add
    metric("last_pass_timestamp_seconds", "gauge", "When the last pass finished (Unix time).",
           [("", finished.timestamp())])  # fmt: skip
    metric("last_pass_duration_seconds", "gauge", "How long the last pass took.",
           [("", duration_s)])  # fmt: skip
    metric("last_pass_success", "gauge", "1 when the last pass went well, else 0.",
           [("", 1 if result.ok else 0)])  # fmt: skip
    metric("last_pass_dry_run", "gauge", "1 when the culler runs with --dry-run.",
           [("", 1 if result.dry_run else 0)])  # fmt: skip
    last = Counter((o.kind, o.result) for o in result.outcomes)
    kinds = sorted({kind for kind, _ in last} | {kind for kind, _ in totals.by_kind_result})
    metric("last_pass_outcomes", "gauge", "What the last pass decided, per kind and result.",
           [({"kind": k, "result": r}, last[(k, r)]) for k in kinds for r in RESULTS])
    metric("outcomes_total", "counter", "Decisions since the culler started.",
           [({"kind": k, "result": r}, totals.by_kind_result[(k, r)])
            for k in kinds for r in RESULTS])  # fmt: skip
    metric("passes_total", "counter", "Passes since the culler started.", [("", totals.passes)])
    metric("failed_passes_total", "counter", "Failed passes since the culler started.",
           [("", totals.failed_passes)])  # fmt: skip
    return metrics.text()


def write_atomically(path: str, text: str, mode: int = 0o644) -> bool:
    """Replace `path` with `text`; False (and one warning) when that fails."""
    try:
        replace_file(path, text, mode)
    except OSError as error:
        log_event(log, "cannot write file", logging.WARNING, path=path, error=error.strerror)
        return False
    return True


def write_status(path: str, document: dict) -> bool:
    return write_atomically(path, json.dumps(document, indent=1, sort_keys=False) + "\n")
