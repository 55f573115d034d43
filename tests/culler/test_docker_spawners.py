"""`hub-culler --docker` beside real hubs whose real spawners start real servers on a real
one-node swarm (realparts/swarm.py): dockerspawner 14's DockerSpawner (containers) and
SwarmSpawner (services), and jhub-swarmspawner 0.6.3 (services), each with its default naming.

Per spawner, one hub (cleanup_servers off) and these servers: `live` (default and, but for jhub,
a named server `lab`) whose user is active; `idle`, whose user is not; `ghost`, spawned and
then forgotten by the hub (database put back from before its spawn, as a restored or crashed
hub leaves it). Beside them on the engine, what is not a user's server: the hub's own
("jupyterhub"), another application's ("postgres"), and a server-named one without
JUPYTERHUB_USER. jhub-swarmspawner 0.6.3 gives every server of a user the same service
(`jupyter-{name}-1`: it reads `self.server_name`, which JupyterHub's spawners do not have), so
a named server cannot be started beside the default one with it.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta

import pytest

from realparts.culler import CULLER_SCOPES, run_once
from realparts.docker import busybox_image
from realparts.hub import HubService, idle_seconds
from realparts.swarm import engine_objects, hub_venv, restart_forgetting
from realparts.waiting import wait_until

pytestmark = pytest.mark.hub

SERVICES = [HubService("admin", ["admin:users", "admin:servers"]),
            HubService("culler", CULLER_SCOPES)]  # fmt: skip
TIMEOUT = 4  # the culler's --timeout in these tests: the idle user's server is older


def server_names(kind: str, user: str, server: str = "") -> str:
    """The name each spawner gives a server's container or service, read from its code."""
    if kind == "jhub":
        return f"jupyter-{user[-32:]}-1"
    return f"jupyter-{user}--{server}" if server else f"jupyter-{user}"


@pytest.fixture(scope="module")
def bystanders(swarm_engine):
    """What runs on the engine and is no hub user's server."""
    image = busybox_image(env=swarm_engine.env())
    swarm_engine.docker("service", "create", "--detach", "--no-resolve-image", "--network",
                        "host", "--name", "jupyterhub", image, "sleep", "3600")  # fmt: skip
    swarm_engine.docker("service", "create", "--detach", "--no-resolve-image", "--network",
                        "host", "--name", "postgres", "--env", "JUPYTERHUB_USER=postgres",
                        image, "sleep", "3600")  # fmt: skip
    swarm_engine.docker("run", "-d", "--network", "none", "--name", "jupyterhub-proxy",
                        image, "sleep", "3600")  # fmt: skip
    swarm_engine.docker("run", "-d", "--network", "none", "--name", "jupyter-notauser",
                        image, "sleep", "3600")  # fmt: skip
    swarm_engine.docker("service", "create", "--detach", "--no-resolve-image", "--network",
                        "host", "--name", "jupyter-notaservice", image,
                        "sleep", "3600")  # fmt: skip
    names = ["jupyterhub", "postgres", "jupyterhub-proxy", "jupyter-notauser",
             "jupyter-notaservice"]  # fmt: skip
    wait_until(lambda: set(names) <= set(engine_objects(swarm_engine)), 30,
               "the bystanders to run")  # fmt: skip
    return names


@pytest.fixture(scope="module")
def spawned(swarm_hubs, tmp_path_factory):
    """Per spawner kind, a hub with live, idle and forgotten (ghost) servers, made once."""
    made = {}

    def get(kind: str):
        if kind in made:
            return made[kind]
        hub = swarm_hubs(kind, SERVICES, "c.JupyterHub.cleanup_servers = False\n")
        users = {role: f"{role}{kind}" for role in ("live", "idle", "ghost")}
        hub.create_users(list(users.values()), "admin")
        hub.start_servers([users["live"], users["idle"]], "admin", timeout=90)
        if kind != "jhub":
            hub.start_servers([users["live"]], "admin", server_name="lab", timeout=90)
        saved = tmp_path_factory.mktemp(f"db-{kind}") / "before-ghost.sqlite"
        backup_db(hub, saved)
        hub.start_servers([users["ghost"]], "admin", timeout=90)
        restart_forgetting(hub, saved)
        made[kind] = (hub, users)
        return made[kind]

    return get


def backup_db(hub, destination) -> None:
    """A consistent copy of the running hub's database (SQLite's online backup)."""
    source, copy = sqlite3.connect(hub.workdir / "jupyterhub.sqlite"), sqlite3.connect(destination)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()


