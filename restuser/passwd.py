"""Read accounts from the account database (etc/passwd under the configured root).

Reads the file directly rather than through NSS so that `--prefix` roots work the same way
as the host. The file's text is cached until it changes on disk, and a lookup parses only
the one line it needs: after every creation each worker sees a changed file, and parsing all
of it inside the account lock would slow every creation down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    shell: str

    def to_json(self, created: bool) -> dict:
        # Spelled out: dataclasses.asdict deep-copies and was a third of a lookup's time.
        return {"name": self.name, "uid": self.uid, "gid": self.gid, "home": self.home,
                "shell": self.shell, "created": created}  # fmt: skip


class PasswdFile:
    def __init__(self, root: Path) -> None:
        self.path = root / "etc" / "passwd"
        # (stamp, text) as one value: threads of a worker share this object, and a stamp and
        # a text stored separately could pair a new stamp with an older text, hiding a
        # just-created account until the file changed again.
        self._cached: tuple[tuple[int, int, int] | None, str] = (None, "")

    def get(self, name: str) -> Account | None:
        text = self._current_text()
        key = name + ":"
        if text.startswith(key):
            start = 0
        else:
            found = text.find("\n" + key)
            if found < 0:
                return None
            start = found + 1
        end = text.find("\n", start)
        fields = text[start : end if end >= 0 else len(text)].split(":")
        if len(fields) != 7 or not fields[2].isdigit() or not fields[3].isdigit():
            return None
        return Account(fields[0], int(fields[2]), int(fields[3]), fields[5], fields[6])

    def _current_text(self) -> str:
        stamp, text = self._cached
        if _stamp(os.stat(self.path)) == stamp:
            return text
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            # The stamp of the file actually read: shadow replaces passwd by renaming.
            stamp = _stamp(os.fstat(handle.fileno()))
            text = handle.read()
        self._cached = (stamp, text)
        return text


def _stamp(info: os.stat_result) -> tuple[int, int, int]:
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def group_names(root: Path) -> set[str]:
    """The names in `root`/etc/group (raises OSError when it cannot be read)."""
    with open(root / "etc" / "group", encoding="utf-8", errors="replace") as handle:
        return {line.split(":", 1)[0] for line in handle}
