"""The Docker backend against recorded Engine API answers (tests/culler/recorded/, replayed by
tests/culler/docker_replay.py over real HTTP), kept only for what the test swarm
(realparts/swarm.py, one node, real spawners: tests/culler/test_docker_spawners.py) cannot
show: services named by the md5 of the user (SwarmSpawner releases before jhub-swarmspawner 0.6,
which need an older JupyterHub), a service whose task runs on another node, an engine that is
no swarm manager (a worker node), network counters (the test servers run on the host network,
which has none), 5xx answers and counters the engine cannot read.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import threading

import pytest

from culler.docker.backend import DockerCuller
from culler.outcomes import PassResult
from culler.settings import CullerSettings
from tests.culler.docker_replay import ReplayEngine, recorded

SERVICE_IDS = {s["Spec"]["Name"]: s["ID"] for s in recorded("services.json")}


def md5(user: str) -> str:
    return hashlib.md5(user.encode()).hexdigest()


BOB = f"jupyter-{md5('bob')}-1"
CAROL_LAB = f"jupyter-{md5('carol')}-lab"
ERIN = f"jupyter-{md5('erin')}-1"


def make_settings(tmp_path, **changes) -> CullerSettings:
    base = CullerSettings(
        docker=True,
        timeout=10.0,
        docker_orphan_grace=60.0,
        docker_state_file=str(tmp_path / "state.json"),
    )
    return dataclasses.replace(base, **changes)


def one_pass(backend, hub_servers) -> PassResult:
    result = PassResult()
    backend.run_pass(result, threading.Event(), hub_servers)
    return result


def by_target(result: PassResult) -> dict:
    return {o.target: o for o in result.outcomes}


@pytest.fixture
def swarm():
    """A swarm manager with the recorded services and no containers."""
    services = recorded("services.json")
    engine = ReplayEngine()
    engine.route("GET", "/containers/json", (200, []))
    engine.route("GET", "/info", (200, recorded("info_swarm_manager.json")))
    engine.route("GET", "/services", lambda _: (200, services))
    engine.route("DELETE", "/services/(\\w+)", (200, None))
    engine.services = services  # tests change them in place
    with engine:
        yield engine


HUB = frozenset({("ada", ""), ("carol", ""), ("frank", "")})


def test_orphan_services_removed_after_grace_and_nothing_else(swarm, tmp_path, caplog):
    now = [5000.0]
    backend = DockerCuller(swarm.client(), make_settings(tmp_path), clock=lambda: now[0])

    first = one_pass(backend, HUB)
    assert first.errors == []
    seen = by_target(first)
    assert seen["jupyter-ada"].result == "active"  # dockerspawner's SwarmSpawner name
    assert seen[BOB].result == "active" and "orphan of bob" in seen[BOB].reason
    assert seen[CAROL_LAB].result == "active" and "orphan of carol/lab" in seen[CAROL_LAB].reason
    assert seen[ERIN].result == "skipped"  # no JUPYTERHUB_USER: not known to be a hub server
    # the hub, the proxy, a service scaled to zero and one only a label would select: unseen
    assert set(seen) == {"jupyter-ada", BOB, CAROL_LAB, ERIN}
    assert swarm.calls("DELETE") == []

    now[0] += 61
    with caplog.at_level(logging.INFO):
        second = one_pass(backend, HUB)
    seen = by_target(second)
    assert seen[BOB].result == "culled" and seen[BOB].reason.startswith("removed: orphan of bob")
    assert seen[CAROL_LAB].result == "culled"
    assert seen["jupyter-ada"].result == "active"
    assert sorted(swarm.calls("DELETE")) == sorted(
        [f"/services/{SERVICE_IDS[BOB]}", f"/services/{SERVICE_IDS[CAROL_LAB]}"]
    )
    removed = [r for r in caplog.records if r.getMessage() == "docker service removed"]
    assert len(removed) == 2
    assert "recorded-secret" not in caplog.text


def test_services_named_by_md5_without_hub_env(swarm, tmp_path):
    for service in swarm.services:
        if service["Spec"]["Name"] == BOB:
            service["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] = []
    settings = make_settings(tmp_path, docker_require_hub_env=False, docker_orphan_grace=0.0)
    result = one_pass(DockerCuller(swarm.client(), settings), HUB | {("bob", "")})
    seen = by_target(result)
    assert seen[BOB].result == "active"  # md5("bob") in the name, bob has a server
    assert seen[ERIN].result == "culled"  # md5("erin"): erin has none
    assert seen[CAROL_LAB].result == "culled"  # carol has a server, but not "lab"
    assert sorted(swarm.calls("DELETE")) == sorted(
        [f"/services/{SERVICE_IDS[ERIN]}", f"/services/{SERVICE_IDS[CAROL_LAB]}"]
    )


def test_services_selected_by_label(swarm, tmp_path):
    settings = make_settings(
        tmp_path,
        docker_labels=("org.example.user-server=1",),
        docker_orphan_grace=0.0,
        docker_service_names=(),
    )
    result = one_pass(DockerCuller(swarm.client(), settings), frozenset({("ada", "")}))
    assert {o.target: o.result for o in result.outcomes} == {"notebook-frank": "culled"}
    assert swarm.calls("DELETE") == [f"/services/{SERVICE_IDS['notebook-frank']}"]


def test_services_dry_run(swarm, tmp_path):
    settings = make_settings(tmp_path, dry_run=True, docker_orphan_grace=0.0)
    result = one_pass(DockerCuller(swarm.client(), settings), HUB)
    assert by_target(result)[BOB].result == "would-cull"
    assert by_target(result)[BOB].reason.startswith("would remove: orphan of bob")
    assert swarm.calls("DELETE") == []


def test_no_hub_leaves_a_service_whose_task_runs_on_another_node(swarm, tmp_path):
    """--no-hub judges a service by its task's counters on this node; with none here (the
    recording has no containers), that node's culler judges it."""
    result = one_pass(DockerCuller(swarm.client(), make_settings(tmp_path, hub=False)), None)
    assert result.errors == []
    assert {o.result for o in result.outcomes} == {"skipped"}
    assert swarm.calls("DELETE") == []


