"""Read accounts from the account database (etc/passwd under the configured root).

Reads the file directly rather than through NSS so that `--prefix` roots work the same way
as the host; the parsed file is cached until it changes on disk.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    shell: str

    def to_json(self, created: bool) -> dict:
        return {**asdict(self), "created": created}


class PasswdFile:
    def __init__(self, root: Path) -> None:
        self.path = root / "etc" / "passwd"
        self._stamp: tuple[int, int, int] | None = None
        self._accounts: dict[str, Account] = {}

    def get(self, name: str) -> Account | None:
        self._refresh()
        return self._accounts.get(name)

    def uids(self) -> set[int]:
        self._refresh()
        return {account.uid for account in self._accounts.values()}

    def _refresh(self) -> None:
        info = os.stat(self.path)
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp == self._stamp:
            return
        accounts = {}
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.rstrip("\n").split(":")
                if len(fields) != 7 or not fields[2].isdigit() or not fields[3].isdigit():
                    continue
                accounts[fields[0]] = Account(
                    fields[0], int(fields[2]), int(fields[3]), fields[5], fields[6]
                )
        self._accounts, self._stamp = accounts, stamp
