"""`hub-backup restore`: a home, or one path in it, into a staging directory or in place.

Restores run as root into directories users control (their homes), so no path a user could
change is ever followed (backup.safe_fs): the directory restored into is opened component by
component without following a user's symlink; inside it hub-backup makes a root-only (0700)
directory, and duplicity writes below that one through `/proc/self/fd/N/...`, a name for the
open directory that no rename or planted symlink can redirect, where no user can reach. The
final moves are renames relative to those descriptors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from backup import safe_fs
from backup.chains import Chain
from backup.context import JobContext
from hubsidecars.config import ConfigError
from hubsidecars.errors import Busy
from hubsidecars.locking import LockTimeout
from hubsidecars.logs import log_event

log = logging.getLogger("backup")

WORK_NAME = ".hub-backup-restoring-"  # + a random part: root-only, made by us, in DIR
RESTORED = "restored"  # what duplicity makes inside it


@dataclass(frozen=True)
class Restored:
    """What a restore did: `where` the files are now, where the live ones went (`aside`,
    in place only), and a `note` for the admin ("" when none)."""

    user: str
    path: str  # relative to the home; "" for the whole home
    where: Path
    aside: Path | None = None
    note: str = ""

    def lines(self) -> list[str]:
        said = f"restored {self.user}:{self.path or '(whole home)'} to {self.where}"
        if self.aside:
            said += f" (the live one moved to {self.aside})"
        return [*([self.note] if self.note else []), said]


def restore(ctx: JobContext, user: str, path: str | None, *, time: str | None, to: str | None,
            in_place: bool, previous_owner: bool = False) -> Restored:  # fmt: skip
    """Restore `user`'s home (or `path` in it) as of `time` into `to`, or over the live files
    with `in_place` (the live ones are renamed aside first, never overwritten)."""
    if bool(to) == bool(in_place):
        raise ConfigError("give --to DIR (a staging directory) or --in-place, one of them")
    relative = (path or "").strip("/")
    parts = [part for part in relative.split("/") if part]
    if any(part in ("..", ".") for part in parts):
        raise ConfigError(f"PATH must stay inside the home, got {path!r}")
    relative = "/".join(parts)
    chains = [chain for chain in ctx.chains() if chain.user in (user, "")]
    if not chains:
        raise ConfigError(f"no backups of {user!r} (no home and no record)")
    chain = chains[0]
    in_chain = "/".join(parts) if chain.user else "/".join([user, *parts])
    asked = absolute_time(time, ctx.now()) if time is not None else None
    time, note = _complete_time(ctx, chain, asked)
    if not previous_owner:
        _refuse_the_previous_owners(ctx, chain, user, time)
    stamp = ctx.now().strftime("%Y%m%dT%H%M%SZ")
    wait = max(ctx.options.lock_wait, 60.0)
    try:
        with ctx.chain_lock(chain, wait).held():
            if asked is not None:
                _refuse_before_the_oldest(ctx, chain, user, asked)
            if in_place:
                where, aside = _in_place(ctx, chain, user, parts, in_chain, time, stamp,
                                         numeric_owner=previous_owner)
            else:
                where = _into_staging(ctx, chain, to, parts, in_chain, time,
                                      numeric_owner=previous_owner)
                aside = None
    except LockTimeout:
        raise Busy(f"{chain.name} stayed locked for {wait:g} s (a backup is running); "
                   "try again later") from None  # fmt: skip
    finally:
        try:
            ctx.duplicity.stop_agent()
        except Exception:  # noqa: BLE001 - a leftover agent is not worth failing a restore for
            pass
    log_event(log, "restored", user=user, path=relative or "(home)", time=time or "latest",
              to=str(where), moved_aside=str(aside or ""))  # fmt: skip
    return Restored(user, relative, where, aside, note)


def absolute_time(text: str, now: datetime) -> datetime:
    """A restore's --time as an aware datetime: "now", an interval back from now ("3D",
    "1h30m"; M = 30 days, Y = 365 days, as duplicity counts), seconds since the epoch, or an
    ISO 8601 date or time (without an offset: local time, summer time included). duplicity
    is then given the epoch seconds, so that it restores exactly the moment checked here.
    Raises ConfigError for anything else."""
    text = text.strip()
    try:
        if text == "now":
            return now
        if _INTERVAL.fullmatch(text):
            seconds = sum(int(count) * _UNIT_SECONDS[unit]
                          for count, unit in _INTERVAL_PART.findall(text))  # fmt: skip
            return now - timedelta(seconds=seconds)
        if re.fullmatch(r"[0-9]+", text, re.ASCII):
            return datetime.fromtimestamp(int(text), UTC)
        moment = datetime.fromisoformat(text)
        return moment if moment.tzinfo else moment.astimezone()
    except (ValueError, OverflowError, OSError):
        pass
    raise ConfigError(f"--time {text!r}: give an ISO 8601 date or time (2026-11-20, "
                      "2026-11-20T08:00:00+01:00), an interval back from now (3D, 1h30m), "
                      "seconds since the epoch, or now")  # fmt: skip


def _duplicity_time(moment: datetime) -> str:
    return str(int(moment.timestamp()))


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "D": 86400, "W": 7 * 86400, "M": 30 * 86400,
                 "Y": 365 * 86400}  # fmt: skip
_INTERVAL_PART = re.compile(r"([0-9]+)([smhDWMY])")
_INTERVAL = re.compile(r"(?:[0-9]+[smhDWMY])+")


def _refuse_the_previous_owners(ctx: JobContext, chain: Chain, user: str,
                                time: str | None) -> None:  # fmt: skip
    """A time before the home passed to another uid restores the previous person's files
    under the new one's name: refused unless --previous-owner says that is the intent."""
    record = ctx.state.load(chain.name)
    if not (record and record.owner_since and time):
        return
    since = datetime.fromisoformat(record.owner_since)
    if datetime.fromtimestamp(int(time), UTC) < since:
        raise ConfigError(f"the home of {user} belongs to another uid since {since.isoformat()}; "
                          "backups from before hold the previous owner's files: give "
                          "--previous-owner to restore them anyway")  # fmt: skip


