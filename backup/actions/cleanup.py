"""`hub-backup cleanup`: keep the keep_full newest full chains of a chain whose last backup
succeeded, and remove duplicity's leftovers; a chain whose last backup did not is left alone
(a cleanup then would delete the partial upload the next run resumes from)."""

from __future__ import annotations

from backup.actions.run import CHAIN_LOCKED
from backup.chains import Chain
from backup.context import ChainOutcome, JobContext, log
from backup.state import ChainRecord
from hubsidecars.clock import iso
from hubsidecars.commands import CommandError
from hubsidecars.locking import LockTimeout
from hubsidecars.logs import log_event


def cleanup_chain(ctx: JobContext, chain: Chain) -> ChainOutcome:
    record = ctx.state.load(chain.name)
    if record is None or not record.succeeded_last:
        why = _not_now(record)
        log_event(log, "cleanup skipped", chain=chain.name, reason=why)
        return ChainOutcome.of(chain, True, "skipped", why)
    dry = ctx.options.dry_run
    keep = ctx.options.keep_full
    try:
        with ctx.chain_lock(chain).held():
            ctx.duplicity.remove_all_but_n_full(chain.target, keep, name=chain.name,
                                                encryption=ctx.encryption, dry_run=dry)  # fmt: skip
            ctx.duplicity.cleanup(chain.target, name=chain.name, encryption=ctx.encryption,
                                  dry_run=dry)  # fmt: skip
    except LockTimeout:
        return ChainOutcome.of(chain, False, "skipped", CHAIN_LOCKED)
    except CommandError as error:
        return ChainOutcome.of(chain, False, "failed", str(error).splitlines()[0][:500])
    if not dry:
        record = ctx.state.load(chain.name) or record
        record.cleaned(iso(ctx.now()), keep)
        ctx.state.save(record)
    log_event(log, "cleaned up" if not dry else "would clean up", chain=chain.name,
              keep_full=keep)  # fmt: skip
    return ChainOutcome.of(chain, True, "would-cleanup" if dry else "cleanup")


def _not_now(record: ChainRecord | None) -> str:
    if record is None:
        return "never backed up"
    if record.in_progress:
        return "its last backup did not complete"
    return "its last backup was incomplete" if record.incomplete else "its last backup failed"
