"""Which account names restuser accepts: a strict pattern plus a deny list."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

# Lowercase POSIX portable filename characters, starting with a letter, at most 32 long.
DEFAULT_NAME_PATTERN = r"[a-z][a-z0-9_-]{0,31}"

# Names that must never become hub accounts even if no such account exists yet.
DEFAULT_DENY_NAMES = (
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp",
    "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "nogroup", "messagebus",
    "sshd", "polkitd", "adm", "admin", "administrator", "operator", "staff", "sudo", "wheel",
    "shadow", "utmp", "tty", "disk", "kmem", "dialout", "docker", "jupyterhub", "jovyan",
    "systemd-*", "hub-*", "postgres", "mysql", "redis",
)  # fmt: skip


class BadName(ValueError):
    """The name can never be an account name here (HTTP 400)."""


class RefusedName(ValueError):
    """The name is well formed but reserved or denied (HTTP 403)."""


@dataclass(frozen=True)
class NamePolicy:
    pattern: str = DEFAULT_NAME_PATTERN
    deny: tuple[str, ...] = field(default=DEFAULT_DENY_NAMES)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", re.compile(self.pattern))
        # All deny globs as one regex: checked on every request, lookups included.
        denied = "|".join(fnmatch.translate(glob) for glob in self.deny) or r"(?!)"
        object.__setattr__(self, "_denied", re.compile(denied))

    def check(self, name: str) -> str:
        """Return `name` if it may be an account name; raise BadName or RefusedName."""
        # fullmatch, not match with "$": "$" would accept a trailing newline.
        if not isinstance(name, str) or not self._compiled.fullmatch(name):  # type: ignore[attr-defined]
            raise BadName(f"account names must match {self.pattern}")
        if name.startswith("-") or not name.isascii():
            raise BadName("account names must not look like an option or hold non-ASCII")
        if self._denied.match(name):  # type: ignore[attr-defined]
            raise RefusedName(f"{name!r} is a reserved name")
        return name