def _refuse_before_the_oldest(ctx: JobContext, chain: Chain, user: str,
                              moment: datetime) -> None:  # fmt: skip
    """duplicity restores the oldest backup kept when asked for a time before it, and says
    nothing: the admin would hand out files as of another day than the one asked for."""
    collection = ctx.duplicity.collection_status(chain.target, name=chain.name,
                                                 encryption=ctx.encryption)  # fmt: skip
    if collection.chains and moment < collection.chains[0].start:
        oldest = collection.chains[0].start.isoformat()
        raise ConfigError(f"no backup of {user} as old as {moment.isoformat()}; the oldest "
                          f"kept is {oldest}")  # fmt: skip


def _complete_time(ctx: JobContext, chain: Chain,
                   asked: datetime | None) -> tuple[str | None, str]:  # fmt: skip
    """duplicity's --time (epoch seconds; None: the latest) and a note to print. Without
    --time, the latest *complete* backup: after a run that failed or was killed, duplicity's
    "latest" would include the half-written set of that run."""
    if asked is not None:
        return _duplicity_time(asked), ""
    record = ctx.state.load(chain.name)
    if record is None or record.succeeded_last or not record.complete_time:
        return None, ""
    return _duplicity_time(datetime.fromisoformat(record.complete_time)), (
        f"note: the last backup of {chain.name} did not complete; restoring the last complete "
        f"one ({record.complete_time})")


def _into_staging(ctx: JobContext, chain: Chain, to: str, parts: list[str], in_chain: str,
                  time: str | None, *, numeric_owner: bool) -> Path:  # fmt: skip
    """duplicity restores into a root-only directory that hub-backup makes inside DIR (so the
    moves out of it are renames on one file system) and reaches only through its descriptor;
    the restored entries then move into DIR by renames relative to descriptors."""
    staging = Path(os.path.abspath(to))
    try:
        opened = safe_fs.open_directory(str(staging), create=True)
    except safe_fs.UnsafePath as error:
        raise ConfigError(f"--to {to}: {error}") from None
    except OSError as error:
        raise ConfigError(f"--to {to}: {error.strerror}") from None
    fd = opened.fd
    try:
        if os.listdir(fd):
            raise ConfigError(f"--to {to} is not empty: restores go into an empty directory")
        try:
            work, work_name = safe_fs.make_private_directory(fd, WORK_NAME)
        except safe_fs.UnsafePath as error:
            raise ConfigError(f"--to {to}: {error}") from None
        work_identity = safe_fs.identity(work)
        try:
            _duplicity_restore(ctx, chain, work, in_chain, time, numeric_owner)
            if parts:
                _move(work, RESTORED, fd, parts[-1])
                where = staging / parts[-1]
            else:
                home = os.open(RESTORED, safe_fs.DIRECTORY, dir_fd=work)
                try:
                    for name in os.listdir(home):
                        _move(home, name, fd, name)
                    info = os.fstat(home)
                    os.fchown(fd, info.st_uid, info.st_gid)
                    os.fchmod(fd, info.st_mode & 0o7777)
                finally:
                    os.close(home)
                os.rmdir(RESTORED, dir_fd=work)
                where = staging
        except BaseException:
            safe_fs.empty_directory(work)  # no half restore left behind, hidden or not
            raise
        finally:
            os.close(work)
            safe_fs.remove_empty_directory(fd, work_name, work_identity)
        return where
    except BaseException:
        opened.remove_created()  # nor a directory the admin never made
        raise
    finally:
        opened.close()


