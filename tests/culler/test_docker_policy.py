"""The Docker backend's pure parts: name templates and owners, counter-based idleness, the
state file."""

from __future__ import annotations

import json
import logging
import string

import pytest

from culler.docker.idle import DockerState, Sample, StateFile, judge, sample_from_stats
from culler.docker.settings import DOCKERSPAWNER_NAMES, SWARMSPAWNER_NAMES
from hubsidecars.usercontainers import BadTemplate, NameMatcher, Owner, hub_env, unescape, user_md5


def dockerspawner_escape(text: str) -> str:
    """What DockerSpawner >= 12 does (escapism with safe [a-z0-9] and '-', then lower())."""
    safe = set(string.ascii_lowercase + string.digits)
    out = []
    for char in text:
        if char in safe:
            out.append(char)
        else:
            out.extend(f"-{byte:02X}" for byte in char.encode())
    return "".join(out).lower()


@pytest.mark.parametrize("user", ["ada", "Ada.Lovelace", "j-doe", "émile", "x_y@example.org"])
@pytest.mark.parametrize("server", ["", "gpu", "My Lab"])
def test_dockerspawner_names_give_back_user_and_server(user, server):
    matcher = NameMatcher(DOCKERSPAWNER_NAMES, ())
    name = f"jupyter-{dockerspawner_escape(user)}"
    if server:
        name += f"--{dockerspawner_escape(server.lower())}"
    owner = matcher.owner(name, {})
    assert (owner.user, owner.server, owner.from_name) == (user, server.lower(), True)
    assert owner.has_server_in(frozenset({(user, server)}))
    assert not owner.has_server_in(frozenset({(user + "x", server)}))


def test_names_that_are_no_users_server_do_not_match():
    matcher = NameMatcher(SWARMSPAWNER_NAMES, ())
    for name in (
        "jupyterhub",
        "jupyter",
        "jupyter-",
        "jupyter-Ada",
        "jupyter-a-zz",
        "proxy",
        "jupyter-hub-1x",
        "xjupyter-ada",
    ):
        assert not matcher.matches(name, {}), name
    assert matcher.matches(f"jupyter-{user_md5('bob')}-1", {})
    assert matcher.matches("jupyter-ada", {})


def test_environment_wins_over_the_name():
    matcher = NameMatcher(DOCKERSPAWNER_NAMES, ())
    owner = matcher.owner("jupyter-ada", {"JUPYTERHUB_USER": "Ada", "JUPYTERHUB_SERVER_NAME": "X"})
    assert owner == Owner("Ada", "X")
    assert owner.has_server_in(frozenset({("Ada", "X")}))
    assert not owner.has_server_in(frozenset({("Ada", "x")}))  # exact, unlike a name's


def test_md5_owner_is_kept_while_the_user_has_any_server():
    owner = NameMatcher(SWARMSPAWNER_NAMES, ()).owner(f"jupyter-{user_md5('bob')}-3", {})
    assert owner.md5 == user_md5("bob") and owner.user is None
    assert owner.has_server_in(frozenset({("bob", "other")}))
    assert not owner.has_server_in(frozenset({("ada", "")}))


def test_labels():
    matcher = NameMatcher((), ("user-server", "team=ml"))
    assert matcher.matches("anything", {"user-server": ""})
    assert matcher.matches("anything", {"team": "ml"})
    assert not matcher.matches("anything", {"team": "web"})
    assert not matcher.matches("jupyter-ada", {})


def test_bad_templates_are_config_errors():
    for template in ("jupyter-{user}", "jupyter-{username", "{username}-{username}"):
        with pytest.raises(BadTemplate):
            NameMatcher((template,), ())


def test_hub_env_keeps_no_secret():
    env = hub_env(["JUPYTERHUB_API_TOKEN=s3cret", "JUPYTERHUB_USER=ada", "PATH=/bin"])
    assert env == {"JUPYTERHUB_USER": "ada"}
    assert unescape("a-2eb") == "a.b"


def test_judge_needs_a_sample_a_timeout_old():
    first = judge((), Sample(0, 1.0, None), 10, 2.0, 1000)
    assert not first.idle and first.reason == "observed 0s of timeout 10s"
    later = judge(first.keep, Sample(6, 1.0, None), 10, 2.0, 1000)
    assert not later.idle and later.reason == "observed 6s of timeout 10s"
    idle = judge(later.keep, Sample(12, 2.5, None), 10, 2.0, 1000)
    assert idle.idle and idle.reason.startswith("idle: cpu +1.50s, net +0B in 12s")
    # the anchor is the newest sample at least a timeout old; older ones are dropped
    assert idle.keep == (Sample(0, 1.0, None), Sample(6, 1.0, None), Sample(12, 2.5, None))
    after = judge(idle.keep, Sample(17, 2.5, None), 10, 2.0, 1000)
    assert after.keep[0] == Sample(6, 1.0, None)


def test_judge_thresholds_and_restart():
    history = (Sample(0, 5.0, 100),)
    assert not judge(history, Sample(10, 7.5, 100), 10, 2.0, 1000).idle  # CPU moved
    assert not judge(history, Sample(10, 5.0, 1101), 10, 2.0, 1000).idle  # network moved
    assert judge(history, Sample(10, 7.0, 1100), 10, 2.0, 1000).idle  # at the thresholds
    restarted = judge(history, Sample(10, 0.1, 0), 10, 2.0, 1000)
    assert not restarted.idle and restarted.keep == (Sample(10, 0.1, 0),)
    # a network that appears or disappears counts as unchanged
    assert judge(history, Sample(10, 5.0, None), 10, 2.0, 1000).idle


def test_sample_from_stats():
    stats = {
        "cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}},
        "networks": {
            "eth0": {"rx_bytes": 10, "tx_bytes": 5},
            "eth1": {"rx_bytes": 1, "tx_bytes": 1},
        },
    }
    assert sample_from_stats(stats, 7.0) == Sample(7.0, 2.5, 17)
    no_network = {"read": "2026-01-02T03:04:05Z", "cpu_stats": {"cpu_usage": {"total_usage": 5}}}
    assert sample_from_stats(no_network, 7.0) == Sample(7.0, 5e-9, None)
    unreadable = {"read": "0001-01-01T00:00:00Z", "cpu_stats": {"cpu_usage": {"total_usage": 0}}}
    assert sample_from_stats(unreadable, 7.0) is None
    assert sample_from_stats({"cpu_stats": {}}, 7.0) is None


def test_state_file_round_trip_and_prune(tmp_path):
    store = StateFile(tmp_path / "sub" / "state.json", logging.getLogger("t"))
    state = DockerState({"a": (Sample(1, 2.0, None), Sample(3, 4.0, 5))}, {"svc": 9.0, "b": 1.0})
    state.prune({"a", "svc"})
    store.save(state)
    assert store.load() == state
    assert json.loads(store.path.read_text())["version"] == 1
    assert [p.name for p in store.path.parent.iterdir()] == ["state.json"]  # no temporary left


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        '{"version": 2}',
        '{"version": 1, "samples": 3}',
        "\xff\xfe",
        '{"version": 1, "samples": {"a": [[1]]}}',
    ],
)
def test_state_file_unreadable_is_a_fresh_start(tmp_path, caplog, text):
    path = tmp_path / "state.json"
    path.write_text(text, errors="surrogateescape")
    with caplog.at_level(logging.WARNING):
        assert StateFile(path, logging.getLogger("t")).load() == DockerState()
    assert len(caplog.records) == 1
