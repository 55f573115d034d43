"""The adapter around shadow's `useradd` / `userdel`: builds their argv and maps exit codes."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

# Exit codes from useradd(8).
_EXISTS = 9
_NO_GROUP = 6
_UID_TROUBLE = 4
_DB_WRITE = (1, 10)  # "can't update password/group file", typically a lock held by someone else


class UserAddError(Exception):
    def __init__(self, message: str, exit_code: int, stderr: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.stderr = stderr

    @classmethod
    def from_result(cls, command: str, result: subprocess.CompletedProcess, hint: str = ""):
        message = f"{command} exited {result.returncode}: {result.stderr.strip()}{hint}"
        return cls(message, result.returncode, result.stderr)


class NameTaken(UserAddError):
    """useradd found the name (or a group of that name) already taken."""


class DatabaseBusy(UserAddError):
    """useradd could not lock or rewrite the account files; worth retrying later."""


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

    def create(self, name: str) -> None:
        result = self._run(self.create_argv(name))
        if result.returncode == 0:
            return
        if result.returncode == _EXISTS:
            raise NameTaken.from_result("useradd", result)
        if result.returncode in _DB_WRITE and "lock" in result.stderr:
            raise DatabaseBusy.from_result("useradd", result)
        hint = {
            _NO_GROUP: " (a supplementary group in the configuration does not exist)",
            _UID_TROUBLE: " (no free uid in the configured range?)",
        }.get(result.returncode, "")
        raise UserAddError.from_result("useradd", result, hint)

    def delete(self, name: str) -> None:
        """Remove an account this adapter created, with its home and its private group."""
        result = self._run(self.delete_argv(name))
        # userdel exits 12 when only the mail spool or home removal had trouble; the account is gone.
        if result.returncode not in (0, 12):
            raise UserAddError.from_result("userdel", result)
        # userdel keeps the private group when login.defs says USERGROUPS_ENAB no; create()
        # made that group (--user-group fails if it existed), so it goes too.
        if self._group_exists(name):
            result = self._run(self._prefixed("groupdel") + ["--", name])
            if result.returncode != 0:
                raise UserAddError.from_result("groupdel", result)

    def _group_exists(self, name: str) -> bool:
        group_file = self.root / "etc" / "group"
        with open(group_file, encoding="utf-8", errors="replace") as handle:
            return any(line.split(":", 1)[0] == name for line in handle)

    def _prefixed(self, command: str) -> list[str]:
        return [command, "--prefix", str(self.prefix)] if self.prefix is not None else [command]

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
            timeout=self.timeout,
            check=False,
        )