def _duplicity_restore(ctx: JobContext, chain: Chain, into: int, in_chain: str,
                       time: str | None, numeric_owner: bool) -> None:  # fmt: skip
    """duplicity writes below the root-only directory `into` through /proc/self/fd/N: the
    name of the open directory itself, which no rename or planted link can redirect. With
    `numeric_owner` (a previous owner's files) files keep the uid they had, not the one
    their owner's name has now."""
    ctx.duplicity.restore(chain.target, f"/proc/self/fd/{into}/{RESTORED}", name=chain.name,
                          encryption=ctx.encryption, path=in_chain or None, time=time,
                          pass_fds=(into,), numeric_owner=numeric_owner)  # fmt: skip


def _move(source_dir: int, name: str, target_dir: int, target_name: str) -> None:
    """renameat: never follows a link at either end (a link in the way is replaced)."""
    try:
        os.rename(name, target_name, src_dir_fd=source_dir, dst_dir_fd=target_dir)
    except OSError as error:
        raise ConfigError(f"cannot move the restored {target_name} into place: "
                          f"{error.strerror}") from None  # fmt: skip


def _in_place(ctx: JobContext, chain: Chain, user: str, parts: list[str], in_chain: str,
              time: str | None, stamp: str, *,
              numeric_owner: bool) -> tuple[Path, Path | None]:  # fmt: skip
    """Stage beside the live path (same file system, so the final steps are renames), in a
    root-only directory reached without following any symlink below the source."""
    source = Path(ctx.options.source)
    if parts:
        parent = _open_beneath(source, [user, *parts[:-1]])
        name = parts[-1]
        aside_name = f"{name}.before-restore-{stamp}"
        live = source / user / "/".join(parts)
    else:
        # A whole home: the live one goes aside under a hidden name, which the next run does
        # not take for a new user's home.
        parent = _open_beneath(source, [])
        name = user
        aside_name = f".{user}.before-restore-{stamp}"
        live = source / user
    try:
        try:
            stage, stage_name = safe_fs.make_private_directory(parent,
                                                               f".{name}.hub-backup-restore-")
        except safe_fs.UnsafePath as error:
            raise ConfigError(f"cannot restore in place in {live.parent}: {error}") from None
        stage_identity = safe_fs.identity(stage)
        try:
            _duplicity_restore(ctx, chain, stage, in_chain, time, numeric_owner)
            aside = None
            try:
                os.rename(name, aside_name, src_dir_fd=parent, dst_dir_fd=parent)
                aside = live.parent / aside_name
            except FileNotFoundError:
                pass  # nothing live to keep: the path was deleted
            except OSError as error:  # e.g. a home that is a mount point of its own
                raise ConfigError(f"cannot move the live {live} aside: {error.strerror}; "
                                  "restore it --to a directory instead") from None  # fmt: skip
            try:
                _move(stage, RESTORED, parent, name)
            except ConfigError:
                if aside is not None:  # the live one back where it was
                    with contextlib.suppress(OSError):
                        os.rename(aside_name, name, src_dir_fd=parent, dst_dir_fd=parent)
                raise
        except BaseException:
            safe_fs.empty_directory(stage)  # the live path untouched, no copy left behind
            raise
        finally:
            os.close(stage)
            safe_fs.remove_empty_directory(parent, stage_name, stage_identity)
    finally:
        os.close(parent)
    return live, aside


def _open_beneath(root: Path, parts: list[str]) -> int:
    """A descriptor of root/parts..., each component below `root` opened without following a
    symlink: a directory a user replaced by a link (to /etc, to another home) is refused."""
    try:
        opened = safe_fs.open_directory(os.path.abspath(root))
    except (safe_fs.UnsafePath, OSError) as error:
        raise ConfigError(f"cannot restore in place below {root}: {error}") from None
    fd = os.dup(opened.fd)
    opened.close()
    try:
        for index, part in enumerate(parts):
            try:
                next_fd = os.open(part, safe_fs.DIRECTORY, dir_fd=fd)
            except OSError as error:
                where = root.joinpath(*parts[: index + 1])
                raise ConfigError(f"cannot restore in place below {where}: it is a symlink or "
                                  f"not a directory ({error.strerror})") from None  # fmt: skip
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


