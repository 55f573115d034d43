"""May this server or user be culled, and why: pure functions of the hub's data and the clock.

Nothing here talks to the hub or to a server; hubpass.py fetches, asks and stops. The rules
are jupyterhub-idle-culler 2.0's (inactive >= timeout, or older than max_age; last_activity
falls back to started/created; --cull-admin-users only concerns deleting users), plus:
exempt users are never culled; a server's own account of its kernels (a `ServerActivity`)
keeps it while a kernel is busy or was active within the timeout, up to max_busy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from hubsidecars.hubapi import Server, User

Why = Literal[
    "idle", "max-age", "active", "pending", "not-ready", "exempt", "kind-not-culled",
    "no-activity", "busy", "unanswered",
]  # fmt: skip


@dataclass(frozen=True)
class Policy:
    timeout: float
    max_age: float = 0.0
    cull_users: bool = False
    cull_admin_users: bool = True
    cull_default_servers: bool = True
    cull_named_servers: bool = True
    max_busy: float = 43200.0
    # Where the numbers come from when not the command line's: "group gpu", or "most lenient
    # of groups gpu, research"; said in every reason the numbers decide.
    origin: str = ""

    @classmethod
    def from_settings(cls, settings) -> Policy:
        return cls(
            timeout=settings.timeout,
            max_age=settings.max_age,
            cull_users=settings.cull_users,
            cull_admin_users=settings.cull_admin_users,
            cull_default_servers=settings.cull_default_servers,
            cull_named_servers=settings.cull_named_servers,
            max_busy=settings.max_busy,
        )


@dataclass(frozen=True)
class Verdict:
    """`cull` says whether the thing may be culled; `why` is the rule that decided and
    `reason` says it for the log. `inactive` and `age` are seconds (None when unknown)."""

    cull: bool
    why: Why
    reason: str
    inactive: float | None = None
    age: float | None = None


@dataclass(frozen=True)
class ServerActivity:
    """What a server says about itself (api/kernels and api/terminals)."""

    kernels: int
    busy_kernels: int
    terminals: int
    latest: datetime | None  # the latest last_activity of any kernel or terminal


@dataclass(frozen=True)
class GroupRule:
    """A hub group's own rule (the TOML file's [groups.NAME]): what it leaves None, the
    command line's policy decides. max_age 0 is no limit."""

    timeout: float | None = None
    max_age: float | None = None
    max_busy: float | None = None
    exempt: bool = False


def policy_for(base: Policy, rules: Mapping[str, GroupRule],
               groups: Iterable[str]) -> tuple[Policy, str]:  # fmt: skip
    """The policy of a user in `groups` (and of their servers, named ones included), and the
    exempting group ("" when none). Only groups with a rule count; in several, each number is
    the most lenient of their rules (the longest timeout and max_busy, no max_age if one has
    none, exempt if one is), a group that leaves a number unset giving the base's."""
    ruled = sorted(group for group in set(groups) if group in rules)
    if not ruled:
        return base, ""
    exempting = next((group for group in ruled if rules[group].exempt), "")

    def pick(field: str) -> list[float]:
        values = [getattr(rules[g], field) for g in ruled]
        return [getattr(base, field) if value is None else value for value in values]

    max_ages = pick("max_age")
    timeout = max(pick("timeout"))
    policy = dataclasses.replace(
        base, timeout=timeout, max_age=0.0 if 0 in max_ages else max(max_ages),
        max_busy=max([*pick("max_busy"), timeout]),
        origin=f"group {exempting or ruled[0]}" if exempting or len(ruled) == 1 else (
            f"most lenient of groups {', '.join(ruled)}"),
    )  # fmt: skip
    return policy, exempting


def _by(policy: Policy) -> str:
    return f" ({policy.origin})" if policy.origin else ""


def server_label(server: Server) -> str:
    return f"{server.user}/{server.name}" if server.name else server.user


def hms(seconds: float | None) -> str:
    """H:MM:SS, as idle-culler logs it (settings and help use hubsidecars.config's
    format_duration: 1h30m)."""
    if seconds is None:
        return "unknown"
    whole = int(seconds)
    sign = "-" if whole < 0 else ""
    whole = abs(whole)
    return f"{sign}{whole // 3600}:{whole % 3600 // 60:02}:{whole % 60:02}"


