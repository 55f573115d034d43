"""`hub-backup verify`: a chain's latest backup against its home (duplicity verify
--compare-data). Files changed since that backup show as differences too."""

from __future__ import annotations

from backup.chains import Chain
from backup.context import ChainOutcome, JobContext, log
from hubsidecars.commands import CommandError
from hubsidecars.locking import LockTimeout
from hubsidecars.logs import log_event


def verify_chain(ctx: JobContext, chain: Chain) -> ChainOutcome:
    try:
        with ctx.chain_lock(chain, 60).held():
            result = ctx.duplicity.verify(chain.source, chain.target, name=chain.name,
                                          encryption=ctx.encryption,
                                          excludes=ctx.excludes(chain))  # fmt: skip
    except (LockTimeout, CommandError) as error:
        return ChainOutcome.of(chain, False, "failed", str(error).splitlines()[0][:500])
    if result.exit_code == 0:
        log_event(log, "verified", chain=chain.name, compared=result.compared)
        return ChainOutcome.of(chain, True, "verified", f"{result.compared} file(s) compared")
    first = result.differences[0] if result.differences else ""
    detail = (f"{len(result.differences)} difference(s) with the home (files changed since "
              f"the backup count too); first: {first}")  # fmt: skip
    return ChainOutcome.of(chain, False, "differences", detail[:500])