def mark_active(hub, user: str, servers: list[str]) -> None:
    """Move the servers' last_activity 30 minutes ahead, as a busy user's browser keeps it
    fresh: a culler that starts slowly on a loaded machine still finds them active."""
    ahead = (datetime.now(UTC) + timedelta(minutes=30)).isoformat().replace("+00:00", "Z")
    reply = hub.api("POST", f"/users/{user}/activity", "admin",
                    json={"last_activity": ahead,
                          "servers": {name: {"last_activity": ahead}
                                      for name in servers}})  # fmt: skip
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("kind", ["docker", "swarm", "jhub"])
def test_culler_with_the_hub(kind, spawned, bystanders, swarm_engine, tmp_path):
    hub, users = spawned(kind)
    live, idle, ghost = users["live"], users["idle"], users["ghost"]
    on_engine = engine_objects(swarm_engine)
    for user in (live, idle, ghost):
        assert server_names(kind, user) in on_engine, (user, on_engine)
    lab = [] if kind == "jhub" else ["lab"]
    wait_until(lambda: idle_seconds(hub, idle) > TIMEOUT, 30, "the idle server to be old enough")
    mark_active(hub, live, ["", *lab])
    args = ("--timeout", str(TIMEOUT), "--docker", "--docker-state-file",
            str(tmp_path / "docker-state.json"), "--docker-orphan-grace", "1",
            "--docker-hub-api-url", hub.server_api_url)  # fmt: skip
    env = {"DOCKER_HOST": swarm_engine.docker_host}

    first = run_once(hub, "culler", tmp_path, *args, **env)
    assert first.returncode == 0, first.log
    decisions = {d["target"]: d for d in first.status["decisions"]}
    assert decisions[server_names(kind, ghost)]["result"] == "active", first.log  # grace begins
    wait_until(lambda: server_names(kind, idle) not in engine_objects(swarm_engine), 60,
               lambda: f"{idle}'s server culled through the hub:\n{first.log}")  # fmt: skip
    time.sleep(1.1)  # the orphan grace (1 s), measured from the first pass
    mark_active(hub, live, ["", *lab])

    second = run_once(hub, "culler", tmp_path, *args, **env)
    assert second.returncode == 0, second.log
    decisions = {d["target"]: d for d in second.status["decisions"]}
    assert decisions[server_names(kind, ghost)]["result"] == "culled", second.log
    on_engine = engine_objects(swarm_engine)
    assert server_names(kind, ghost) not in on_engine
    assert server_names(kind, live) in on_engine
    if lab:
        assert server_names(kind, live, "lab") in on_engine
    assert set(bystanders) <= set(on_engine), second.log
    model = hub.api("GET", f"/users/{live}", "admin").json()
    assert set(model["servers"]) == {"", *lab}
    assert hub.token("culler") not in first.log + second.log


def test_two_hubs_on_one_engine_never_touch_each_others_servers(
        spawned, swarm_hubs, swarm_engine, tmp_path):  # fmt: skip
    """Staging and production share a swarm: carol's server of the other hub, named and
    labelled as this hub's would be, is no orphan of this hub, whatever the grace."""
    hub, _ = spawned("docker")
    other = swarm_hubs("docker", SERVICES)
    other.create_users(["carol"], "admin")
    other.start_servers(["carol"], "admin", timeout=90)
    assert "jupyter-carol" in engine_objects(swarm_engine)
    env = {"DOCKER_HOST": swarm_engine.docker_host}
    state = str(tmp_path / "docker-state.json")
    for extra in ((), ("--docker-hub-api-url", hub.server_api_url)):
        for _ in range(2):  # the second pass is past the grace
            run = run_once(hub, "culler", tmp_path, "--timeout", "3600", "--docker",
                           "--docker-state-file", state, "--docker-orphan-grace", "0",
                           *extra, **env)  # fmt: skip
            assert run.returncode == 0, run.log
            decisions = {d["target"]: d for d in run.status["decisions"]}
            assert decisions["jupyter-carol"]["result"] == "skipped", run.log
            assert "jupyter-carol" in engine_objects(swarm_engine), run.log
    assert other.api("GET", "/users/carol", "admin").json()["servers"][""]["ready"]


def task_container(swarm_engine, kind: str, user: str) -> str:
    """The container a server runs in: DockerSpawner's own, or the service's task."""
    name = server_names(kind, user)
    if kind == "docker":
        return name
    ids = swarm_engine.docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={name}"
                              ).stdout.split()  # fmt: skip
    assert len(ids) == 1, (name, ids)
    return ids[0]


@pytest.mark.parametrize("kind", ["docker", "swarm", "jhub"])
def test_culler_without_the_hub_stops_an_idle_server(kind, spawned, bystanders, swarm_engine,
                                                     tmp_path):  # fmt: skip
    """--no-hub: the engine's counters alone. A server that used no CPU over the timeout goes
    (DockerSpawner's container stopped; a service removed, as the swarm spawners stop one);
    one whose kernel-like loop burns CPU stays."""
    hub, _ = spawned(kind)
    quiet, busy = f"quiet{kind}", f"busy{kind}"
    hub.create_users([quiet, busy], "admin")
    hub.start_servers([quiet, busy], "admin", timeout=90)
    python = str(hub_venv("5") / "bin" / "python")
    swarm_engine.docker("exec", "-d", task_container(swarm_engine, kind, busy), python, "-c",
                        "while True: pass")  # fmt: skip
    args = ("--no-hub", "--docker", "--timeout", "2", "--docker-cpu-threshold", "0.2",
            "--docker-state-file", str(tmp_path / "docker-state.json"),
            "--docker-hub-api-url", hub.server_api_url)  # fmt: skip
    env = {"DOCKER_HOST": swarm_engine.docker_host}
    first = run_once(hub, "culler", tmp_path, *args, **env)  # the counters' first sample
    assert first.returncode == 0, first.log
    time.sleep(2.5)  # --timeout: the counters must be compared over that long
    second = run_once(hub, "culler", tmp_path, *args, **env)
    assert second.returncode == 0, second.log
    decisions = {d["target"]: d for d in second.status["decisions"]}
    mine = {name: decisions.get(name) for name in (server_names(kind, quiet),
                                                   server_names(kind, busy))}  # fmt: skip
    assert decisions[server_names(kind, quiet)]["result"] == "culled", (mine, first.status)
    assert decisions[server_names(kind, busy)]["result"] == "active", second.log
    on_engine = engine_objects(swarm_engine)
    assert server_names(kind, quiet) not in on_engine
    assert server_names(kind, busy) in on_engine
    assert set(bystanders) <= set(on_engine), second.log