def _seconds_since(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else (now - moment).total_seconds()


def judge_server(
    server: Server,
    now: datetime,
    policy: Policy,
    *,
    exempt: bool = False,
    last_activity: datetime | None = None,
) -> Verdict:
    """May `server` be stopped now? `last_activity` replaces the hub's value when the caller
    knows better (the hub's was moved by the culler's own question to the server)."""
    label = server_label(server)
    if exempt:
        return Verdict(False, "exempt", f"{server.user} is exempt from culling{_by(policy)}")
    if server.pending:
        return Verdict(False, "pending", f"pending {server.pending}")
    if server.ready is False:
        return Verdict(False, "not-ready", "neither ready nor pending")
    age = _seconds_since(server.started, now)
    activity = last_activity or server.last_activity
    inactive = _seconds_since(activity, now) if activity else age
    wanted = policy.cull_named_servers if server.name else policy.cull_default_servers
    if inactive is not None and inactive >= policy.timeout and wanted:
        return Verdict(True, "idle", f"idle {hms(inactive)} >= timeout "
                       f"{hms(policy.timeout)}{_by(policy)}", inactive, age)  # fmt: skip
    if policy.max_age and age is not None and age >= policy.max_age:
        return Verdict(True, "max-age", f"age {hms(age)} >= max_age "
                       f"{hms(policy.max_age)}{_by(policy)}", inactive, age)  # fmt: skip
    if inactive is None:
        return Verdict(False, "no-activity", f"{label}: neither last_activity nor started known")
    if not wanted:
        kind = "named" if server.name else "default"
        return Verdict(False, "kind-not-culled", f"{kind} servers are not culled", inactive, age)
    return Verdict(False, "active", _active(inactive, policy), inactive, age)


def _active(inactive: float, policy: Policy) -> str:
    rule = (f" < timeout {hms(policy.timeout)}{_by(policy)}" if policy.origin
            else "")  # fmt: skip
    if inactive < 0:  # activity pinned ahead (POST /users/NAME/activity allows up to an hour)
        return f"active (last_activity {hms(-inactive)} in the future){rule}"
    return f"active {hms(inactive)} ago{rule}"


def judge_user(
    user: User,
    now: datetime,
    policy: Policy,
    *,
    exempt: bool = False,
    servers_running: int = 0,
    last_activity: datetime | None = None,
) -> Verdict:
    """May `user` be deleted now (--cull-users)? Only without running servers."""
    if not policy.cull_users:
        return Verdict(False, "kind-not-culled", "users are not culled (--cull-users is off)")
    if exempt:
        return Verdict(False, "exempt", f"{user.name} is exempt from culling{_by(policy)}")
    if servers_running:
        return Verdict(False, "active", f"{servers_running} server(s) still running")
    age = _seconds_since(user.created, now)
    activity = last_activity or user.last_activity
    inactive = _seconds_since(activity, now) if activity else age
    # A hidden admin flag (None) counts as admin: --no-cull-admin-users must never be wrong.
    may_cull_admin = policy.cull_admin_users or user.admin is False
    if inactive is not None and inactive >= policy.timeout and may_cull_admin:
        return Verdict(True, "idle", f"idle {hms(inactive)} >= timeout "
                       f"{hms(policy.timeout)}{_by(policy)}", inactive, age)  # fmt: skip
    if policy.max_age and age is not None and age >= policy.max_age:
        return Verdict(True, "max-age", f"age {hms(age)} >= max_age "
                       f"{hms(policy.max_age)}{_by(policy)}", inactive, age)  # fmt: skip
    if inactive is None:
        return Verdict(False, "no-activity", "neither last_activity nor created known")
    if not may_cull_admin:
        what = "admin users are not culled" if user.admin else (
            "the admin flag is hidden (the token needs read:users): treated as an admin")
        return Verdict(False, "kind-not-culled", what, inactive, age)
    return Verdict(False, "active", _active(inactive, policy), inactive, age)


def judge_kernels(verdict: Verdict, activity: ServerActivity, now: datetime,
                  policy: Policy) -> Verdict:  # fmt: skip
    """Given a server chosen as idle and its own account of its kernels and terminals: keep
    it while a kernel is busy or any kernel or terminal was active within the timeout, unless
    the hub has seen nothing for max_busy. A max-age verdict stands whatever the kernels do."""
    if not verdict.cull or verdict.why != "idle":
        return verdict
    recent = _seconds_since(activity.latest, now)
    working = activity.busy_kernels > 0
    recently = recent is not None and recent < policy.timeout
    if not working and not recently:
        detail = "no kernels or terminals"
        if activity.kernels or activity.terminals:
            detail = (f"{activity.kernels} kernel(s) idle, {activity.terminals} terminal(s), "
                      f"last used {hms(recent)} ago")  # fmt: skip
        return Verdict(True, "idle", f"{verdict.reason}; {detail}", verdict.inactive, verdict.age)
    hub_idle = verdict.inactive or 0.0
    what = (f"{activity.busy_kernels} kernel(s) busy" if working
            else f"kernel/terminal active {hms(recent)} ago")  # fmt: skip
    if hub_idle >= policy.max_busy:
        return Verdict(True, "idle", f"{what}, but idle {hms(hub_idle)} >= max_busy "
                       f"{hms(policy.max_busy)}{_by(policy)}", verdict.inactive,
                       verdict.age)  # fmt: skip
    return Verdict(False, "busy", f"{what} (hub saw no activity for "
                   f"{hms(hub_idle)})", verdict.inactive, verdict.age)  # fmt: skip


def judge_unanswered(verdict: Verdict, problem: str, policy: Policy) -> Verdict:
    """Given a server chosen as idle that could not say what its kernels do (a redirect, a
    5xx, a timeout, a broken answer: `problem`): keep it for this pass, since a kernel may be
    working, unless the hub has seen nothing for max_busy."""
    if not verdict.cull or verdict.why != "idle":
        return verdict
    hub_idle = verdict.inactive or 0.0
    if hub_idle >= policy.max_busy:
        return Verdict(True, "idle", f"{verdict.reason}; its kernels could not be asked "
                       f"({problem}), and idle {hms(hub_idle)} >= max_busy "
                       f"{hms(policy.max_busy)}{_by(policy)}", verdict.inactive,
                       verdict.age)  # fmt: skip
    return Verdict(False, "unanswered", f"kept for this pass: its kernels could not be asked "
                   f"({problem}); hub saw no activity for {hms(hub_idle)}, "
                   f"stopped anyway at max_busy {hms(policy.max_busy)}{_by(policy)}",
                   verdict.inactive, verdict.age)  # fmt: skip
