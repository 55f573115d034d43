"""The adapter around shadow's `useradd` / `userdel` / `groupdel`: their argv and exit codes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hubsidecars.commands import CommandError, CommandFailed, Tool, run_command
from restuser.passwd import group_names

# Exit codes from the manual pages of shadow 4.13 (useradd(8), userdel(8), groupdel(8)).
USERADD = Tool("useradd", {
    1: "can't update password file",
    2: "invalid command syntax",
    3: "invalid argument to option",
    4: "UID already in use",
    6: "specified group doesn't exist",
    9: "username or group name already in use",
    10: "can't update group file",
    12: "can't create home directory",
    14: "can't update SELinux user mapping",
})  # fmt: skip
USERDEL = Tool("userdel", {
    1: "can't update password file",
    2: "invalid command syntax",
    6: "specified user doesn't exist",
    8: "user currently logged in",
    10: "can't update group file",
    12: "can't remove home directory",
})  # fmt: skip
GROUPDEL = Tool("groupdel", {
    2: "invalid command syntax",
    6: "specified group doesn't exist",
    8: "can't remove user's primary group",
    10: "can't update group file",
})  # fmt: skip

_EXISTS = 9
_NO_GROUP = 6
_UID_TROUBLE = 4
_DB_WRITE = (1, 10)  # "can't update password/group file", typically a lock held by someone else
# shadow's words for a lock file held by a live process ("lock FILE already used by PID N"),
# or a lock file another locker linked at the same moment ("FILE: lock file already used").
# Any other "cannot lock" (the lock file could not be written: disk full, read-only, EPERM)
# does not go away by retrying.
_HELD = ("already used by PID", "lock file already used")
# userdel exits 12 when only the mail spool or home removal had trouble; the account is gone.
_USERDEL_OK = (0, 12)


def _held_by_another(stderr: str) -> bool:
    return "cannot lock" in stderr and any(words in stderr for words in _HELD)


class UserAddError(Exception):
    """A shadow tool failed. exit_code is -1 when it never exited by itself (it could not be
    started, or overran its timeout and was killed)."""

    def __init__(self, message: str, exit_code: int, stderr: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.stderr = stderr

    @classmethod
    def from_failure(cls, failed: CommandFailed, hint: str = "") -> UserAddError:
        return cls(str(failed) + hint, failed.exit_code, failed.stderr)


class NameTaken(UserAddError):
    """useradd found the name (or a group of that name) already taken."""


class DatabaseBusy(UserAddError):
    """The account files are locked by another process (useradd met its lock); worth
    retrying later."""


@dataclass(frozen=True)
class UserAdd:
    skel: Path
    home_pattern: str = "/home/{name}"
    shell: str = "/bin/bash"
    uid_min: int = 1000
    uid_max: int = 59999
    groups: tuple[str, ...] = ()
    prefix: Path | None = None
    timeout: float = 60.0

    @property
    def root(self) -> Path:
        """The root holding etc/passwd & co.: the prefix, or /."""
        return self.prefix or Path("/")

    def home_for(self, name: str) -> str:
        return self.home_pattern.format(name=name)

    def create_argv(self, name: str) -> list[str]:
        argv = self._prefixed("useradd") + [
            "--no-log-init",
            "--create-home",
            "--skel", str(self.skel),
            "--home-dir", self.home_for(name),
            "--shell", self.shell,
            "--user-group",
            "--key", f"UID_MIN={self.uid_min}",
            "--key", f"UID_MAX={self.uid_max}",
            "--key", f"GID_MIN={self.uid_min}",
            "--key", f"GID_MAX={self.uid_max}",
        ]  # fmt: skip
        if self.groups:
            argv += ["--groups", ",".join(self.groups)]
        # "--" ends the options: nothing in `name` can ever be read as one.
        return argv + ["--", name]

    def delete_argv(self, name: str) -> list[str]:
        return self._prefixed("userdel") + ["--remove", "--", name]

    def create(self, name: str) -> str:
        """Create the account; return useradd's warnings ("" when none), e.g. that the home
        directory already existed and the skeleton was not copied into it."""
        try:
            return self._run(USERADD, self.create_argv(name)).stderr.strip()
        except CommandFailed as failed:
            if failed.exit_code == _EXISTS:
                raise NameTaken.from_failure(failed) from None
            if failed.exit_code in _DB_WRITE and _held_by_another(failed.stderr):
                raise DatabaseBusy.from_failure(failed) from None
            hint = ""
            if failed.exit_code == _NO_GROUP and self.groups:
                hint = f" (check the configured supplementary groups: {','.join(self.groups)})"
            elif failed.exit_code == _UID_TROUBLE:
                hint = f" (no free uid in the configured range {self.uid_min}-{self.uid_max}?)"
            raise UserAddError.from_failure(failed, hint) from None

    def delete(self, name: str) -> None:
        """Remove an account this adapter created, with its home and its private group."""
        try:
            self._run(USERDEL, self.delete_argv(name), ok_codes=_USERDEL_OK)
            # userdel keeps the private group when login.defs says USERGROUPS_ENAB no; create()
            # made that group (--user-group fails if it existed), so it goes too.
            if name in group_names(self.root):
                self._run(GROUPDEL, self._prefixed("groupdel") + ["--", name])
        except CommandFailed as failed:
            raise UserAddError.from_failure(failed) from None

    def _prefixed(self, command: str) -> list[str]:
        return [command, "--prefix", str(self.prefix)] if self.prefix is not None else [command]

    def _run(self, tool: Tool, argv: list[str], ok_codes=(0,)):
        """Run one shadow tool; failures to run it at all (missing binary, timeout) become
        UserAddError too, so that the store rolls back as for any other failure."""
        try:
            return run_command(argv, tool=tool, timeout=self.timeout, ok_codes=ok_codes)
        except CommandFailed:
            raise
        except CommandError as error:
            raise UserAddError(str(error), -1, getattr(error, "stderr_tail", "")) from None
