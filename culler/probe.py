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

from culler.policy import ServerActivity
from hubsidecars.hubapi import HubClient, HubError, MissingScope, Server, parse_time

# How far the hub's timestamp of our own request may lie outside the time we measured around
# it (the proxy stamps the request when it passes; the hub copies it later).
FOOTPRINT_SLACK = timedelta(seconds=2)
# Questions remembered per server at most: enough for a pass every 10 s against the hub's
# default last_activity_interval of 5 minutes. Usually far fewer are kept: those older than the
# question whose stamp the hub reports are dropped (ProbeMarks.real_activity).
WINDOWS_KEPT = 32


class ProbeFailed(Exception):
    """The server could not be asked, or said nothing about its kernels.

    `kind` groups failures for the log. Two kinds of failure let the hub's activity decide,
    because asking again would fail the same way for every server and keeping them all would
    stop culling altogether: "tokens" (no token could be made for the user: the culler's token
    lacks the tokens scope) and "scope" (the server refused the user's own token). A third is a
    definite answer: "no-kernel-api" (a 404 for api/kernels that the server itself sent, not
    the hub behind the proxy: the server is not a jupyter_server; see `definite`).
    Every other kind says nothing about the kernels ("redirect", "error" for a 5xx or another
    4xx, "timeout", "unreachable", "answer" for a body that is malformed, not a list, or too
    big): the server is kept for this pass, up to max_busy."""

    HUB_DECIDES = frozenset({"tokens", "scope", "no-kernel-api"})

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def hub_decides(self) -> bool:
        return self.kind in self.HUB_DECIDES


# jupyter_server counts every API request as activity (api/status, and what the single-user
# server reports to the hub) unless it carries this; the proxy's own record it cannot prevent.
_UNTRACKED = "?no_track_activity=1"
# Every answer of JupyterHub itself carries it; the proxy sends requests for a server it has no
# route to (yet, or any more) to the hub, so a 404 with it is the hub's, not the server's.
_HUB_HEADER = "X-JupyterHub-Version"


def probe_server(client: HubClient, server: Server, *, timeout: float) -> ServerActivity:
    """The kernels and terminals of `server`, through the proxy. Raises ProbeFailed, and
    nothing else whatever the server answers.

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
        kernels = _ask(client, server, "api/kernels", token, timeout)
        if kernels is None:
            raise ProbeFailed("no-kernel-api", "the server itself answers 404 for api/kernels: "
                              "not a jupyter_server")  # fmt: skip
        terminals = _ask(client, server, "api/terminals", token, timeout)
        return summarize(kernels, terminals or [])
    except ProbeFailed:
        raise
    except Exception as error:  # noqa: BLE001 - no answer of one server may fail a pass
        raise ProbeFailed("answer", f"unreadable answer: {type(error).__name__}") from None
    finally:
        try:
            client.delete_user_token(server.user, token_id)
        except HubError:
            pass  # it expires on its own


def _ask(client: HubClient, server: Server, path: str, token: str,
         timeout: float) -> list | None:  # fmt: skip
    """The list a jupyter_server answers at `path`; None when the server itself says there
    is no such API (a 404 not from the hub). Raises ProbeFailed."""
    try:
        reply = client.user_server_get(server, path + _UNTRACKED, timeout=timeout, retries=0,
                                       token=token)  # fmt: skip
    except MissingScope as error:
        raise ProbeFailed("scope", f"the server refused the token: it needs access:servers "
                          f"({error})") from None  # fmt: skip
    except HubError as error:
        text = str(error)
        if "larger than" in text:
            raise ProbeFailed("answer", text) from None
        if error.status in (401, 403):
            raise ProbeFailed("scope", f"the server refused the token: it needs access:servers "
                              f"({text})") from None  # fmt: skip
        if error.status is not None:
            raise ProbeFailed("error", text) from None
        kind = "timeout" if "Timeout" in text or "timeout" in text else (
            "answer" if "larger than" in text else "unreachable")  # fmt: skip
        raise ProbeFailed(kind, text) from None
    status = reply.status_code
    if status == 404 and _HUB_HEADER not in reply.headers:
        return None
    if status == 404:
        raise ProbeFailed("redirect", f"{path}: 404 from the hub: the proxy has no route to the "
                          "server (public URL not the proxy's?)")  # fmt: skip
    if 300 <= status < 400:
        where = reply.headers.get("Location", "")[:200]
        raise ProbeFailed("redirect", f"{path}: {status} to {where or '(nowhere)'}: the proxy "
                          "has no route to the server (just restarted?), or the public URL is "
                          "not the proxy's")  # fmt: skip
    if status != 200:
        raise ProbeFailed("answer", f"{path}: {status}, not 200")
    try:
        answer = json.loads(reply.content)
    except (ValueError, RecursionError, UnicodeDecodeError) as error:
        raise ProbeFailed("answer", f"{path}: not readable JSON ({type(error).__name__})") from None
    if not isinstance(answer, list):
        raise ProbeFailed("answer", f"{path}: the answer is not a list")
    return answer


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
    """Per server (and per user), the recent times the culler asked and the real activity then.

    `real_activity(key, reported)` turns the hub's last_activity back into the real one when
    the hub's value is the culler's own footprint. The hub copies the proxy's stamp only every
    last_activity_interval (5 minutes by default) while the culler may ask every pass, so the
    stamp it reports can be that of an older question than the last: every question's window
    is kept (up to WINDOWS_KEPT per server, newest last) until the hub reports activity after
    the newest, which is a user's. Thread-safe: servers are probed concurrently.
    Kept in a small file when `path` is set, so that a restart (or --once runs from a timer)
    does not mistake the last run's questions for activity either.
    """

    def __init__(self, path: str = "", logger: logging.Logger | None = None) -> None:
        self._marks: dict[tuple[str, ...], list[Mark]] = {}
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
                self._add(tuple(entry["key"]), Mark(
                    parse_time(entry["from"]), parse_time(entry["until"]),
                    parse_time(entry.get("real")),
                ))  # fmt: skip
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
                       for key, marks in self._marks.items() for mark in marks]  # fmt: skip
        write_atomically(self.path, json.dumps(entries) + "\n", mode=0o600)

    def _add(self, key: tuple[str, ...], mark: Mark) -> None:
        marks = sorted([*self._marks.get(key, ()), mark], key=lambda m: m.asked_from)
        self._marks[key] = marks[-WINDOWS_KEPT:]

    def remember(self, key: tuple[str, ...], asked_from: datetime, asked_until: datetime,
                 real_activity: datetime | None) -> None:  # fmt: skip
        with self._lock:
            self._add(key, Mark(asked_from, asked_until, real_activity))

    def real_activity(self, key: tuple[str, ...], reported: datetime | None) -> datetime | None:
        """`reported` unless it falls within one of our questions to that server (then the
        latest real activity we knew). Activity after our last question is a user's: the
        marks go."""
        with self._lock:
            marks = self._marks.get(key)
            if not marks or reported is None:
                return reported
            if reported > marks[-1].asked_until + FOOTPRINT_SLACK:
                del self._marks[key]
                return reported
            slack = FOOTPRINT_SLACK
            for index, mark in enumerate(marks):
                if mark.asked_from - slack <= reported <= mark.asked_until + slack:
                    # the hub's value only moves forward: older questions' stamps cannot return
                    del marks[:index]
                    return max((m.real_activity for m in marks if m.real_activity), default=None)
            return reported

    def forget_except(self, keys: set[tuple[str, ...]]) -> None:
        """Drop the marks of servers that no longer run."""
        with self._lock:
            for key in set(self._marks) - keys:
                del self._marks[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._marks)
