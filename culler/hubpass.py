"""One pass of the hub backend: fetch, decide (policy.py), ask (probe.py), re-read, stop.

Servers chosen for culling are handled concurrently, up to `concurrency` at a time, each in
four steps: ask the server about its kernels (keep it while one works), re-read it from the hub
(keep it when it became active during the pass), stop it, and follow a 202 "slow to stop"
until the server is gone or `stop_wait` runs out. Users (--cull-users) are deleted after their
servers. Every step checks the stop event, so SIGTERM cuts a pass short between steps.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from culler.footprints import publish_footprints
from culler.group_rules import read_group_rules
from culler.outcomes import Outcome, PassResult
from culler.policy import (
    Policy,
    Verdict,
    hms,
    judge_kernels,
    judge_server,
    judge_unanswered,
    judge_user,
    policy_for,
    server_label,
)
from culler.probe import ProbeFailed, ProbeMarks, probe_server
from hubsidecars.clock import utcnow
from hubsidecars.config import ConfigError
from hubsidecars.hubapi import HubClient, HubError, Server, User
from hubsidecars.logs import log_event

ServerKey = tuple[str, ...]
MAX_THREADS = 256
FOLLOW_UP_EVERY = 1.0  # seconds between looks at a server that is stopping


def server_key(server: Server) -> ServerKey:
    return ("server", server.user, server.name)


def user_key(name: str) -> ServerKey:
    return ("user", name)


class HubStateHidden(HubError):
    """The token's scopes hide what culling needs (servers, their activity)."""


@dataclass(frozen=True)
class HubOptions:
    exclude_users: frozenset[str] = frozenset()
    exclude_groups: tuple[str, ...] = ()
    check_kernels: bool = True
    probe_timeout: float = 10.0
    concurrency: int = 10
    dry_run: bool = False
    stop_wait: float = 60.0
    pending_limit: float = 600.0
    remove_named_servers: bool = False
    probe_state_file: str = ""
    config_file: str = ""  # the TOML file whose [groups.NAME] rules are read every pass

    @classmethod
    def from_settings(cls, settings, config_file: str = "") -> HubOptions:
        return cls(
            config_file=config_file,
            exclude_users=frozenset(settings.exclude_users),
            exclude_groups=tuple(settings.exclude_groups),
            check_kernels=settings.check_kernels,
            probe_timeout=settings.probe_timeout,
            concurrency=settings.concurrency or MAX_THREADS,
            dry_run=settings.dry_run,
            stop_wait=settings.stop_wait,
            pending_limit=settings.pending_limit,
            remove_named_servers=settings.remove_named_servers,
            probe_state_file=settings.probe_state_file,
        )


