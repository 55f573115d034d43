"""Which Docker containers and Swarm services are users' servers, whose, and of which hub:
the one rule hub-culler (--docker) and hub-stats (--docker) share (pure functions).

Candidates are selected by name template or label. A spawner's name template
(`jupyter-{username}--{servername}`) becomes a regular expression that matches the whole name
and reads the user back out of it. The environment a JupyterHub spawner gives every server is
the better witness and wins when present: JUPYTERHUB_USER and JUPYTERHUB_SERVER_NAME say whose
server it is, JUPYTERHUB_API_URL which hub started it (two hubs on one engine, e.g. staging and
production, differ there and nowhere else: the names and labels the spawners give are the
same). What the spawners really set, read in their code (dockerspawner 14.0.0,
jhub-swarmspawner 0.6.3): no labels of their own (jhub: `image_name` on the container spec);
DockerSpawner and dockerspawner's SwarmSpawner name `{prefix}-{username}` and
`{prefix}-{username}--{servername}` with the user and server names escaped; jhub-swarmspawner
`jupyter-{last 32 characters of the raw user name}-1` for every server of the user (older
releases used the md5 of the user name).
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

DOCKERSPAWNER_NAMES = ("jupyter-{username}", "jupyter-{username}--{servername}")
# dockerspawner's SwarmSpawner names services as DockerSpawner does its containers; then
# cassinyio's / jhub-swarmspawner's: the md5 of the user name (before 0.6), then the raw name
# (its last 32 characters) and "1" whatever the server (0.6.3).
SWARMSPAWNER_NAMES = (*DOCKERSPAWNER_NAMES, "jupyter-{md5}-{any}", "jupyter-{any}-1")
SERVICE_LABEL = "com.docker.swarm.service.name"  # on a swarm task's container


class BadTemplate(ConfigError):
    """A name template with an unknown placeholder or broken braces."""


def template_regex(template: str) -> re.Pattern[str]:
    if any(char in template for char in "*?["):
        raise BadTemplate(f"name template {template!r}: shell globs are not templates "
                          f"(use {{any}} for any text)")  # fmt: skip
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
    """Only the JUPYTERHUB_USER, JUPYTERHUB_SERVER_NAME and JUPYTERHUB_API_URL entries of a
    container's environment: the rest holds secrets (the server's API token) and is never
    kept."""
    wanted = ("JUPYTERHUB_USER", "JUPYTERHUB_SERVER_NAME", "JUPYTERHUB_API_URL")
    found = {}
    for entry in env_list or ():
        key, _, value = entry.partition("=")
        if key in wanted:
            found[key] = value
    return found


def same_api_url(one: str, other: str) -> bool:
    return one.strip().rstrip("/") == other.strip().rstrip("/")


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate is a user's server of this hub; `reason` says why not."""

    ours: bool
    owner: Owner
    reason: str = ""


class UserServers:
    """The rule: which containers and services are users' servers of one hub, and whose.

    `hub_api_urls`: the JUPYTERHUB_API_URL this hub's servers get (empty: any hub's);
    `require_hub_env`: only what carries JUPYTERHUB_USER (off for tmpnb-style pools, which no
    hub started: those are then told by name or label alone, and of no hub in particular).
    """

    def __init__(self, container_names: tuple[str, ...], service_names: tuple[str, ...],
                 labels: tuple[str, ...] = (), *, require_hub_env: bool = True,
                 hub_api_urls: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.containers = NameMatcher(container_names, labels)
        self.services = NameMatcher(service_names, labels)
        self.require_hub_env = require_hub_env
        self.hub_api_urls = tuple(url for url in hub_api_urls if url)

    def matcher(self, kind: str) -> NameMatcher:
        return self.services if kind == "service" else self.containers

    def candidate(self, kind: str, name: str, labels: dict[str, str] | None) -> bool:
        """Worth a closer look (its environment): the name or a label fits."""
        return self.matcher(kind).matches(name, labels)

    def judge(self, kind: str, name: str, env: dict[str, str]) -> Verdict:
        """Given a candidate's hub environment (hub_env): ours, and whose."""
        user = env.get("JUPYTERHUB_USER")
        if not user and self.require_hub_env:
            return Verdict(False, Owner(),
                           "no JUPYTERHUB_USER in its environment: not a hub server")
        if user and self.hub_api_urls:
            url = env.get("JUPYTERHUB_API_URL", "")
            if not any(same_api_url(url, ours) for ours in self.hub_api_urls):
                ours = ", ".join(self.hub_api_urls)
                return Verdict(False, Owner(), f"another hub's server: JUPYTERHUB_API_URL "
                               f"{url or '(unset)'} is not {ours}")  # fmt: skip
        return Verdict(True, self.matcher(kind).owner(name, env))

    def task_of(self, labels: dict[str, str] | None) -> str | None:
        """The service a swarm task's container runs for, or None for a plain container."""
        return (labels or {}).get(SERVICE_LABEL) or None

    def container(self, name: str, labels: dict[str, str] | None,
                  env: dict[str, str]) -> Verdict:  # fmt: skip
        """A running container, judged whole: a swarm task by its service's name."""
        service = self.task_of(labels)
        kind, name = ("service", service) if service else ("container", name)
        if not self.candidate(kind, name, labels):
            return Verdict(False, Owner(), "neither its name nor a label fits")
        return self.judge(kind, name, env)
