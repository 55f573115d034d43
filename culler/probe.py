"""Ask a user's server about its kernels and terminals, and remember what the asking did.

The hub only sees network activity through the proxy, so a kernel computing with no browser
attached looks idle to it (jupyterhub/jupyterhub#1498). The server itself knows better:
`api/kernels` gives each kernel's execution_state and last_activity, `api/terminals` each
terminal's last_activity.

Asking has a cost: the request goes through the proxy, which the hub later copies into the
server's last_activity, and jupyter_server counts it as API activity it reports to the hub too.
`ProbeMarks` remembers when each server was asked and what its real activity was, so that the
next pass can tell the culler's own footprint from a user's: without that, every question would
restart the server's idle clock and an idle server would never be culled.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from hubsidecars.hubapi import HubClient, HubError, MissingScope, Server, parse_time

from culler.policy import ServerActivity

# How far the hub's timestamp of our own request may lie outside the time we measured around
# it (the proxy stamps the request when it passes; the hub copies it later).
FOOTPRINT_SLACK = timedelta(seconds=2)


class ProbeFailed(Exception):
    """The server could not be asked; `kind` groups failures for the once-only log line:
    "tokens" (no token could be made for the user: the culler's token lacks the tokens scope),
    "scope" (the server refused the user's token), "gone", "timeout", "unreachable", "answer"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# jupyter_server counts every API request as activity (api/status, and what the single-user
# server reports to the hub) unless it carries this; the proxy's own record it cannot prevent.
_UNTRACKED = "?no_track_activity=1"


def probe_server(client: HubClient, server: Server, *, timeout: float) -> ServerActivity:
    """The kernels and terminals of `server`, through the proxy. Raises ProbeFailed.

    Whatever reaches a user's server, its user can read (their own code runs there): the
    question carries a short-lived token OWNED BY THAT USER and limited to their own servers,
    made for it and revoked after, never the culler's own token, which can stop everyone's
    servers. Making it needs the `tokens` scope."""
    try:
        token_id, token = client.create_user_token(
            server.user, scopes=[f"access:servers!user={server.user}"],
            expires_in=int(max(60, 3 * timeout)), note="hub-culler: kernel check",
        )  # fmt: skip
    except MissingScope as error:
        raise ProbeFailed("tokens", "cannot make a token for the user's server: the culler's "
                          f"token needs the tokens scope ({error})") from None  # fmt: skip
    except HubError as error:
        raise ProbeFailed("tokens", f"cannot make a token for the user's server: {error}") from None
    try:
        return _ask(client, server, token, timeout)
    finally:
        try:
            client.delete_user_token(server.user, token_id)
        except HubError:
            pass  # it expires on its own


def _ask(client: HubClient, server: Server, token: str, timeout: float) -> ServerActivity:
    try:
        kernels = client.user_server_json(server, "api/kernels" + _UNTRACKED, timeout=timeout,
                                          retries=0, token=token)  # fmt: skip
        terminals = client.user_server_json(server, "api/terminals" + _UNTRACKED,
                                            timeout=timeout, retries=0, token=token)  # fmt: skip
    except MissingScope as error:
        raise ProbeFailed("scope", f"the server refused the token: it needs access:servers "
                          f"({error})") from None  # fmt: skip
    except HubError as error:
        text = str(error)
        if error.status == 403:
            raise ProbeFailed("scope", f"the server refused the token: it needs access:servers "
                              f"({text})") from None  # fmt: skip
        if error.status in (302, 303, 424, 503):
            # the proxy sends requests for a server it has no route to back to the hub
            raise ProbeFailed("gone", f"the server is not running any more ({text})") from None
        kind = "timeout" if "Timeout" in text or "timeout" in text else (
            "unreachable" if error.status is None else "answer")  # fmt: skip
        raise ProbeFailed(kind, text) from None
    if kernels is None:
        raise ProbeFailed("answer", "the server has no api/kernels (not a jupyter_server?)")
    if not isinstance(kernels, list) or not isinstance(terminals or [], list):
        raise ProbeFailed("answer", "api/kernels or api/terminals did not answer a list")
    return summarize(kernels, terminals or [])


def summarize(kernels: list, terminals: list) -> ServerActivity:
    """Reduce jupyter_server's kernel and terminal models to what the policy needs."""
    moments = []
    busy = 0
    for kernel in kernels:
        if not isinstance(kernel, dict):
            continue
        # Only "busy" counts: jupyter_server reports a kernel no client ever connected to as
        # "starting" for as long as it lives, so "starting" would keep a server for ever.
        if kernel.get("execution_state") == "busy":
            busy += 1
        moments.append(_time(kernel.get("last_activity")))
    for terminal in terminals:
        if isinstance(terminal, dict):
            moments.append(_time(terminal.get("last_activity")))
    known = [moment for moment in moments if moment is not None]
    return ServerActivity(
        kernels=len(kernels), busy_kernels=busy, terminals=len(terminals),
        latest=max(known) if known else None,
    )  # fmt: skip


def _time(value) -> datetime | None:
    try:
        return parse_time(value) if isinstance(value, str) else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Mark:
    asked_from: datetime  # clock before the first request of the probe
    asked_until: datetime  # clock after the last
    real_activity: datetime | None  # the latest activity that was not ours


class ProbeMarks:
    """Per server (and per user), the last time the culler asked and the real activity then.

    `real_activity(key, reported)` turns the hub's last_activity back into the real one when
    the hub's value is the culler's own footprint. Thread-safe: servers are probed concurrently.
    Kept in a small file when `path` is set, so that a restart (or --once runs from a timer)
    does not mistake the last run's questions for activity either.
    """

    def __init__(self, path: str = "", logger: logging.Logger | None = None) -> None:
        self._marks: dict[tuple[str, ...], Mark] = {}
        self._lock = threading.Lock()
        self.path = path
        self.log = logger or logging.getLogger("culler.probe")
        if path:
            self._load()

    def _load(self) -> None:
        from hubsidecars.logs import log_event

        try:
            with open(self.path, encoding="utf-8") as handle:
                entries = json.load(handle)
            for entry in entries:
                self._marks[tuple(entry["key"])] = Mark(
                    parse_time(entry["from"]), parse_time(entry["until"]),
                    parse_time(entry.get("real")),
                )  # fmt: skip
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as error:
            self._marks.clear()
            log_event(self.log, "ignoring unreadable probe state; starting afresh",
                      logging.WARNING, path=self.path, error=str(error)[:200])  # fmt: skip

    def save(self) -> None:
        """Write the marks to `path` (atomically; a failure is one warning)."""
        if not self.path:
            return
        from culler.report import write_atomically

        with self._lock:
            entries = [{"key": list(key), "from": mark.asked_from.isoformat(),
                        "until": mark.asked_until.isoformat(),
                        "real": mark.real_activity.isoformat() if mark.real_activity else None}
                       for key, mark in self._marks.items()]  # fmt: skip
        write_atomically(self.path, json.dumps(entries) + "\n", mode=0o600)

    def remember(self, key: tuple[str, ...], asked_from: datetime, asked_until: datetime,
                 real_activity: datetime | None) -> None:  # fmt: skip
        with self._lock:
            self._marks[key] = Mark(asked_from, asked_until, real_activity)

    def real_activity(self, key: tuple[str, ...], reported: datetime | None) -> datetime | None:
        """`reported` unless it falls within our last question to that server (then the real
        activity remembered then). Activity after our question is a user's: the mark goes."""
        with self._lock:
            mark = self._marks.get(key)
            if mark is None or reported is None:
                return reported
            if reported > mark.asked_until + FOOTPRINT_SLACK:
                del self._marks[key]
                return reported
            if reported >= mark.asked_from - FOOTPRINT_SLACK:
                return mark.real_activity
            return reported

    def forget_except(self, keys: set[tuple[str, ...]]) -> None:
        """Drop the marks of servers that no longer run."""
        with self._lock:
            for key in set(self._marks) - keys:
                del self._marks[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._marks)
