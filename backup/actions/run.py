"""`hub-backup run`: back up one chain (an incremental, a full when due or asked for, nothing
when the home has not changed), recording the attempt before duplicity starts and after it ends.

A run killed mid-full leaves the record `in_progress` (and `unfinished`), which keeps cleanup
away from that chain until a later run has removed the unfinished set and made it afresh.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime

from backup.chains import Chain
from backup.context import ChainOutcome, JobContext, log
from backup.state import ChainRecord
from hubsidecars.clock import iso
from hubsidecars.commands import CommandError
from hubsidecars.locking import LockTimeout
from hubsidecars.logs import log_event

CHAIN_LOCKED = "its chain is locked by a restore, verify or drill"


def source_missing(ctx: JobContext, chains: list[Chain]) -> list[ChainOutcome] | None:
    """Every chain failed when no home at all is present in the per-user layout: every home
    gone at once is a /home that is not mounted, not a mass deletion, and skipping them all
    would make the run (and its unit) a success that saved nothing. None otherwise."""
    if ctx.options.layout != "per-user" or not chains or any(c.present for c in chains):
        return None
    why = (f"the source {ctx.options.source} holds no home at all (not mounted?); nothing "
           "backed up")  # fmt: skip
    return [ChainOutcome.of(chain, False, "failed", why) for chain in chains]


def backup_chain(ctx: JobContext, chain: Chain, full: bool = False) -> ChainOutcome:
    if not chain.present:
        return ChainOutcome.of(chain, True, "skipped",
                               "home gone; its backups are kept for cleanup to judge")  # fmt: skip
    if ctx.options.dry_run:
        kind = "full" if full or ctx.full_due(ctx.record(chain)) else "incremental"
        log_event(log, "would back up", chain=chain.name, kind=kind, target=chain.target)
        return ChainOutcome.of(chain, True, f"would-{kind}")
    try:
        with ctx.chain_lock(chain).held():
            return _backup_locked(ctx, chain, full)
    except LockTimeout:
        return ChainOutcome.of(chain, False, "skipped", CHAIN_LOCKED)


def _backup_locked(ctx: JobContext, chain: Chain, full: bool) -> ChainOutcome:
    record = ctx.record(chain)
    started = ctx.now()
    behind = record.clock_behind(started)
    if behind:
        # duplicity would write a set older than the chain's newest, which belongs to no
        # chain, and call it good
        record.error = behind
        ctx.state.save(record)
        return ChainOutcome.of(chain, False, "failed", behind)
    owner = _home_owner(chain)
    handed_over = None not in (owner, record.owner_uid) and owner != record.owner_uid
    if handed_over:
        # The new owner's backups start afresh, and a restore of a time before this one
        # (the previous person's files) is refused unless asked for by name.
        record.owner_since = iso(started)
        log_event(log, "home now belongs to another uid: starting a new full chain",
                  logging.WARNING, chain=chain.name, user=chain.user, uid=owner,
                  was=record.owner_uid)  # fmt: skip
    elif not full and _unchanged(ctx, chain, record):
        # Nothing in the home changed since its last backup: that backup is still the home as
        # it is, so it counts as this hour's. An unchanged incremental would cost duplicity's
        # full start-up and five gpg runs (about 1.2 CPU s per home, measured) and add an
        # empty set to the chain every hour.
        record.unchanged(iso(started), ctx.seconds_since(started))
        ctx.state.save(record)
        log_event(log, "unchanged since its last backup", chain=chain.name,
                  seconds=record.last_duration_s)  # fmt: skip
        return ChainOutcome.of(chain, True, "unchanged", seconds=record.last_duration_s)
    if record.unfinished or record.in_progress or ctx.duplicity.partial_files(chain.name):
        # Never let duplicity resume a set: a resumed set skips what sorts before the point
        # it was cut at, and a later restore lacks files or brings back old ones.
        record.last_attempt = iso(started)
        try:
            gone = ctx.duplicity.discard_partial(chain.target, name=chain.name,
                                                 encryption=ctx.encryption)  # fmt: skip
        except CommandError as error:
            return _failed(ctx, record, chain, started, error,
                           "could not remove the set the last run left unfinished: ")
        log_event(log, "removed the set the last run left unfinished; making it afresh",
                  logging.WARNING, chain=chain.name, files=len(gone))  # fmt: skip
    record.began(iso(started))
    ctx.state.save(record)
    excludes, over_budget = ctx.plan(chain, log_left_out=True)
    try:
        result = ctx.duplicity.backup(
            chain.source, chain.target, name=chain.name, encryption=ctx.encryption,
            full=handed_over or full, full_if_older_than=ctx.options.full_every,
            excludes=excludes,
        )  # fmt: skip
    except CommandError as error:
        return _failed(ctx, record, chain, started, error)
    finished = ctx.now()
    kind = result.kind or ("full" if ctx.full_due(record) else "incremental")
    record.set_written(kind, owner, round((finished - started).total_seconds(), 3),
                       result.bytes, result.exit_code, result.meaning)  # fmt: skip
    incomplete = _incomplete(record, result, over_budget)
    if incomplete:
        record.written_incomplete(incomplete)
        ctx.state.save(record)
        return ChainOutcome.of(chain, False, "incomplete", record.error,
                               record.last_duration_s)  # fmt: skip
    record.written_whole(iso(finished), result.set_time, ctx.fingerprint)
    ctx.state.save(record)
    log_event(log, "backed up", chain=chain.name, kind=kind, seconds=record.last_duration_s,
              bytes=result.bytes)  # fmt: skip
    return ChainOutcome.of(chain, True, kind, seconds=record.last_duration_s)


def _incomplete(record: ChainRecord, result, over_budget: str | None) -> str | None:
    """Why the set just written is not a whole backup of the home; None when it is."""
    if result.errors:
        # duplicity finished the set, but files are missing from it (root without its read
        # powers, an NFS home with root_squash, an I/O error)
        first = result.unreadable[0] if result.unreadable else "see duplicity's log"
        return (f"incomplete: {result.errors} file(s) could not be read and are not in this "
                f"backup (the last complete one: {record.last_success or 'none'}); first: "
                f"{first}")  # fmt: skip
    if over_budget:
        # the home's biggest files were left out on purpose, so that it cannot hold up
        # everyone else: incomplete all the same, until its owner or the admin acts
        return (f"incomplete: {over_budget} (the last complete backup: "
                f"{record.last_success or 'none'})")  # fmt: skip
    return None


def _failed(ctx: JobContext, record: ChainRecord, chain: Chain, started: datetime,
            error: CommandError, doing: str = "") -> ChainOutcome:  # fmt: skip
    record.failed(doing + str(error).splitlines()[0], ctx.seconds_since(started),
                  getattr(error, "exit_code", None), getattr(error, "meaning", None))  # fmt: skip
    ctx.state.save(record)
    return ChainOutcome.of(chain, False, "failed", record.error, record.last_duration_s)


def _unchanged(ctx: JobContext, chain: Chain, record: ChainRecord) -> bool:
    """True when the last backup succeeded whole, no full is due, and no file or directory of
    the home (outside the excludes) was modified, created, renamed, deleted or had its mode
    or owner changed since that backup began (ctime moves on each of those and cannot be set
    back by a user)."""
    if not (ctx.options.skip_unchanged and record.succeeded_last and not record.error
            and record.last_success and record.last_success_end
            and not ctx.full_due(record)):  # fmt: skip
        return False
    # duplicity still runs at least every max_age / 2, so that a target gone bad is found
    # (and status turns stale) even for a home nobody touches.
    contact = (ctx.now() - datetime.fromisoformat(record.last_success_end)).total_seconds()
    if contact >= ctx.options.max_age / 2:
        return False
    if record.selection != ctx.fingerprint:
        return False  # backed up under other excludes or size limit: not as now configured
    since = datetime.fromisoformat(record.last_success).timestamp()
    return not ctx.selection(chain).changed_since(since)


def _home_owner(chain: Chain) -> int | None:
    """The uid owning a per-user chain's home (None for the single layout, or unreadable)."""
    if not chain.user:
        return None
    try:
        return os.lstat(chain.source).st_uid
    except OSError:
        return None
