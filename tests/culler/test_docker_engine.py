"""The Docker backend against a real dockerd (--bridge=none): real containers from a local
busybox image, --network none, real stats, real stop and remove.

Each test's containers carry the label hub-sidecars-test=1 and a user name unique to the run,
and are removed at teardown.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time

import docker
import docker.errors
import pytest

from culler.docker.backend import DockerCuller, connect_docker, own_container_ids
from culler.outcomes import PassResult
from culler.settings import CullerSettings
from hubsidecars.config import ConfigError
from realparts.docker import busybox_image

TEST_LABEL = {"hub-sidecars-test": "1"}


@pytest.fixture(scope="module")
def client(docker_engine):
    busybox_image()
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture
def containers(client):
    """Factory: start a container (network none, test label); all removed at teardown."""
    started = []

    def run(name, command=("sleep", "3600"), user=None, server=None, **kwargs):
        env = {}
        if user is not None:
            env["JUPYTERHUB_USER"] = user
            env["JUPYTERHUB_SERVER_NAME"] = server or ""
            env["JUPYTERHUB_API_TOKEN"] = "never-logged-" + os.urandom(4).hex()
        try:
            client.containers.get(name).remove(force=True)  # a leftover of an earlier run
        except docker.errors.NotFound:
            pass
        container = client.containers.run(
            busybox_image(),
            list(command),
            name=name,
            detach=True,
            network_mode="none",
            labels=TEST_LABEL,
            environment=env,
            **kwargs,
        )
        started.append(container)
        return container

    yield run
    for container in started:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass


@pytest.fixture
def tag():
    return os.urandom(3).hex()


def make_settings(tmp_path, **changes) -> CullerSettings:
    base = CullerSettings(
        docker=True,
        hub=False,
        timeout=2.0,
        docker_stop_timeout=1.0,
        docker_cpu_threshold=0.05,
        docker_orphan_grace=60.0,
        docker_state_file=str(tmp_path / "docker-state.json"),
    )
    return dataclasses.replace(base, **changes)


def one_pass(backend, hub_servers=None) -> PassResult:
    result = PassResult()
    backend.run_pass(result, threading.Event(), hub_servers)
    return result


def by_target(result: PassResult) -> dict:
    return {o.target: o for o in result.outcomes}


def state_of(client, container) -> str:
    try:
        return client.api.inspect_container(container.id)["State"]["Status"]
    except docker.errors.NotFound:
        return "removed"


def test_idle_container_stopped_busy_one_kept_and_others_untouched(
    client, containers, tag, tmp_path, caplog
):
    idle = containers(f"jupyter-idle{tag}", user=f"idle{tag}")
    # a CPU loop held to a tenth of a core: its counters move, slowly
    busy = containers(
        f"jupyter-busy{tag}",
        ("sh", "-c", "while :; do :; done"),
        user=f"busy{tag}",
        nano_cpus=100_000_000,
    )
    other = containers(f"hst-other{tag}")  # no template matches its name
    lookalike = containers(f"jupyter-hub{tag}")  # the name matches, but no hub user in its env
    excluded = containers(f"jupyter-kept{tag}", user=f"kept{tag}")
    settings = make_settings(tmp_path, docker_exclude=("jupyterhub", excluded.name))
    backend = DockerCuller(client, settings, logger=logging.getLogger("culler.docker"))

    first = one_pass(backend)
    assert first.errors == []
    seen = by_target(first)
    assert "no counters" not in seen[idle.name].reason, (
        "the engine cannot read containers' cgroup counters (is a systemd container with "
        "--cgroupns=host running?)"
    )
    assert seen[idle.name].result == "active" and "observed" in seen[idle.name].reason
    assert seen[busy.name].result == "active"
    assert other.name not in seen
    assert seen[lookalike.name].result == "skipped"
    assert "JUPYTERHUB_USER" in seen[lookalike.name].reason
    assert seen[excluded.name].result == "skipped"

    time.sleep(2.3)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="culler.docker"):
        second = one_pass(backend)
    assert second.errors == []
    seen = by_target(second)
    assert seen[idle.name].result == "culled", seen[idle.name]
    assert seen[idle.name].reason.startswith("stopped: idle: cpu +0.0")
    assert seen[busy.name].result == "active", seen[busy.name]
    assert "cpu +" in seen[busy.name].reason

    assert state_of(client, idle) == "exited"  # stopped, not removed (docker_remove is off)
    assert state_of(client, busy) == "running"
    assert state_of(client, other) == "running"
    assert state_of(client, lookalike) == "running"
    assert state_of(client, excluded) == "running"

    actions = [r for r in caplog.records if r.name == "culler.docker"]
    assert [r.getMessage() for r in actions] == ["docker container stopped"]
    assert "never-logged" not in caplog.text


def test_idle_container_removed_when_configured(client, containers, tag, tmp_path):
    idle = containers(f"jupyter-gone{tag}--lab", user=f"gone{tag}", server="lab")
    backend = DockerCuller(client, make_settings(tmp_path, timeout=1.0, docker_remove=True))
    one_pass(backend)
    time.sleep(1.2)
    result = one_pass(backend)
    assert by_target(result)[idle.name].result == "culled"
    assert state_of(client, idle) == "removed"
    state = (tmp_path / "docker-state.json").read_text()
    assert idle.id not in state  # what is gone is pruned from the state


def test_dry_run_decides_and_changes_nothing(client, containers, tag, tmp_path):
    idle = containers(f"jupyter-dry{tag}", user=f"dry{tag}")
    backend = DockerCuller(client, make_settings(tmp_path, timeout=1.0, dry_run=True))
    one_pass(backend)
    time.sleep(1.2)
    result = one_pass(backend)
    outcome = by_target(result)[idle.name]
    assert outcome.result == "would-cull"
    assert outcome.reason.startswith("would stop: idle:")
    assert state_of(client, idle) == "running"


def test_stops_run_side_by_side_up_to_concurrency(client, containers, tag, tmp_path):
    """Each container ignores SIGTERM (sleep as PID 1), so each stop takes the whole stop
    timeout: four of them one after another took 4 x 3 s; side by side, about 3 s."""
    idle = [containers(f"jupyter-par{n}{tag}", user=f"par{n}{tag}") for n in range(4)]
    backend = DockerCuller(client, make_settings(tmp_path, timeout=1.0, docker_stop_timeout=3.0,
                                                 concurrency=4))  # fmt: skip
    one_pass(backend)
    time.sleep(1.2)
    started = time.monotonic()
    result = one_pass(backend)
    took = time.monotonic() - started
    assert {by_target(result)[c.name].result for c in idle} == {"culled"}, result.outcomes
    assert all(state_of(client, c) == "exited" for c in idle)
    assert took < 11, f"four 3 s stops took {took:.1f} s: one after another"


def test_observations_survive_a_restart(client, containers, tag, tmp_path, caplog):
    idle = containers(f"jupyter-restart{tag}", user=f"restart{tag}")
    settings = make_settings(tmp_path)
    with caplog.at_level(logging.WARNING):
        one_pass(DockerCuller(client, settings))  # no state file yet: one warning
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "docker state file missing, starting afresh"
    ]
    time.sleep(2.3)
    # a new daemon: only the state file remembers the first sample
    result = one_pass(DockerCuller(client, settings))
    assert by_target(result)[idle.name].result == "culled"
    assert state_of(client, idle) == "exited"


def test_corrupt_state_file_is_a_fresh_start(client, containers, tag, tmp_path, caplog):
    idle = containers(f"jupyter-corrupt{tag}", user=f"corrupt{tag}")
    settings = make_settings(tmp_path)
    (tmp_path / "docker-state.json").write_text('{"version": 1, "samples": {"x": [[1, 2')
    with caplog.at_level(logging.WARNING):
        result = one_pass(DockerCuller(client, settings))
    assert result.errors == []
    assert by_target(result)[idle.name].result == "active"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["docker state file unreadable, starting afresh"]
    # and the file is whole again
    assert idle.id in (tmp_path / "docker-state.json").read_text()


def test_orphans_are_removed_after_the_grace_period(client, containers, tag, tmp_path):
    owned = containers(f"jupyter-own{tag}", user=f"own{tag}")
    orphan = containers(f"jupyter-orph{tag}", user=f"orph{tag}")
    named = containers(f"jupyter-own{tag}--gpu", user=f"own{tag}", server="gpu")
    pending = containers(f"jupyter-pend{tag}", user=f"pend{tag}")
    hub_servers = frozenset({(f"own{tag}", ""), (f"pend{tag}", "")})  # pending counts too
    now = [1000.0]
    backend = DockerCuller(
        client, make_settings(tmp_path, docker_orphan_grace=30.0), clock=lambda: now[0]
    )

    first = one_pass(backend, hub_servers)
    assert first.errors == []
    seen = by_target(first)
    assert seen[owned.name].result == "active" and "in the hub" in seen[owned.name].reason
    assert seen[pending.name].result == "active"
    for container in (orphan, named):
        assert seen[container.name].result == "active"
        assert "orphan" in seen[container.name].reason and "grace" in seen[container.name].reason

    now[0] += 29.0
    assert by_target(one_pass(backend, hub_servers))[orphan.name].result == "active"
    # the hub starts the named server meanwhile: it is no orphan any more
    now[0] += 2.0
    second = one_pass(backend, hub_servers | {(f"own{tag}", "gpu")})
    seen = by_target(second)
    assert seen[orphan.name].result == "culled" and seen[orphan.name].reason.startswith("removed")
    assert seen[named.name].result == "active"
    assert state_of(client, orphan) == "removed"
    for container in (owned, named, pending):
        assert state_of(client, container) == "running"


def test_stop_is_checked_between_containers(client, containers, tag, tmp_path):
    containers(f"jupyter-stop{tag}", user=f"stop{tag}")
    backend = DockerCuller(client, make_settings(tmp_path))
    result = PassResult()
    stop = threading.Event()
    stop.set()
    backend.run_pass(result, stop, None)
    assert result.outcomes == [] and result.errors == []


def test_unreachable_engine_is_one_error_line(tmp_path):
    client = docker.DockerClient(base_url=f"unix://{tmp_path}/no-such.sock", version="1.41")
    backend = DockerCuller(client, make_settings(tmp_path))
    result = one_pass(backend)
    assert result.outcomes == []
    assert len(result.errors) == 1 and "\n" not in result.errors[0]
    assert "socket does not exist" in result.errors[0]
    assert not result.ok


def test_connect_docker(docker_engine, tmp_path, monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    client = connect_docker(make_settings(tmp_path))
    assert client.ping()
    client.close()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(ConfigError) as raised:
        connect_docker(make_settings(tmp_path))
    message = str(raised.value)
    assert "\n" not in message and "no-such.sock" in message
    assert "does not exist" in message


def test_the_culler_never_touches_its_own_container(client, containers, tag, tmp_path):
    """Inside a container, /proc/self says which one it is; on the host it names none, even
    with containers running. The container found is skipped like an excluded one."""
    own = containers(f"jupyter-self{tag}", user=f"self{tag}")
    proc = tmp_path / "proc-self"
    proc.mkdir()
    for name in ("mountinfo", "cgroup"):
        answer = own.exec_run(["cat", f"/proc/1/{name}"])
        assert answer.exit_code == 0
        (proc / name).write_bytes(answer.output)
    assert own_container_ids(proc) == {own.id}
    assert own_container_ids() == frozenset()  # this test runs on the host

    settings = make_settings(tmp_path, timeout=1.0)
    backend = DockerCuller(client, settings, own_ids=own_container_ids(proc))
    one_pass(backend)
    time.sleep(1.2)
    outcome = by_target(one_pass(backend))[own.name]
    assert outcome.result == "skipped" and "excluded" in outcome.reason
    assert state_of(client, own) == "running"
