"""Which Docker containers and services are users' servers, and whose (pure functions).

A spawner's name template (`jupyter-{username}--{servername}`) becomes a regular expression
that matches the whole name and reads the user back out of it. The environment a JupyterHub
spawner gives every server (JUPYTERHUB_USER, JUPYTERHUB_SERVER_NAME) is the better witness and
wins when present; the name is the fallback.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from string import Formatter

from hubsidecars.config import ConfigError

# DockerSpawner >= 12 escapes user and server names to [a-z0-9], with '-' plus two lowercase
# hex digits for every other byte, so a '-' in an escaped name always starts an escape; that
# is what makes its '--' separator before the server name unambiguous.
_ESCAPED = r"(?:[a-z0-9]|-[0-9a-f]{2})+"
_PLACEHOLDERS = {
    "username": rf"(?P<username>{_ESCAPED})",
    "servername": rf"(?P<servername>{_ESCAPED})",
    "md5": r"(?P<md5>[0-9a-f]{32})",
    "any": r"[A-Za-z0-9_.-]+",
}
PLACEHOLDERS = tuple(_PLACEHOLDERS)


class BadTemplate(ConfigError):
    """A name template with an unknown placeholder or broken braces."""


def template_regex(template: str) -> re.Pattern[str]:
    parts = []
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as exc:
        raise BadTemplate(f"name template {template!r}: {exc}") from None
    for literal, field, spec, conversion in parsed:
        parts.append(re.escape(literal))
        if field is None:
            continue
        if field not in _PLACEHOLDERS or spec or conversion:
            raise BadTemplate(
                f"name template {template!r}: unknown placeholder {{{field}}} "
                f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})"
            )
        if field in ("username", "servername", "md5") and f"(?P<{field}>" in "".join(parts):
            raise BadTemplate(f"name template {template!r}: {{{field}}} twice")
        parts.append(_PLACEHOLDERS[field])
    return re.compile("".join(parts))


def unescape(text: str) -> str:
    """Undo DockerSpawner's escaping ('-' + two hex digits per byte of UTF-8)."""
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "-":
            raw.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(text[i].encode())
            i += 1
    return raw.decode("utf-8", errors="replace")


def user_md5(user: str) -> str:
    """cassinyio's SwarmSpawner names a user's services after this."""
    return hashlib.md5(user.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Owner:
    """Whose server a container or service is, as far as it can tell.

    `user`/`server` come from the environment, or from the name (then `from_name`: the server
    name is lowercased there); `md5` alone when only a {md5} template matched.
    """

    user: str | None = None
    server: str | None = None
    md5: str | None = None
    from_name: bool = False

    @property
    def known(self) -> bool:
        return self.user is not None or self.md5 is not None

    def describe(self) -> str:
        if self.user is not None:
            return f"{self.user}/{self.server}" if self.server else self.user
        return f"md5:{self.md5}" if self.md5 else "unknown"

    def has_server_in(self, hub_servers: frozenset[tuple[str, str]]) -> bool:
        """True when the hub has this owner's server running or pending. When the name does
        not say which server, any server of the user counts: removing is only for the sure."""
        if self.user is not None:
            if not self.from_name:
                return (self.user, self.server or "") in hub_servers
            server = (self.server or "").lower()
            return any(u == self.user and s.lower() == server for u, s in hub_servers)
        if self.md5 is not None:
            return any(user_md5(u) == self.md5 for u, _ in hub_servers)
        return False


class NameMatcher:
    """Candidates by name template and/or label; their owners by environment or name."""

    def __init__(self, templates: tuple[str, ...], labels: tuple[str, ...]) -> None:
        self.templates = tuple(template_regex(t) for t in templates)
        pairs = (label.partition("=") for label in labels)
        self.labels = tuple((key, value if sep else None) for key, sep, value in pairs)

    def name_match(self, name: str) -> re.Match[str] | None:
        for regex in self.templates:
            match = regex.fullmatch(name)
            if match:
                return match
        return None

    def label_match(self, labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        return any(
            key in labels and (value is None or labels[key] == value) for key, value in self.labels
        )

    def matches(self, name: str, labels: dict[str, str] | None) -> bool:
        return self.name_match(name) is not None or self.label_match(labels)

    def owner(self, name: str, env: dict[str, str]) -> Owner:
        if env.get("JUPYTERHUB_USER"):
            return Owner(env["JUPYTERHUB_USER"], env.get("JUPYTERHUB_SERVER_NAME", ""))
        match = self.name_match(name)
        if match is None:
            return Owner()
        groups = match.groupdict()
        if groups.get("username"):
            server = groups.get("servername")
            return Owner(
                unescape(groups["username"]), unescape(server) if server else "", from_name=True
            )
        if groups.get("md5"):
            return Owner(md5=groups["md5"], from_name=True)
        return Owner()


def hub_env(env_list: list[str] | None) -> dict[str, str]:
    """Only the JUPYTERHUB_USER and JUPYTERHUB_SERVER_NAME entries of a container's
    environment: the rest holds secrets (the server's API token) and is never kept."""
    wanted = ("JUPYTERHUB_USER", "JUPYTERHUB_SERVER_NAME")
    found = {}
    for entry in env_list or ():
        key, _, value = entry.partition("=")
        if key in wanted:
            found[key] = value
    return found
