"""AccountStore: make sure an account exists, exactly once, complete, under a lock.

A pending marker is written (under the lock) before useradd runs and removed once the home
is complete, so a worker killed midway leaves a trace that the next call for the same name
repairs instead of returning a half-made account.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import NamedTuple

from hubsidecars.logs import log_event
from restuser.home import HomeBuilder
from restuser.locking import FileLock, LockTimeout
from restuser.names import NamePolicy, RefusedName
from restuser.passwd import Account, PasswdFile
from restuser.useradd import DatabaseBusy, NameTaken, UserAdd, UserAddError

log = logging.getLogger("restuser.accounts")


class AccountBusy(Exception):
    """The account database stayed locked (HTTP 503)."""


class AccountError(Exception):
    """Creating the account failed; nothing was left behind (HTTP 500)."""


class AccountStore:
    def __init__(
        self,
        policy: NamePolicy,
        useradd: UserAdd,
        home: HomeBuilder,
        state_dir: Path,
        lock_timeout: float = 10.0,
    ) -> None:
        self.policy = policy
        self.useradd = useradd
        self.home = home
        self.root = useradd.root
        self.passwd = PasswdFile(self.root)
        self.state_dir = state_dir
        self.pending_dir = state_dir / "pending"
        self.pending_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.lock = FileLock(state_dir / "accounts.lock", lock_timeout)

    def lookup(self, name: str) -> Account | None:
        """The account for `name`, None if absent. Raises BadName / RefusedName."""
        self.policy.check(name)
        account = self.passwd.get(name)
        if account is not None:
            self._refuse_system(account)
        return account

    def ensure(self, name: str) -> tuple[Account, bool]:
        """Return (account, created). Raises BadName, RefusedName, AccountBusy, AccountError."""
        account = self.lookup(name)
        if account is not None and not self._pending(name).exists():
            return account, False
        started = time.monotonic()
        try:
            with self.lock:
                return self._ensure_locked(name, _Timing(started, time.monotonic()))
        except (LockTimeout, DatabaseBusy) as error:
            never_locked = _Timing(started, None)
            self._log(name, None, "busy", never_locked, logging.WARNING, reason=str(error))
            raise AccountBusy(str(error)) from None

    def problems(self) -> list[str]:
        """Why this service could not create users right now (empty when it can)."""
        found = []
        if os.geteuid() != 0:
            found.append("not running as root: useradd will fail")
        if shutil.which("useradd", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            found.append("useradd not found")
        for path in ("etc/passwd", "etc/group", "etc/shadow"):
            if not os.access(self.root / path, os.W_OK):
                found.append(f"{self.root / path} is not writable")
        if not self.home.skel.is_dir():
            found.append(f"skeleton {self.home.skel} is missing")
        if not os.access(self.pending_dir, os.W_OK):
            found.append(f"state directory {self.state_dir} is not writable")
        return found

    def _ensure_locked(self, name: str, timing: "_Timing") -> tuple[Account, bool]:
        marker = self._pending(name)
        account = self.passwd.get(name)
        if account is not None:
            self._refuse_system(account)
            if marker.exists():
                try:
                    added = self._populate(account)
                except OSError as error:
                    self._log(name, account.uid, "failed", timing, logging.ERROR, reason=str(error))
                    raise AccountError(
                        f"could not complete the home of {name!r} (will retry on the next call): {error}"
                    ) from None
                marker.unlink()
                self._log(name, account.uid, "repaired", timing, added=len(added))
            return account, False

        marker.touch()
        try:
            self.useradd.create(name)
        except NameTaken as error:
            marker.unlink()
            self._log(name, None, "refused", timing, logging.WARNING, reason=error.stderr.strip())
            raise RefusedName(
                f"{name!r} clashes with an existing group or an account outside {self.passwd.path}"
            ) from None
        except DatabaseBusy:
            marker.unlink()
            raise
        except UserAddError as error:
            self._rollback(name, marker)
            self._log(name, None, "failed", timing, logging.ERROR, reason=str(error))
            raise AccountError(str(error)) from None

        account = self.passwd.get(name)
        if account is None:
            marker.unlink()
            raise AccountError(f"useradd succeeded but {name!r} is not in {self.passwd.path}")
        try:
            self._populate(account)
        except OSError as error:
            self._rollback(name, marker)
            self._log(name, account.uid, "rolled_back", timing, logging.ERROR, reason=str(error))
            raise AccountError(f"could not populate the home of {name!r}: {error}") from None
        marker.unlink()
        self._log(name, account.uid, "created", timing)
        return account, True

    def _populate(self, account: Account) -> list[str]:
        home = self.root / account.home.lstrip("/")
        return self.home.populate(home, account.uid, account.gid)

    def _rollback(self, name: str, marker: Path) -> None:
        """Remove a half-made account; if even that fails, keep the marker for a repair."""
        if self.passwd.get(name) is None:
            marker.unlink(missing_ok=True)
            return
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


class _Timing(NamedTuple):
    """When an ensure() call started and when it got the account lock (monotonic seconds)."""

    started: float
    locked: float | None