class HubCuller:
    def __init__(
        self,
        client: HubClient,
        policy: Policy,
        options: HubOptions,
        *,
        logger: logging.Logger | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.client = client
        self.policy = policy
        self.options = options
        self.log = logger or logging.getLogger("culler.hub")
        self.now = now
        self.marks = ProbeMarks(options.probe_state_file, self.log)
        self.pending_since: dict[ServerKey, datetime] = {}
        self._reported_pending: set[ServerKey] = set()
        self._said_once: set[str] = set()
        self._said_lock = threading.Lock()
        self._policies: dict[str, tuple[Policy, str]] = {}
        self._rules_seen: dict | None = None

    # -- the pass --------------------------------------------------------------------------

    def run_pass(self, result: PassResult, stop: threading.Event) -> frozenset[tuple[str, str]]:
        """Cull what is due; add one Outcome per server (and user, with --cull-users) seen.
        Returns the (user, server name) of every server still running or pending, for the
        Docker backend's orphan check. Raises HubError when the hub cannot be read."""
        now = self.now()
        exempt = self._exempt_users()
        self._policies = self._group_policies()
        malformed: list[Outcome] = []

        def skip_malformed(model, error: Exception) -> None:
            name = model.get("name") if isinstance(model, dict) else None
            malformed.append(Outcome("user", str(name), "failed", "the hub's model of this user "
                                     f"cannot be read: {type(error).__name__}: {error}"))

        users = _unique(self.client.iter_users(state="active", on_malformed=skip_malformed))
        idle_users = _unique(self.client.iter_users(state="inactive", on_malformed=skip_malformed)
                             ) if self.policy.cull_users else []  # fmt: skip
        for outcome in malformed:
            self._record(result, outcome)
        self._check_visible(users)

        present: set[ServerKey] = set()
        candidates: list[tuple[User, Server, Verdict]] = []
        for user in users:
            for server in user.servers.values():
                key = server_key(server)
                present.add(key)
                policy, group_exempt = self._policy_of(user.name)
                verdict = judge_server(
                    server, now, policy, exempt=user.name in exempt or bool(group_exempt),
                    last_activity=self.marks.real_activity(key, server.last_activity),
                )  # fmt: skip
                if verdict.cull:
                    candidates.append((user, server, verdict))
                else:
                    self._record(result, self._not_culled(server, verdict, now))
        self._forget_gone(present, {user.name for user in users})

        outcomes = run_concurrently(
            [lambda u=u, s=s, v=v: self._cull_server(u, s, v, exempt, stop)
             for u, s, v in candidates],
            self.options.concurrency, stop, on_done=self._log,
        )  # fmt: skip
        for outcome in outcomes:
            result.add(outcome)
        if not self.options.dry_run:
            self.marks.save()
            publish_footprints(self.options.probe_state_file)  # for hub-stats (footprints.py)

        stopped = {(o.target) for o in outcomes if o.result in ("culled", "would-cull")}
        if self.policy.cull_users:
            emptied = [user for user in users
                       if all(server_label(s) in stopped for s in user.servers.values())]  # fmt: skip
            user_outcomes = run_concurrently(
                [lambda u=u: self._cull_user(u, exempt, stop) for u in emptied + idle_users],
                self.options.concurrency, stop, on_done=self._log,
            )  # fmt: skip
            for outcome in user_outcomes:
                result.add(outcome)
        return frozenset(
            (user.name, server.name) for user in users for server in user.servers.values()
            if server_label(server) not in stopped or self.options.dry_run
        )  # fmt: skip

    def _policy_of(self, name: str) -> tuple[Policy, str]:
        """The policy of user `name` this pass (their groups' rules), and the group that
        exempts them ("" for none)."""
        return self._policies.get(name, (self.policy, ""))

    def _group_policies(self) -> dict[str, tuple[Policy, str]]:
        """Each member of a group with a rule in the config file: their policy. The file is
        read again every pass; a file or group that cannot be read fails the pass (nothing is
        culled by rules it could not read)."""
        try:
            rules = read_group_rules(self.options.config_file)
        except ConfigError as error:
            raise HubError(f"group rules: {error}") from None
        if rules != self._rules_seen:
            self._rules_seen = rules
            for name, rule in sorted(rules.items()):
                log_event(self.log, "group rule", group=name, exempt=rule.exempt,
                          **{key: hms(value) for key in ("timeout", "max_age",
                             "max_busy") if (value := getattr(rule, key)) is not None})  # fmt: skip
        groups_of: dict[str, set[str]] = {}
        for group in rules:
            for member in self._members(group, "group rule for"):
                groups_of.setdefault(member, set()).add(group)
        return {name: policy_for(self.policy, rules, groups)
                for name, groups in groups_of.items()}  # fmt: skip

    def _members(self, group: str, what: str) -> list[str]:
        model = self.client.get_json(f"/groups/{quote(group, safe='')}")
        if model is None:
            raise HubError(f"{what} group {group!r}: no such group in the hub")
        if "users" not in model:
            raise HubStateHidden(f"the members of {what} group {group!r} are hidden: the "
                                 "token needs read:groups")  # fmt: skip
        return list(model["users"])

    def _exempt_users(self) -> frozenset[str]:
        """--exclude-users plus the members of --exclude-groups, read every pass. A group that
        cannot be read fails the pass: better no culling than culling someone exempt."""
        exempt = set(self.options.exclude_users)
        for group in self.options.exclude_groups:
            exempt.update(self._members(group, "excluded"))
        return frozenset(exempt)

    def _check_visible(self, users: list[User]) -> None:
        for user in users:
            if "servers" in user.hidden:
                raise HubStateHidden(
                    "the hub hides users' servers: the token needs read:servers; culling nothing"
                )
            for server in user.servers.values():
                if "last_activity" in server.hidden:
                    raise HubStateHidden(
                        "the hub hides servers' last_activity: the token needs read:servers "
                        "(and read:users:activity); culling nothing"
                    )
                return

    def _not_culled(self, server: Server, verdict: Verdict, now: datetime) -> Outcome:
        label = server_label(server)
        if verdict.why != "pending":
            return Outcome("server", label, "active" if verdict.why == "active" else "skipped",
                           verdict.reason)  # fmt: skip
        key = server_key(server)
        since = self.pending_since.setdefault(key, now)
        waited = (now - since).total_seconds()
        reason = verdict.reason
        if waited >= self.options.pending_limit:
            reason = (f"{verdict.reason} for {hms(waited)} >= pending_limit "
                      f"{hms(self.options.pending_limit)}")  # fmt: skip
            if key not in self._reported_pending:
                self._reported_pending.add(key)
                log_event(self.log, "server stuck pending", logging.WARNING, target=label,
                          pending=server.pending, pending_for=hms(waited))  # fmt: skip
        return Outcome("server", label, "skipped", reason)

    def _forget_gone(self, present: set[ServerKey], user_names: set[str]) -> None:
        for key in list(self.pending_since):
            if key not in present:
                del self.pending_since[key]
                self._reported_pending.discard(key)
        self.marks.forget_except(present | {user_key(name) for name in user_names})

    # -- one server ------------------------------------------------------------------------

    def _cull_server(self, user: User, server: Server, verdict: Verdict,
                     exempt: frozenset[str], stop: threading.Event) -> Outcome:  # fmt: skip
        label = server_label(server)
        if stop.is_set():
            return Outcome("server", label, "skipped", "the culler is stopping")
        try:
            if self.options.check_kernels and verdict.why == "idle" and self.options.dry_run:
                # Any question through the proxy counts as the user's activity to the hub:
                # a dry run would keep idle servers alive for the daemon. It asks no server.
                verdict = Verdict(True, verdict.why, f"{verdict.reason}; kernels not asked (a "
                                  "dry run asks no server: that would count as activity)",
                                  verdict.inactive, verdict.age)  # fmt: skip
            elif self.options.check_kernels and verdict.why == "idle":
                verdict = self._ask_server(user, server, verdict)
                if not verdict.cull:
                    return Outcome("server", label, "kept-busy", verdict.reason)
            if stop.is_set():
                return Outcome("server", label, "skipped", "the culler is stopping")
            kept = self._reread(server, exempt)
            if kept is not None:
                return kept
            if self.options.dry_run:
                return Outcome("server", label, "would-cull", verdict.reason)
            remove = self.options.remove_named_servers and bool(server.name)
            answer = self.client.stop_server(server.user, server.name, remove=remove)
            if answer == "absent":
                return Outcome("server", label, "skipped", "already stopped")
            if answer == "stopping":
                return self._follow_stop(server, verdict, stop)
            return Outcome("server", label, "culled", verdict.reason)
        except HubError as error:
            return Outcome("server", label, "failed", str(error))
        except Exception as error:  # a bug must not take the other servers down with it
            log_event(self.log, "unexpected error", logging.ERROR, exc_info=error, target=label)
            return Outcome("server", label, "failed", f"{type(error).__name__}: {error}")

    def _ask_server(self, user: User, server: Server, verdict: Verdict) -> Verdict:
        """The verdict once the server has said what its kernels do; the hub's verdict when
        it cannot say (logged once per kind of failure)."""
        asked_from = self.now()
        before = self.marks.real_activity(server_key(server), server.last_activity)
        user_before = self.marks.real_activity(user_key(user.name), user.last_activity)
        try:
            activity = probe_server(self.client, server, timeout=self.options.probe_timeout)
        except ProbeFailed as failure:
            # A question that failed may still have passed the proxy: its footprint too is ours.
            asked_until = self.now()
            self.marks.remember(server_key(server), asked_from, asked_until, before)
            self.marks.remember(user_key(user.name), asked_from, asked_until, user_before)
            if not failure.hub_decides:
                judged = judge_unanswered(verdict, str(failure), self._policy_of(user.name)[0])
                if not judged.cull:  # (past max_busy, the outcome's line says why it goes)
                    log_event(self.log, "cannot ask a server about its kernels; keeping it "
                              "this pass", logging.WARNING, target=server_label(server),
                              kind=failure.kind, reason=str(failure))  # fmt: skip
                return judged
            if failure.kind == "no-kernel-api":
                self._say_once(failure.kind, "a server has no kernel API (not a jupyter_server); "
                               "deciding by the hub's activity alone", logging.INFO,
                               server=server_label(server), reason=str(failure))  # fmt: skip
                return verdict
            self._say_once(failure.kind, "cannot ask servers about their kernels; deciding by "
                           "the hub's activity alone", server=server_label(server),
                           reason=str(failure))  # fmt: skip
            return verdict
        asked_until = self.now()
        real = max((m for m in (before, activity.latest) if m is not None), default=None)
        self.marks.remember(server_key(server), asked_from, asked_until, real)
        user_real = max((m for m in (user_before, activity.latest) if m), default=None)
        self.marks.remember(user_key(user.name), asked_from, asked_until, user_real)
        return judge_kernels(verdict, activity, asked_until, self._policy_of(user.name)[0])

    def _reread(self, server: Server, exempt: frozenset[str]) -> Outcome | None:
        """Read the server again right before stopping it: an Outcome when it must be left
        alone now (gone, or active since the pass began), None when it may be stopped."""
        label = server_label(server)
        fresh_user = self.client.get_user(server.user)
        fresh = fresh_user.servers.get(server.name) if fresh_user else None
        if fresh is None:
            return Outcome("server", label, "skipped", "stopped by someone else during the pass")
        policy, group_exempt = self._policy_of(server.user)
        verdict = judge_server(
            fresh, self.now(), policy, exempt=server.user in exempt or bool(group_exempt),
            last_activity=self.marks.real_activity(server_key(fresh), fresh.last_activity),
        )  # fmt: skip
        if not verdict.cull:
            return Outcome("server", label, "kept-active",
                           f"became active during the pass: {verdict.reason}")  # fmt: skip
        return None

    def _follow_stop(self, server: Server, verdict: Verdict, stop: threading.Event) -> Outcome:
        """The hub answered 202: look until the server is gone, up to stop_wait."""
        label = server_label(server)
        started = time.monotonic()
        while not stop.wait(FOLLOW_UP_EVERY):
            waited = time.monotonic() - started
            user = self.client.get_user(server.user)
            if user is None or server.name not in user.servers:
                return Outcome("server", label, "culled",
                               f"{verdict.reason}; stopped after {waited:.0f} s")  # fmt: skip
            if waited >= self.options.stop_wait:
                break
        return Outcome("server", label, "stopping",
                       f"{verdict.reason}; still stopping (202); the next pass looks again")  # fmt: skip

    # -- one user --------------------------------------------------------------------------

    def _cull_user(self, user: User, exempt: frozenset[str], stop: threading.Event) -> Outcome:
        if stop.is_set():
            return Outcome("user", user.name, "skipped", "the culler is stopping")
        if "created" in user.hidden and self.policy.max_age:
            self._say_once("created-hidden", "users' creation time is hidden (the token needs "
                           "read:users): --max-age does not apply to users")  # fmt: skip
        activity = self.marks.real_activity(user_key(user.name), user.last_activity)
        policy, group_exempt = self._policy_of(user.name)
        exempt = exempt | ({user.name} if group_exempt else set())
        verdict = judge_user(user, self.now(), policy, exempt=user.name in exempt,
                             last_activity=activity)  # fmt: skip
        if not verdict.cull:
            result = "active" if verdict.why == "active" else "skipped"
            return Outcome("user", user.name, result, verdict.reason)
        if self.options.dry_run:
            return Outcome("user", user.name, "would-cull", verdict.reason)
        try:
            fresh = self.client.get_user(user.name)
            if fresh is None:
                return Outcome("user", user.name, "skipped", "deleted by someone else")
            if fresh.servers and not all(s.pending == "stop" for s in fresh.servers.values()):
                return Outcome("user", user.name, "kept-active", "has a server again")
            again = judge_user(fresh, self.now(), policy, exempt=user.name in exempt,
                               last_activity=self.marks.real_activity(
                                   user_key(user.name), fresh.last_activity))  # fmt: skip
            if not again.cull:
                return Outcome("user", user.name, "kept-active",
                               f"became active during the pass: {again.reason}")  # fmt: skip
            self.client.delete_user(user.name)
        except HubError as error:
            return Outcome("user", user.name, "failed", str(error))
        except Exception as error:
            log_event(self.log, "unexpected error", logging.ERROR, exc_info=error,
                      target=user.name)  # fmt: skip
            return Outcome("user", user.name, "failed", f"{type(error).__name__}: {error}")
        return Outcome("user", user.name, "culled", verdict.reason)

    # -- logging ---------------------------------------------------------------------------

    def _record(self, result: PassResult, outcome: Outcome) -> None:
        result.add(outcome)
        self._log(outcome)

    def _log(self, outcome: Outcome) -> None:
        """One line per decision, as it is made (culled servers as their stops complete)."""
        quiet = outcome.result in ("active", "skipped") and not self.options.dry_run
        level = logging.WARNING if outcome.result == "failed" else logging.INFO
        if quiet:
            level = logging.DEBUG
        if self.log.isEnabledFor(level):
            log_event(self.log, f"{outcome.kind} {outcome.result}", level, target=outcome.target,
                      reason=outcome.reason)  # fmt: skip

    def _say_once(self, kind: str, message: str, level: int = logging.WARNING,
                  **fields) -> None:  # fmt: skip
        with self._said_lock:
            first = kind not in self._said_once
            self._said_once.add(kind)
        log_event(self.log, message, level if first else logging.DEBUG, **fields)


def _unique(users: Iterable[User]) -> list[User]:
    """The listing without repeats (a hub whose pages overlap would list a user twice)."""
    seen: dict[str, User] = {}
    for user in users:
        seen.setdefault(user.name, user)
    return list(seen.values())


def run_concurrently(tasks: Iterable[Callable[[], Outcome]], limit: int,
                     stop: threading.Event,
                     on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:  # fmt: skip
    """Run `tasks` on up to `limit` daemon threads; their outcomes in task order.

    Daemon threads, not a ThreadPoolExecutor: the executor's workers are joined at interpreter
    exit, so one hung request would keep a stopping daemon alive past systemd's timeout.
    Tasks check `stop` themselves; once it is set, waiting ends after the running ones finish
    or the caller's stop timeout abandons them.
    """
    tasks = list(tasks)
    if not tasks:
        return []
    results: list[Outcome | None] = [None] * len(tasks)
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(tasks)):
        todo.put(index)

    def work() -> None:
        while True:
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            results[index] = tasks[index]()
            if on_done is not None:
                on_done(results[index])

    threads = [threading.Thread(target=work, name=f"cull-{n}", daemon=True)
               for n in range(min(limit, len(tasks)))]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [outcome for outcome in results if outcome is not None]
