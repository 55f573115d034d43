"""The culling policy as an admin asks about it: which server or user goes, and why.

Pure: hub data as the hub client's dataclasses and a fixed clock. Every rule is compared with
jupyterhub-idle-culler 2.0's handle_server / handle_user (the anchor); where hub-culler differs
on purpose (exempt users, busy kernels) the case says so.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from culler.policy import (
    Policy,
    ServerActivity,
    Verdict,
    judge_kernels,
    judge_server,
    judge_user,
    server_label,
)
from culler.policy import (
    hms as format_duration,
)
from hubsidecars.hubapi import Server, User

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
TIMEOUT = 600.0
UNSET = object()


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def server(name: str = "", *, last_activity=UNSET, started=UNSET, pending=None, ready=True,
           user: str = "ada") -> Server:  # fmt: skip
    return Server(
        user=user, name=name, url=f"/user/{user}/{name}",
        started=ago(7200) if started is UNSET else started,
        last_activity=ago(60) if last_activity is UNSET else last_activity,
        pending=pending, ready=ready,
    )  # fmt: skip


def user(name: str = "ada", *, admin=False, created=UNSET, last_activity=UNSET,
         hidden: frozenset[str] = frozenset()) -> User:  # fmt: skip
    return User(
        name=name, admin=admin, groups=(),
        created=ago(30 * 86400) if created is UNSET else created,
        last_activity=ago(60) if last_activity is UNSET else last_activity,
        servers={}, hidden=hidden,
    )  # fmt: skip


# --- servers ------------------------------------------------------------------------------

SERVER_CASES = [
    # (question, server, policy, exempt, expected cull, expected why)
    ("idle one second less than the timeout: kept",
     server(last_activity=ago(TIMEOUT - 1)), Policy(TIMEOUT), False, False, "active"),
    ("idle exactly the timeout: culled (idle-culler: inactive >= timeout)",
     server(last_activity=ago(TIMEOUT)), Policy(TIMEOUT), False, True, "idle"),
    ("idle longer than the timeout: culled",
     server(last_activity=ago(3 * TIMEOUT)), Policy(TIMEOUT), False, True, "idle"),
    ("never active, started long ago: idle since it started",
     server(last_activity=None, started=ago(TIMEOUT + 5)), Policy(TIMEOUT), False, True, "idle"),
    ("never active, started a minute ago: kept",
     server(last_activity=None, started=ago(60)), Policy(TIMEOUT), False, False, "active"),
    ("neither last_activity nor started known: kept",
     server(last_activity=None, started=None), Policy(TIMEOUT), False, False, "no-activity"),
    ("starting (pending spawn), idle for ages: never culled",
     server(pending="spawn", last_activity=ago(9999)), Policy(TIMEOUT, max_age=60), False,
     False, "pending"),
    ("stopping (pending stop): never culled",
     server(pending="stop", last_activity=ago(9999)), Policy(TIMEOUT), False, False, "pending"),
    ("neither ready nor pending: never culled",
     server(ready=False, last_activity=ago(9999)), Policy(TIMEOUT, max_age=60), False, False,
     "not-ready"),
    ("idle named server with --no-cull-named-servers: kept",
     server("gpu", last_activity=ago(9999)), Policy(TIMEOUT, cull_named_servers=False), False,
     False, "kind-not-culled"),
    ("idle default server with --no-cull-named-servers: culled",
     server(last_activity=ago(9999)), Policy(TIMEOUT, cull_named_servers=False), False, True,
     "idle"),
    ("idle default server with --no-cull-default-servers: kept",
     server(last_activity=ago(9999)), Policy(TIMEOUT, cull_default_servers=False), False,
     False, "kind-not-culled"),
    ("idle named server with --no-cull-default-servers: culled",
     server("gpu", last_activity=ago(9999)), Policy(TIMEOUT, cull_default_servers=False), False,
     True, "idle"),
    ("active server older than --max-age: culled all the same",
     server(last_activity=ago(5), started=ago(7200)), Policy(TIMEOUT, max_age=3600), False,
     True, "max-age"),
    ("active server exactly --max-age old: culled (>=, as idle-culler)",
     server(last_activity=ago(5), started=ago(3600)), Policy(TIMEOUT, max_age=3600), False,
     True, "max-age"),
    ("active server younger than --max-age: kept",
     server(last_activity=ago(5), started=ago(3599)), Policy(TIMEOUT, max_age=3600), False,
     False, "active"),
    ("--max-age applies to named servers even with --no-cull-named-servers (as idle-culler)",
     server("gpu", last_activity=ago(5), started=ago(7200)),
     Policy(TIMEOUT, max_age=3600, cull_named_servers=False), False, True, "max-age"),
    ("exempt user's idle server: kept",
     server(last_activity=ago(9999)), Policy(TIMEOUT), True, False, "exempt"),
    ("exempt beats --max-age",
     server(last_activity=ago(9999), started=ago(99999)), Policy(TIMEOUT, max_age=60), True,
     False, "exempt"),
]  # fmt: skip


@pytest.mark.parametrize(
    "question, hub_server, policy, exempt, cull, why",
    SERVER_CASES, ids=[case[0] for case in SERVER_CASES],
)  # fmt: skip
def test_which_servers_are_culled(question, hub_server, policy, exempt, cull, why):
    verdict = judge_server(hub_server, NOW, policy, exempt=exempt)
    assert (verdict.cull, verdict.why) == (cull, why), verdict.reason


def test_an_idle_verdict_says_how_long_and_against_what():
    verdict = judge_server(server(last_activity=ago(3725)), NOW, Policy(TIMEOUT))
    assert verdict.reason == "idle 1:02:05 >= timeout 0:10:00"
    assert verdict.inactive == 3725 and verdict.age == 7200


def test_the_max_age_verdict_says_the_age():
    verdict = judge_server(server(last_activity=ago(1), started=ago(90061)), NOW,
                           Policy(TIMEOUT, max_age=86400))  # fmt: skip
    assert verdict.reason == "age 25:01:01 >= max_age 24:00:00"


def test_a_better_last_activity_from_the_caller_replaces_the_hubs():
    """The hub's value may be the culler's own question to the server (probe footprint): the
    caller passes the real activity, and the policy judges by it."""
    footprint = server(last_activity=ago(10))
    assert not judge_server(footprint, NOW, Policy(TIMEOUT)).cull
    verdict = judge_server(footprint, NOW, Policy(TIMEOUT), last_activity=ago(TIMEOUT + 1))
    assert (verdict.cull, verdict.inactive) == (True, TIMEOUT + 1)


def test_labels_and_durations_read_like_idle_cullers_log():
    assert server_label(server()) == "ada"
    assert server_label(server("gpu")) == "ada/gpu"
    assert format_duration(None) == "unknown"
    assert format_duration(0) == "0:00:00"
    assert format_duration(86399.9) == "23:59:59"
    assert format_duration(-61) == "-0:01:01"


# --- users (--cull-users) ------------------------------------------------------------------

USER_CASES = [
    # (question, user, policy, exempt, servers running, expected cull, expected why)
    ("--cull-users off: no user is ever deleted",
     user(last_activity=ago(99999)), Policy(TIMEOUT), False, 0, False, "kind-not-culled"),
    ("idle user without servers: deleted",
     user(last_activity=ago(TIMEOUT)), Policy(TIMEOUT, cull_users=True), False, 0, True, "idle"),
    ("recently active user: kept",
     user(last_activity=ago(TIMEOUT - 1)), Policy(TIMEOUT, cull_users=True), False, 0, False,
     "active"),
    ("idle user with a server still running: kept",
     user(last_activity=ago(99999)), Policy(TIMEOUT, cull_users=True), False, 1, False,
     "active"),
    ("never active user: idle since created",
     user(last_activity=None, created=ago(TIMEOUT)), Policy(TIMEOUT, cull_users=True), False, 0,
     True, "idle"),
    ("idle admin, --cull-admin-users (the default): deleted",
     user(admin=True, last_activity=ago(99999)), Policy(TIMEOUT, cull_users=True), False, 0,
     True, "idle"),
    ("idle admin, --no-cull-admin-users: kept",
     user(admin=True, last_activity=ago(99999)),
     Policy(TIMEOUT, cull_users=True, cull_admin_users=False), False, 0, False,
     "kind-not-culled"),
    # idle-culler deletes an admin older than --max-age even with --cull-admin-users=False
    # (its max_age check ignores the admin flag); hub-culler does the same, see the report.
    ("admin older than --max-age, --no-cull-admin-users: deleted by age, as idle-culler",
     user(admin=True, last_activity=ago(5), created=ago(7200)),
     Policy(TIMEOUT, max_age=3600, cull_users=True, cull_admin_users=False), False, 0, True,
     "max-age"),
    ("active user older than --max-age: deleted",
     user(last_activity=ago(5), created=ago(7200)),
     Policy(TIMEOUT, max_age=3600, cull_users=True), False, 0, True, "max-age"),
    ("created hidden (no read:users): --max-age cannot apply to an active user",
     user(last_activity=ago(5), created=None, hidden=frozenset({"created"})),
     Policy(TIMEOUT, max_age=3600, cull_users=True), False, 0, False, "active"),
    ("created hidden and never active: kept, nothing to measure",
     user(last_activity=None, created=None, hidden=frozenset({"created"})),
     Policy(TIMEOUT, max_age=3600, cull_users=True), False, 0, False, "no-activity"),
    ("exempt idle user: kept",
     user(last_activity=ago(99999)), Policy(TIMEOUT, cull_users=True), True, 0, False, "exempt"),
    ("exempt beats --max-age for users too",
     user(last_activity=ago(99999), created=ago(99999)),
     Policy(TIMEOUT, max_age=60, cull_users=True), True, 0, False, "exempt"),
]  # fmt: skip


@pytest.mark.parametrize(
    "question, hub_user, policy, exempt, running, cull, why",
    USER_CASES, ids=[case[0] for case in USER_CASES],
)  # fmt: skip
def test_which_users_are_deleted(question, hub_user, policy, exempt, running, cull, why):
    verdict = judge_user(hub_user, NOW, policy, exempt=exempt, servers_running=running)
    assert (verdict.cull, verdict.why) == (cull, why), verdict.reason


def test_a_user_whose_admin_flag_is_hidden_is_spared_by_no_cull_admin_users():
    # Without read:users the hub leaves `admin` out of the model (User.admin None). idle-culler
    # reads user["admin"], fails with KeyError and deletes nobody; hub-culler must not guess
    # "not an admin" when told to spare admins. (Was a defect: it counted as a non-admin.)
    hidden = user(admin=None, last_activity=ago(99999), hidden=frozenset({"admin", "created"}))
    policy = Policy(TIMEOUT, cull_users=True, cull_admin_users=False)
    verdict = judge_user(hidden, NOW, policy)
    assert (verdict.cull, verdict.why) == (False, "kind-not-culled")
    assert "read:users" in verdict.reason
    # with --cull-admin-users (the default) the flag does not matter
    assert judge_user(hidden, NOW, Policy(TIMEOUT, cull_users=True)).cull


# --- the server's own account of its kernels ------------------------------------------------

IDLE = judge_server(server(last_activity=ago(2 * TIMEOUT)), NOW, Policy(TIMEOUT))
KERNEL_CASES = [
    # (question, hub verdict, what the server says, policy, expected cull, expected why)
    ("a busy kernel keeps an idle-looking server",
     IDLE, ServerActivity(1, 1, 0, ago(2 * TIMEOUT)), Policy(TIMEOUT), False, "busy"),
    ("a busy kernel keeps it even when the server gives no last_activity",
     IDLE, ServerActivity(1, 1, 0, None), Policy(TIMEOUT), False, "busy"),
    ("an idle kernel used within the timeout keeps it",
     IDLE, ServerActivity(1, 0, 0, ago(TIMEOUT - 1)), Policy(TIMEOUT), False, "busy"),
    ("a terminal used within the timeout keeps it",
     IDLE, ServerActivity(0, 0, 1, ago(30)), Policy(TIMEOUT), False, "busy"),
    ("idle kernels last used exactly the timeout ago: culled",
     IDLE, ServerActivity(2, 0, 1, ago(TIMEOUT)), Policy(TIMEOUT), True, "idle"),
    ("all kernels idle and old: culled",
     IDLE, ServerActivity(2, 0, 0, ago(3 * TIMEOUT)), Policy(TIMEOUT), True, "idle"),
    ("no kernels or terminals at all: culled",
     IDLE, ServerActivity(0, 0, 0, None), Policy(TIMEOUT), True, "idle"),
    ("busy, but the hub has seen nothing for max_busy: culled (a runaway kernel)",
     IDLE, ServerActivity(1, 1, 0, ago(1)), Policy(TIMEOUT, max_busy=2 * TIMEOUT), True, "idle"),
    ("busy, the hub has seen nothing for a second less than max_busy: kept",
     IDLE, ServerActivity(1, 1, 0, ago(1)), Policy(TIMEOUT, max_busy=2 * TIMEOUT + 1), False,
     "busy"),
]  # fmt: skip


@pytest.mark.parametrize(
    "question, verdict, activity, policy, cull, why",
    KERNEL_CASES, ids=[case[0] for case in KERNEL_CASES],
)  # fmt: skip
def test_what_the_kernels_say_about_an_idle_server(question, verdict, activity, policy, cull,
                                                   why):  # fmt: skip
    judged = judge_kernels(verdict, activity, NOW, policy)
    assert (judged.cull, judged.why) == (cull, why), judged.reason
    assert (judged.inactive, judged.age) == (verdict.inactive, verdict.age)


def test_a_max_age_verdict_is_not_overridden_by_busy_kernels():
    too_old = judge_server(server(last_activity=ago(5), started=ago(7200)), NOW,
                           Policy(TIMEOUT, max_age=3600))  # fmt: skip
    assert too_old.why == "max-age"
    assert judge_kernels(too_old, ServerActivity(3, 3, 2, ago(1)), NOW,
                         Policy(TIMEOUT, max_age=3600)) == too_old  # fmt: skip


def test_a_kept_verdict_is_not_turned_into_a_cull_by_idle_kernels():
    kept = Verdict(False, "active", "active 0:01:00 ago", 60.0, 7200.0)
    assert judge_kernels(kept, ServerActivity(0, 0, 0, None), NOW, Policy(TIMEOUT)) == kept


def test_kernel_reasons_say_what_the_server_said():
    busy = judge_kernels(IDLE, ServerActivity(2, 1, 0, ago(1)), NOW, Policy(TIMEOUT))
    assert busy.reason == "1 kernel(s) busy (hub saw no activity for 0:20:00)"
    idle = judge_kernels(IDLE, ServerActivity(2, 0, 1, ago(3600)), NOW, Policy(TIMEOUT))
    assert idle.reason == ("idle 0:20:00 >= timeout 0:10:00; 2 kernel(s) idle, 1 terminal(s), "
                           "last used 1:00:00 ago")  # fmt: skip
    runaway = judge_kernels(IDLE, ServerActivity(1, 1, 0, ago(1)), NOW,
                            Policy(TIMEOUT, max_busy=TIMEOUT))  # fmt: skip
    assert runaway.reason == "1 kernel(s) busy, but idle 0:20:00 >= max_busy 0:10:00"


# --- a server that could not say what its kernels do -------------------------------------------


def test_an_unanswered_question_keeps_an_idle_server_until_max_busy():
    from culler.policy import judge_unanswered

    policy = Policy(timeout=TIMEOUT, max_busy=3600.0)
    idle = judge_server(server(last_activity=ago(900)), NOW, policy)
    kept = judge_unanswered(idle, "api/kernels: 302 to /hub/user/ada/api/kernels", policy)
    assert (kept.cull, kept.why) == (False, "unanswered")
    assert "302" in kept.reason and "max_busy 1:00:00" in kept.reason
    old = judge_server(server(last_activity=ago(4000)), NOW, policy)
    stopped = judge_unanswered(old, "timeout", policy)
    assert stopped.cull and "max_busy 1:00:00" in stopped.reason
    # a max-age verdict stands whatever the kernels do
    aged = judge_server(server(started=ago(9000)), NOW, Policy(timeout=TIMEOUT, max_age=3600))
    assert judge_unanswered(aged, "timeout", policy) == aged


# --- per-group rules ----------------------------------------------------------------------------


def test_a_group_rule_replaces_the_numbers_it_sets_and_says_so():
    from culler.policy import GroupRule, policy_for

    base = Policy(timeout=3600.0, max_age=0.0, max_busy=43200.0)
    rules = {"gpu": GroupRule(timeout=1800.0, max_age=8 * 3600.0)}
    policy, exempting = policy_for(base, rules, ["gpu", "students"])
    assert (policy.timeout, policy.max_age, policy.max_busy, exempting) == (
        1800.0, 8 * 3600.0, 43200.0, "")  # fmt: skip
    verdict = judge_server(server(last_activity=ago(1900)), NOW, policy)
    assert verdict.cull and verdict.reason == "idle 0:31:40 >= timeout 0:30:00 (group gpu)"
    assert policy_for(base, rules, ["students"]) == (base, "")


def test_in_several_groups_each_number_is_the_most_lenient():
    from culler.policy import GroupRule, policy_for

    base = Policy(timeout=3600.0, max_age=0.0, max_busy=43200.0)
    rules = {
        "gpu": GroupRule(timeout=1800.0, max_age=8 * 3600.0, max_busy=3600.0),
        "research": GroupRule(timeout=86400.0),  # max_age and max_busy: the base's
        "short": GroupRule(max_age=3600.0, timeout=600.0),
    }
    policy, _ = policy_for(base, rules, ["gpu", "research"])
    # the base has no max_age, which research leaves as is: no limit
    assert (policy.timeout, policy.max_age, policy.max_busy) == (86400.0, 0.0, 86400.0)
    assert policy.origin == "most lenient of groups gpu, research"
    policy, _ = policy_for(base, rules, ["gpu", "short"])
    assert (policy.timeout, policy.max_age, policy.max_busy) == (1800.0, 8 * 3600.0, 43200.0)
    active = judge_server(server(last_activity=ago(700)), NOW, policy)
    assert active.reason == ("active 0:11:40 ago < timeout 0:30:00 (most lenient of groups "
                             "gpu, short)")  # fmt: skip


def test_one_exempting_group_exempts_and_is_named():
    from culler.policy import GroupRule, policy_for

    rules = {"gpu": GroupRule(timeout=60.0), "tas": GroupRule(exempt=True)}
    policy, exempting = policy_for(Policy(timeout=TIMEOUT), rules, ["gpu", "tas"])
    assert exempting == "tas"
    verdict = judge_server(server(last_activity=ago(9000)), NOW, policy, exempt=True)
    assert verdict.reason == "ada is exempt from culling (group tas)"