def test_not_a_swarm_manager_lists_no_services(tmp_path):
    engine = ReplayEngine()
    engine.route("GET", "/containers/json", (200, []))
    engine.route("GET", "/info", (200, recorded("info_not_a_manager.json")))
    engine.route("GET", "/services", (503, recorded("services_not_a_manager.json")))
    with engine:
        result = one_pass(DockerCuller(engine.client(), make_settings(tmp_path)), HUB)
    assert result.errors == [] and result.outcomes == []
    assert engine.calls("GET", "/services") == []


def container_engine(stats_answers) -> ReplayEngine:
    """One recorded running container (jupyter-ada) whose stats answers come in turn."""
    engine = ReplayEngine()
    engine.route("GET", "/containers/json", (200, recorded("containers_running.json")))
    engine.route("GET", "/containers/\\w+/json", (200, recorded("container_inspect.json")))
    engine.route("GET", "/containers/\\w+/stats", stats_answers)
    engine.route("POST", "/containers/\\w+/stop", (204, None))
    engine.route("GET", "/info", (200, recorded("info_not_a_manager.json")))
    return engine


def stats_with_network(rx: int, tx: int, cpu_ns: int) -> dict:
    stats = copy.deepcopy(recorded("container_stats.json"))
    stats["cpu_stats"]["cpu_usage"]["total_usage"] = cpu_ns
    stats["networks"] = {
        "eth0": {
            "rx_bytes": rx,
            "rx_packets": rx // 100,
            "rx_errors": 0,
            "rx_dropped": 0,
            "tx_bytes": tx,
            "tx_packets": tx // 100,
            "tx_errors": 0,
            "tx_dropped": 0,
        }
    }
    return stats


