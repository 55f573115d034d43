"""`hub-backup drill`: restore a sample of a chain's files into a temporary directory and
compare them with the home (content, mode, owner): files that have not changed since the
chain's last successful backup, the same sample for the same backup."""

from __future__ import annotations

import random
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

from backup.chains import Chain
from backup.context import ChainOutcome, JobContext, log
from hubsidecars.clock import iso
from hubsidecars.commands import CommandError
from hubsidecars.locking import LockTimeout
from hubsidecars.logs import log_event


def drill_chain(ctx: JobContext, chain: Chain) -> ChainOutcome:
    record = ctx.state.load(chain.name)
    if record is None or not record.last_success:
        return ChainOutcome.of(chain, False, "failed", "never backed up")
    since = datetime.fromisoformat(record.last_success).timestamp() - 2
    # after a failed or killed run, "latest" would include its half-written set
    complete_time = None if record.succeeded_last else record.complete_time
    selection = ctx.selection(chain)
    budget = ctx.options.home_budget * 1024 * 1024
    over = {relative for relative, _ in selection.over_budget(budget)[2]} \
        if budget and chain.user else set()  # fmt: skip
    candidates = sorted(set(selection.unchanged_files(since)) - over)
    sample = random.Random(f"{chain.name}:{record.last_success}").sample(
        candidates, min(ctx.options.drill_files, len(candidates)))  # fmt: skip
    problems = []
    scratch = tempfile.mkdtemp(prefix=f"hub-backup-drill-{chain.name}-",
                               dir=ctx.options.state_dir)  # fmt: skip
    try:
        with ctx.chain_lock(chain, 60).held():
            for number, relative in enumerate(sample):
                restored = Path(scratch) / str(number)
                # relative to the chain's source: the home, or the root in the single layout
                ctx.duplicity.restore(chain.target, str(restored), name=chain.name,
                                      encryption=ctx.encryption, path=relative,
                                      time=complete_time)  # fmt: skip
                problem = same_file(Path(chain.source) / relative, restored)
                if problem:
                    problems.append(f"{relative}: {problem}")
    except (LockTimeout, CommandError) as error:
        line = str(error).splitlines()[0][:500]
        if not isinstance(error, LockTimeout):
            _note(ctx, chain, False, line)
        return ChainOutcome.of(chain, False, "failed", line)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _note(ctx, chain, not problems, f"{len(problems)} of {len(sample)} differ" if problems
          else f"{len(sample)} file(s) identical")  # fmt: skip
    if problems:
        return ChainOutcome.of(chain, False, "differences",
                               f"{len(problems)} of {len(sample)} restored file(s) differ; "
                               f"first: {problems[0]}"[:500])  # fmt: skip
    log_event(log, "drill passed", chain=chain.name, files=len(sample))
    return ChainOutcome.of(chain, True, "drilled", f"{len(sample)} file(s) restored and identical")


def _note(ctx: JobContext, chain: Chain, ok: bool, detail: str) -> None:
    """The drill holds the job lock: no run rewrites this record meanwhile."""
    record = ctx.record(chain)
    record.drilled(iso(ctx.now()), ok, detail)
    ctx.state.save(record)


def same_file(original: Path, restored: Path) -> str:
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
