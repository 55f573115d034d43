"""hub-stats --docker against the real Docker engine: which containers are sampled, and their
CPU and memory as the engine reports them."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import docker
import pytest

from hubsidecars.config import ConfigError
from realparts.docker import busybox_image
from stats.containers import ContainerSampler, cpu_percent, cpu_reading, parse_engine_time
from stats.recorder import record_poll
from stats.schema import connect

LABEL = "hub-sidecars-test"
LABEL_VALUE = "stats-containers"
HUB = "http://127.0.0.1:8081/hub/api"  # what the user containers' spawner gave them


@dataclass(frozen=True)
class FakeSettings:
    docker_names: tuple[str, ...]


@pytest.fixture(scope="module")
def engine(docker_engine):
    client = docker.from_env(timeout=60)
    yield client
    for container in client.containers.list(all=True, filters={"label": f"{LABEL}={LABEL_VALUE}"}):
        container.remove(force=True)
    client.close()


@pytest.fixture(scope="module")
def containers(engine):
    """Containers of one test run (their names carry a random tag, so that other tests'
    containers on the same engine are never sampled): two user containers, and three that
    must be left out."""
    image = busybox_image()
    tag = uuid.uuid4().hex[:8]

    def run(name, command, env, start=True, **options):
        create = engine.containers.run if start else engine.containers.create
        extra = {"detach": True} if start else {}
        create(image, command, name=name, environment=env, network_mode="none",
               labels={LABEL: LABEL_VALUE}, **extra, **options)  # fmt: skip

    # A CPU loop held to a tenth of a core, with a memory limit.
    run(f"jupyter-{tag}-busy", ["sh", "-c", "while :; do :; done"],
        {"JUPYTERHUB_USER": "busy", "JUPYTERHUB_SERVER_NAME": "", "JUPYTERHUB_API_URL": HUB},
        nano_cpus=100_000_000, mem_limit="64m")  # fmt: skip
    run(f"jupyter-{tag}-idle", ["sleep", "3600"],
        {"JUPYTERHUB_USER": "idle", "JUPYTERHUB_SERVER_NAME": "lab",
         "JUPYTERHUB_API_URL": HUB})  # fmt: skip
    run(f"jupyter-{tag}-nouser", ["sleep", "3600"], {"OTHER": "x"})
    run(f"other-{tag}-user", ["sleep", "3600"], {"JUPYTERHUB_USER": "other"})
    run(f"jupyter-{tag}-stopped", ["sleep", "3600"], {"JUPYTERHUB_USER": "gone"},
        start=False)  # fmt: skip
    return tag


def sleeper(engine, name: str, user: str):
    """A running user container doing nothing, with no network, labelled for removal."""
    return engine.containers.run(busybox_image(), ["sleep", "3600"], name=name, detach=True,
                                 environment={"JUPYTERHUB_USER": user}, network_mode="none",
                                 labels={LABEL: LABEL_VALUE})  # fmt: skip


def poll_ids(db, n: int) -> list[int]:
    return [record_poll(db, [], time=_now(), interval=300).poll_id for _ in range(n)]


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def rows(db, poll_id: int) -> dict[str, dict]:
    found = db.execute(
        "SELECT host, container, user, server_name, cpu_percent, memory_bytes, "
        "memory_limit_bytes FROM container_samples WHERE poll_id = ?", [poll_id]
    ).fetchall()  # fmt: skip
    keys = ("host", "container", "user", "server_name", "cpu", "memory", "limit")
    return {row[2]: dict(zip(keys, row, strict=True)) for row in found}


def test_samples_running_user_containers_with_cpu_and_memory(engine, containers, tmp_path):
    tag = containers
    sampler = ContainerSampler.from_settings(FakeSettings((f"jupyter-{tag}-{{any}}",)))
    db = connect(str(tmp_path / "activity.sqlite"))
    first, second = poll_ids(db, 2)

    assert sampler(db, first) == 2
    time.sleep(3)
    assert sampler(db, second) == 2

    host = engine.info()["Name"]
    before, after = rows(db, first), rows(db, second)
    assert sorted(after) == ["busy", "idle"]  # not: no JUPYTERHUB_USER, other name, stopped
    busy, idle = after["busy"], after["idle"]
    assert busy["host"] == idle["host"] == host
    assert (busy["container"], busy["server_name"]) == (f"jupyter-{tag}-busy", "")
    assert (idle["container"], idle["server_name"]) == (f"jupyter-{tag}-idle", "lab")
    # The first sample of a container has nothing to compare with.
    assert before["busy"]["cpu"] is None and before["idle"]["cpu"] is None
    # The loop is held to 0.1 core: about 10 % of one core; sleep is about nothing.
    assert 4 <= busy["cpu"] <= 13, busy
    assert 0 <= idle["cpu"] < 1, idle
    assert busy["limit"] == 64 * 1024 * 1024
    assert 0 < busy["memory"] < busy["limit"] and 0 < idle["memory"] < 64 * 1024 * 1024
    assert idle["limit"] > busy["limit"]  # no limit: the engine reports the host's memory


def test_a_container_that_stopped_is_no_longer_sampled(engine, containers, tmp_path):
    tag = containers
    extra = sleeper(engine, f"jupyter-{tag}-leaving", "leaving")
    sampler = ContainerSampler(engine, (f"jupyter-{tag}-{{any}}",))
    db = connect(str(tmp_path / "activity.sqlite"))
    first, second = poll_ids(db, 2)
    sampler(db, first)
    assert "leaving" in rows(db, first)
    extra.remove(force=True)
    sampler(db, second)
    assert sorted(rows(db, second)) == ["busy", "idle"]


def test_an_unreachable_engine_is_one_line_at_start(tmp_path):
    with pytest.raises(ConfigError) as caught:
        ContainerSampler.from_settings(
            FakeSettings(("jupyter-{any}",)), environ={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"}
        )  # fmt: skip
    message = str(caught.value)
    assert message.startswith(f"docker: cannot reach the engine at unix://{tmp_path}/no.sock")
    assert "\n" not in message


def test_cpu_percent_from_two_readings():
    first = cpu_reading({"read": "2026-01-05T08:00:00.000000000Z",
                         "cpu_stats": {"cpu_usage": {"total_usage": 1_000_000_000}}})  # fmt: skip
    later = cpu_reading({"read": "2026-01-05T08:05:00.123456789Z",
                         "cpu_stats": {"cpu_usage": {"total_usage": 751_000_000_000}}})  # fmt: skip
    assert later.at == parse_engine_time("2026-01-05T08:05:00.123456Z")
    # 750 CPU-seconds in 300.12 s: two and a half cores.
    assert cpu_percent(first, later) == pytest.approx(249.9, abs=0.1)
    assert cpu_percent(None, later) is None
    assert cpu_percent(later, first) is None  # a counter going back: a restarted container
    unreadable = {"read": "0001-01-01T00:00:00Z", "cpu_stats": {"cpu_usage": {}}}
    assert cpu_reading(unreadable) is None


def test_many_containers_are_sampled_together_not_one_tick_each(engine, containers, tmp_path):
    # The engine answers each stats request at its next one-second tick: twelve containers
    # asked one after the other took about twelve seconds.
    tag = containers
    crowd = [sleeper(engine, f"jupyter-{tag}-crowd{i}", f"crowd{i}") for i in range(10)]
    try:
        sampler = ContainerSampler(engine, (f"jupyter-{tag}-{{any}}",))
        db = connect(str(tmp_path / "activity.sqlite"))
        (poll,) = poll_ids(db, 1)
        sampler(db, poll)  # a first call, so that the engine follows every container
        (poll,) = poll_ids(db, 1)
        started = time.monotonic()
        assert sampler(db, poll) == 12
        took = time.monotonic() - started
        assert took < 8, f"sampling 12 containers took {took:.1f} s"
    finally:
        for container in crowd:
            container.remove(force=True)


@pytest.mark.realhub
def test_hub_stats_once_with_docker_records_the_poll_and_its_containers(
    engine, containers, start_hub, tmp_path
):
    from realparts.hub import HubService
    from realparts.restuser import REPO

    tag = containers
    scopes = ["list:users", "read:users:activity", "read:servers", "read:users"]
    hub = start_hub([HubService("stats", scopes)], spawner="responder")
    db_path = tmp_path / "activity.sqlite"
    env = {"PATH": "/usr/bin:/bin", "JUPYTERHUB_API_TOKEN": hub.token("stats"),
           "HUB_STATS_DOCKER_NAMES": f"jupyter-{tag}-{{any}}",
           "HUB_STATS_DOCKER_HUB_API_URL": HUB}  # fmt: skip
    command = [str(REPO / ".venv/bin/hub-stats"), "--once", "--docker", "--url", hub.api_url,
               "--db", str(db_path), "--groups=false"]  # fmt: skip
    import subprocess

    for _ in range(2):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120,
                              check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
    db = connect(str(db_path))
    polls = [row[0] for row in db.execute("SELECT id FROM polls WHERE ok = 1 ORDER BY id")]
    assert len(polls) == 2
    for poll in polls:
        assert sorted(rows(db, poll)) == ["busy", "idle"]
    # Each run is a new process: no previous sample, so no CPU figure (documented).
    assert rows(db, polls[1])["busy"]["cpu"] is None


def test_each_poll_records_the_hosts_capacity_and_stats_json_shows_it_per_host(
    engine, containers, tmp_path
):
    """tmpnb's /stats in spirit: per Docker host what runs and what the host has, at the
    latest sampled poll; a poll in which nothing runs shows the host with no containers (not
    the containers of an older poll)."""
    from stats.queries import ActivityStore

    tag = containers
    path = tmp_path / "activity.sqlite"
    db = connect(str(path))
    first, second = poll_ids(db, 2)
    ContainerSampler(engine, (f"jupyter-{tag}-{{any}}",))(db, first)
    ContainerSampler(engine, ("nothing-runs-by-this-name-{any}",))(db, second)
    info = engine.info()
    host = info["Name"]
    assert db.execute("SELECT poll_id, host, cpus, memory_bytes FROM docker_hosts "
                      "ORDER BY poll_id").fetchall() == [
        (first, host, info["NCPU"], info["MemTotal"]),
        (second, host, info["NCPU"], info["MemTotal"])]  # fmt: skip
    figures = ActivityStore(str(path)).now()["docker"]
    assert figures["hosts"] == {host: {
        "containers": 0, "cpu_percent": 0.0, "memory_bytes": 0, "memory_limit_bytes": 0,
        "cpus": info["NCPU"], "memory_total_bytes": info["MemTotal"]}}
