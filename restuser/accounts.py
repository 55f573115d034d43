"""AccountStore: make sure an account exists, exactly once, complete, under a lock.

A pending marker is written (under the lock) before useradd runs and removed once the home
is complete, so a worker killed midway leaves a trace that the next call for the same name
repairs instead of returning a half-made account.

The exceptions raised to the HTTP layer carry a one-line message fit for a client: no file
system paths, no useradd output. The details go to the log line of the attempt.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from hubsidecars.locking import FileLock, LockTimeout
from hubsidecars.logs import log_event
from restuser.home import HomeBuilder, TooDeep, UnsafeHome, lstat_or_none
from restuser.names import NamePolicy, RefusedName
from restuser.passwd import Account, PasswdFile
from restuser.useradd import DatabaseBusy, NameTaken, UserAdd, UserAddError

log = logging.getLogger("restuser.accounts")

# What to do when the home of a new account exists already (see docs/restuser.md).
EXISTING_HOME_POLICIES = ("refuse", "adopt", "move-aside")
# Marker content of an adoption: a repair must then chown the whole tree, not only fill in.
_ADOPTING = "adopt"


class AccountBusy(Exception):
    """The account database stayed locked (HTTP 503 with Retry-After)."""


class AccountError(Exception):
    """Creating or completing the account failed (HTTP 500)."""


class HomeInTheWay(Exception):
    """The new account's home exists already and the policy does not let it be used; no
    account was created and nothing was changed (HTTP 409)."""


class AccountIncomplete(Exception):
    """The account exists but its creation has not finished (or was interrupted); a POST
    completes it (HTTP 503 with Retry-After)."""


class AccountStore:
    def __init__(
        self,
        policy: NamePolicy,
        useradd: UserAdd,
        home: HomeBuilder,
        state_dir: Path,
        lock_timeout: float = 10.0,
        existing_home: str = "refuse",
    ) -> None:
        if existing_home not in EXISTING_HOME_POLICIES:
            raise ValueError(f"existing_home must be one of {', '.join(EXISTING_HOME_POLICIES)}")
        self.policy = policy
        self.useradd = useradd
        self.home = home
        self.existing_home = existing_home
        self.root = useradd.root
        self.passwd = PasswdFile(self.root)
        self.state_dir = state_dir
        self.pending_dir = state_dir / "pending"
        self.pending_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.lock = FileLock(state_dir / "accounts.lock", lock_timeout)

    def lookup(self, name: str) -> Account | None:
        """The account for `name`, None if absent. Raises BadName, RefusedName and
        AccountIncomplete (a half-made account is never presented as ready)."""
        account = self._existing(name)
        if account is not None and self._pending(name).exists():
            raise AccountIncomplete(
                f"the account {name!r} is not complete yet; a POST for it completes it"
            )
        return account

    def ensure(self, name: str) -> tuple[Account, bool]:
        """Return (account, created). Raises BadName, RefusedName, HomeInTheWay, AccountBusy,
        AccountError."""
        account = self._existing(name)
        if account is not None and not self._pending(name).exists():
            return account, False
        started = time.monotonic()
        try:
            with self.lock.held():
                return self._ensure_locked(name, _Timing(started, time.monotonic()))
        except LockTimeout as error:
            never_locked = _Timing(started, None)
            self._log(name, None, "busy", never_locked, logging.WARNING, reason=str(error))
            raise AccountBusy(_BUSY) from None

    def problems(self) -> list[Problem]:
        """Why this service could not create users right now (empty when it can). Each
        problem's `public` text holds no server paths (/healthz answers it to anyone); its
        `detail`, for the log, does."""
        found = []
        if os.geteuid() != 0:
            found.append(Problem("not running as root: useradd will fail",
                                 f"running as uid {os.geteuid()}"))  # fmt: skip
        if shutil.which("useradd", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            found.append(Problem("useradd not found",
                                 "no useradd in /usr/sbin:/usr/bin:/sbin:/bin"))  # fmt: skip
        unwritable = [str(self.root / path) for path in ("etc/passwd", "etc/group", "etc/shadow")
                      if not os.access(self.root / path, os.W_OK)]  # fmt: skip
        if unwritable:
            found.append(Problem("the account database is not writable",
                                 f"not writable: {', '.join(unwritable)}"))  # fmt: skip
        if not self.home.skel.is_dir():
            found.append(Problem("the skeleton directory is missing",
                                 f"skeleton {self.home.skel} is missing"))  # fmt: skip
        if not os.access(self.pending_dir, os.W_OK):
            found.append(Problem("the state directory is not writable",
                                 f"state directory {self.state_dir} is not writable"))  # fmt: skip
        for what, path in (("account database", self.root / "etc"), ("homes", self._homes_dir())):
            shortage = _space_shortage(path)
            if shortage:
                found.append(Problem(f"the file system of the {what} is (almost) full",
                                     f"{path}: {shortage}"))  # fmt: skip
        return found

    def _homes_dir(self) -> Path:
        """The nearest existing directory above where new homes go."""
        path = self._home_path(self.useradd.home_for("{name}")).parent
        while not path.is_dir() and path != path.parent:
            path = path.parent
        return path

    def _existing(self, name: str) -> Account | None:
        self.policy.check(name)
        account = self.passwd.get(name)
        if account is not None:
            self._refuse_system(account)
        return account

    def _ensure_locked(self, name: str, timing: _Timing) -> tuple[Account, bool]:
        marker = self._pending(name)
        account = self.passwd.get(name)
        if account is not None:
            self._refuse_system(account)
            if marker.exists():
                self._repair(account, marker, timing)
            return account, False

        # Decided before useradd runs: useradd itself would take over any existing home
        # silently (it only warns, and skips the skeleton).
        home = self._home_path(self.useradd.home_for(name))
        found = lstat_or_none(home)
        adopting = False
        moved_aside: Path | None = None
        if found is not None:
            if self.existing_home == "adopt" and stat.S_ISDIR(found.st_mode):
                self._check_adoptable(name, home, timing)
                adopting = True
            elif self.existing_home == "move-aside":
                moved_aside = self._move_aside(name, home, timing)
            else:
                self._log(name, None, "home_in_the_way", timing, logging.WARNING, home=str(home),
                          kind=_kind(found), policy=self.existing_home)  # fmt: skip
                raise HomeInTheWay(
                    f"a home directory for {name!r} exists already and does not belong to a new "
                    "account; an administrator must move it away or allow adopting it"
                )

        try:
            marker.write_text(_ADOPTING if adopting else "")
        except OSError as error:
            self._move_back(moved_aside, home)
            self._log(name, None, "failed", timing, logging.ERROR,
                      reason=f"cannot write the pending marker: {error}")  # fmt: skip
            raise AccountError(_could_not_create(name)) from None
        try:
            warning = self.useradd.create(name)
        except NameTaken as error:
            marker.unlink()
            self._move_back(moved_aside, home)
            self._log(name, None, "refused", timing, logging.WARNING, reason=error.stderr.strip())
            raise RefusedName(f"{name!r} clashes with an existing group or account") from None
        except DatabaseBusy as error:
            marker.unlink()
            self._move_back(moved_aside, home)
            self._log(name, None, "busy", timing, logging.WARNING, reason=str(error))
            raise AccountBusy(_BUSY) from None
        except UserAddError as error:
            self._rollback(name, marker, remove_home=not adopting)
            self._move_back(moved_aside, home)
            self._log(name, None, "failed", timing, logging.ERROR, reason=str(error))
            raise AccountError(_could_not_create(name)) from None
        details = {"useradd_warning": warning} if warning else {}
        if moved_aside is not None:
            details["moved_aside"] = str(moved_aside)

        account = self.passwd.get(name)
        if account is None:
            marker.unlink()
            self._log(name, None, "failed", timing, logging.ERROR,
                      reason=f"useradd succeeded but the account is not in {self.passwd.path}",
                      **details)  # fmt: skip
            raise AccountError(_could_not_create(name))
        home = self._home_path(account.home)
        if adopting:
            try:
                adoption = self.home.adopt(home, account.uid, account.gid)
            except OSError as error:
                # No rollback: userdel --remove would delete the very files being adopted.
                self._log(name, account.uid, "failed", timing, logging.ERROR, reason=str(error),
                          home=str(home), **details)  # fmt: skip
                raise AccountError(_will_retry(name, error)) from None
            marker.unlink()
            self._log(name, account.uid, "adopted", timing, home=str(home),
                      chowned=adoption.chowned, hardlinks_skipped=adoption.hardlinked,
                      skipped=adoption.skipped, devices_skipped=adoption.devices,
                      added=len(adoption.added), **details)  # fmt: skip
            return account, True
        try:
            self.home.populate(home, account.uid, account.gid)
            rewritten = self.home.recopy_differing(home, account.uid, account.gid)
        except OSError as error:
            self._rollback(name, marker, remove_home=True)
            self._log(name, account.uid, "rolled_back", timing, logging.ERROR, reason=str(error),
                      **details)  # fmt: skip
            raise AccountError(
                f"could not populate the home of {name!r}: {_reason(error)}"
            ) from None
        if rewritten:  # useradd's copy was short (a full disk) and it still exited 0
            details["rewritten"] = ",".join(rewritten)
        marker.unlink()
        self._log(name, account.uid, "created", timing, **details)
        return account, True

    def _repair(self, account: Account, marker: Path, timing: _Timing) -> None:
        """Complete an account whose creation was interrupted (its marker is still there)."""
        home = self._home_path(account.home)
        adopting = marker.read_text().strip() == _ADOPTING
        try:
            if adopting:
                adoption = self.home.adopt(home, account.uid, account.gid)
                details = {"adopted": adoption.chowned, "hardlinks_skipped": adoption.hardlinked,
                           "devices_skipped": adoption.devices,
                           "added": len(adoption.added)}  # fmt: skip
            else:
                # Never handed out (the marker says so): no user file to keep yet.
                added = self.home.populate(home, account.uid, account.gid)
                rewritten = self.home.recopy_differing(home, account.uid, account.gid)
                details = {"added": len(added), "rewritten": len(rewritten)}
        except OSError as error:
            self._log(account.name, account.uid, "failed", timing, logging.ERROR,
                      reason=str(error), home=str(home))  # fmt: skip
            raise AccountError(_will_retry(account.name, error)) from None
        marker.unlink()
        self._log(account.name, account.uid, "repaired", timing, **details)

    def _check_adoptable(self, name: str, home: Path, timing: _Timing) -> None:
        """Refuse (409, nothing changed) a leftover home that adopt() would not take."""
        try:
            self.home.check_adoptable(home)
        except (TooDeep, UnsafeHome) as error:
            self._log(name, None, "home_in_the_way", timing, logging.WARNING, home=str(home),
                      policy=self.existing_home, reason=str(error))  # fmt: skip
            raise HomeInTheWay(
                f"a home directory for {name!r} exists already and cannot be adopted "
                f"({_reason(error)}); an administrator must move it away"
            ) from None
        except OSError as error:
            self._log(name, None, "failed", timing, logging.ERROR, home=str(home),
                      reason=f"could not examine the existing home: {error}")  # fmt: skip
            raise AccountError(_could_not_create(name)) from None

    def _move_aside(self, name: str, home: Path, timing: _Timing) -> Path:
        try:
            return self.home.move_aside(home)
        except OSError as error:
            self._log(name, None, "failed", timing, logging.ERROR,
                      reason=f"could not move the existing home aside: {error}")  # fmt: skip
            raise AccountError(
                f"could not move the existing home of {name!r} aside: {_reason(error)}"
            ) from None

    def _move_back(self, moved: Path | None, home: Path) -> None:
        """After a failed creation, put a home moved aside back where it was."""
        if moved is None:
            return
        try:
            undone = self.home.move_back(moved, home)
        except OSError as error:
            undone, reason = False, str(error)
        else:
            reason = "its place was taken"
        if not undone:
            log_event(log, "old home left moved aside", logging.WARNING, home=str(home),
                      moved_aside=str(moved), reason=reason)  # fmt: skip

    def _home_path(self, home: str) -> Path:
        return self.root / home.lstrip("/")

    def _rollback(self, name: str, marker: Path, remove_home: bool) -> None:
        """Remove a half-made account; if that cannot be done (or must not be: the home is
        a leftover being adopted), keep the marker so that the next call repairs it."""
        account = self.passwd.get(name)
        if account is None:
            marker.unlink(missing_ok=True)
            return
        if not remove_home:
            log_event(log, "half-made account kept; the next call will complete it",
                      logging.ERROR, name=name)  # fmt: skip
            return
        # The fresh home first: on a full disk, userdel cannot even write its lock file
        # until the space the partial copies took is free again. rmtree works through
        # descriptors here and never follows a symlink.
        shutil.rmtree(self._home_path(account.home), ignore_errors=True)
        try:
            self.useradd.delete(name)
        except UserAddError as error:
            log_event(log, "rollback failed; the next call will repair", logging.ERROR,
                      name=name, reason=str(error))  # fmt: skip
            return
        marker.unlink(missing_ok=True)

    def _refuse_system(self, account: Account) -> None:
        if account.uid < self.useradd.uid_min:
            raise RefusedName(
                f"{account.name!r} is a system account (uid {account.uid} < {self.useradd.uid_min})"
            )

    def _pending(self, name: str) -> Path:
        return self.pending_dir / name

    def _log(self, name, uid, outcome, timing, level=logging.INFO, **extra) -> None:
        """One line per creation attempt; wait_ms is the part of duration_ms spent waiting for
        the account lock (high values mean many creations at once)."""
        now = time.monotonic()
        locked = now if timing.locked is None else timing.locked  # never locked: all waiting
        log_event(log, "account " + outcome, level, name=name, uid=uid if uid is not None else "-",
                  outcome=outcome, duration_ms=round((now - timing.started) * 1000, 1),
                  wait_ms=round((locked - timing.started) * 1000, 1), **extra)  # fmt: skip


_BUSY = "the account database is busy; try again in a moment"


def _could_not_create(name: str) -> str:
    return f"could not create the account {name!r}; the service log has the details"


def _will_retry(name: str, error: OSError) -> str:
    reason = _reason(error)
    return f"could not complete the home of {name!r} ({reason}); will retry on the next call"


def _reason(error: OSError) -> str:
    """An OSError without its file names, which are server paths."""
    return error.strerror or type(error).__name__


@dataclass(frozen=True)
class Problem:
    """Something that keeps the service from creating accounts."""

    public: str  # for anyone (the 503 of /healthz): no paths
    detail: str  # for the log: with paths and numbers


# Less free than this (bytes, inodes) and useradd or the home copy fail midway, and a full
# disk is no reason for a client to retry: /healthz says 503. 1% of the file system, but never
# more than is needed to create a few accounts, nor less than a minimum.
MIN_FREE_BYTES, ENOUGH_FREE_BYTES = 1 << 20, 64 << 20
MIN_FREE_INODES, ENOUGH_FREE_INODES = 64, 10_000
MIN_FREE_FRACTION = 0.01


def _space_shortage(path: Path) -> str:
    """Why the file system holding `path` is too full to create accounts, or ""."""
    try:
        fs = os.statvfs(path)
    except OSError as error:
        return f"cannot check free space: {error.strerror}"
    # root (which useradd runs as) may also use the blocks reserved for it.
    free_blocks = fs.f_bfree if os.geteuid() == 0 else fs.f_bavail
    free, size = free_blocks * fs.f_frsize, fs.f_blocks * fs.f_frsize
    if size and free < _threshold(size, MIN_FREE_BYTES, ENOUGH_FREE_BYTES):
        return f"{free} bytes free of {size}"
    if fs.f_files and fs.f_ffree < _threshold(fs.f_files, MIN_FREE_INODES, ENOUGH_FREE_INODES):
        return f"{fs.f_ffree} inodes free of {fs.f_files}"
    return ""


def _threshold(total: int, least: int, enough: int) -> float:
    return max(least, min(MIN_FREE_FRACTION * total, enough))


def _kind(info: os.stat_result) -> str:
    if stat.S_ISLNK(info.st_mode):
        return "symlink"
    return "directory" if stat.S_ISDIR(info.st_mode) else "file"


class _Timing(NamedTuple):
    """When an ensure() call started and when it got the account lock (monotonic seconds)."""

    started: float
    locked: float | None