def test_network_counters_keep_a_container_until_they_stand_still(tmp_path):
    container_id = recorded("containers_running.json")[0]["Id"]
    cpu = 25_000_000  # the CPU time stands still throughout: only the network moves
    answers = [
        (200, stats_with_network(1000, 500, cpu)),
        (200, stats_with_network(91000, 10500, cpu)),  # +100000 bytes: in use
        (200, stats_with_network(91000, 10500, cpu)),
    ]
    now = [100.0]
    settings = make_settings(tmp_path, hub=False)
    with container_engine(answers) as engine:
        backend = DockerCuller(engine.client(), settings, clock=lambda: now[0])
        assert by_target(one_pass(backend, None))["jupyter-ada"].result == "active"
        now[0] += 10
        second = by_target(one_pass(backend, None))["jupyter-ada"]
        assert second.result == "active" and "net +100000B" in second.reason
        now[0] += 10
        third = by_target(one_pass(backend, None))["jupyter-ada"]
        assert third.result == "culled" and "net +0B" in third.reason
        assert engine.calls("POST") == [f"/containers/{container_id}/stop?t=10"]
        # stream=False and one-shot=True, as the SDK spells them
        stats_call = f"/containers/{container_id}/stats?stream=False&one-shot=True"
        assert engine.calls("GET", f"/containers/{container_id}/stats") == [stats_call] * 3


def test_engine_5xx_on_listing_is_one_error_line(tmp_path, caplog):
    engine = ReplayEngine()
    dump = "driver failed\n" + "goroutine 1 [running]:\n" * 50
    engine.route("GET", "/containers/json", (500, {"message": dump}))
    with engine, caplog.at_level(logging.INFO):
        result = one_pass(DockerCuller(engine.client(), make_settings(tmp_path)), HUB)
    assert result.outcomes == []
    assert result.errors == ["docker: listing failed: 500 driver failed"]
    assert "goroutine" not in caplog.text


def test_engine_5xx_on_stop_fails_that_container(tmp_path):
    stats = (200, recorded("container_stats.json"))
    now = [100.0]
    with container_engine(stats) as engine:
        engine.route("POST", "/containers/\\w+/stop", (500, {"message": "cannot kill: EPERM"}))
        backend = DockerCuller(
            engine.client(), make_settings(tmp_path, hub=False), clock=lambda: now[0]
        )
        one_pass(backend, None)
        now[0] += 11
        result = one_pass(backend, None)
    assert by_target(result)["jupyter-ada"].result == "failed"
    assert result.errors == ["docker: container jupyter-ada: stop: 500 cannot kill: EPERM"]
    assert not result.ok


def test_stats_the_engine_could_not_read_never_make_a_container_idle(tmp_path):
    """An engine that cannot read a container's cgroups answers zeros; zero movement is then
    no evidence of idleness: the container is skipped and its earlier samples kept."""
    answers = [
        (200, recorded("container_stats.json")),
        (200, recorded("container_stats_unavailable.json")),
        (200, recorded("container_stats_unavailable.json")),
        (200, recorded("container_stats.json")),
    ]
    now = [100.0]
    with container_engine(answers) as engine:
        backend = DockerCuller(
            engine.client(), make_settings(tmp_path, hub=False), clock=lambda: now[0]
        )
        one_pass(backend, None)
        for _ in range(2):
            now[0] += 11
            outcome = by_target(one_pass(backend, None))["jupyter-ada"]
            assert outcome.result == "skipped", outcome
            assert "no counters" in outcome.reason
        now[0] += 11
        # the first sample was kept: the same counters 33 s later are idle
        assert by_target(one_pass(backend, None))["jupyter-ada"].result == "culled"
        assert len(engine.calls("POST")) == 1
