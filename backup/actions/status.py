"""`hub-backup status`: per chain, from the records (no network): newest full, incrementals
since, last success and its age, last error, and the one line an admin must look at."""

from __future__ import annotations

from datetime import datetime

from backup.context import JobContext
from backup.duplicity import lock_holder
from backup.state import ChainRecord


def status_rows(ctx: JobContext) -> list[dict]:
    """One row per chain; `stale` when its last success is older than max_age, or never."""
    now = ctx.now()
    rows = []
    running = _job_running(ctx)
    for chain in ctx.chains():
        record = ctx.state.load(chain.name)
        success = record.last_success if record else None
        age = (now - datetime.fromisoformat(success)).total_seconds() if success else None
        # a removed user's kept backups are history, not a backup falling behind
        stale = chain.present and (age is None or age > ctx.options.max_age)
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
            "problem": problem(record, stale, running),
        })  # fmt: skip
    return rows


def _job_running(ctx: JobContext) -> bool:
    """True while a run, cleanup, verify or drill holds the job lock. Read from /proc/locks:
    taking the lock, even for a moment, would make a run starting then exit busy."""
    return lock_holder(str(ctx.job_lock_path), "FLOCK") is not None


def problem(record: ChainRecord | None, stale: bool, running: bool) -> str | None:
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
