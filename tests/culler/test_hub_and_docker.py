"""`hub-culler --docker` with the hub backend on: a real hub (responder spawner) and a real
Docker engine. A user container whose user has a running server in the hub stays; one whose
user has none (an orphan) is removed once the grace period has passed; a container that is not
a user container is never touched, orphaned-looking or not."""

from __future__ import annotations

import os
import time

import docker
import docker.errors
import pytest

from realparts.culler import CULLER_SCOPES, run_once
from realparts.docker import busybox_image
from realparts.hub import HubService

pytestmark = pytest.mark.realhub

LABEL = {"hub-sidecars-test": "1"}


@pytest.fixture
def engine(docker_engine):
    busybox_image()
    client = docker.from_env()
    made = []

    def run(name: str, user: str | None,
            hub_api_url: str = "") -> docker.models.containers.Container:  # fmt: skip
        env = {"JUPYTERHUB_USER": user, "JUPYTERHUB_SERVER_NAME": "",
               "JUPYTERHUB_API_URL": hub_api_url} if user else {}  # fmt: skip
        try:
            client.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
        container = client.containers.run(busybox_image(), ["sleep", "3600"], name=name,
                                          detach=True, network_mode="none", labels=LABEL,
                                          environment=env)  # fmt: skip
        made.append(container)
        return container

    yield client, run
    for container in made:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
    client.close()


def exists(client, name: str) -> bool:
    try:
        client.containers.get(name)
    except docker.errors.NotFound:
        return False
    return True


def test_orphaned_user_containers_go_and_the_others_stay(start_hub, engine, tmp_path):
    client, run = engine
    tag = os.urandom(3).hex()
    alive, ghost = f"alive{tag}", f"ghost{tag}"
    hub = start_hub([HubService("admin", ["admin:users", "admin:servers"]),
                     HubService("culler", CULLER_SCOPES)], spawner="responder")  # fmt: skip
    hub.create_users([alive, ghost], "admin")
    hub.start_servers([alive], "admin")
    ours = hub.api_url  # what a spawner gives its servers, here the culler's --url too
    run(f"jupyter-{alive}", alive, ours)  # its user's server runs in the hub
    run(f"jupyter-{ghost}", ghost, ours)  # no server in the hub: an orphan
    run(f"jupyter-other{tag}", f"other{tag}", "http://127.0.0.2:8081/hub/api")  # another hub's
    run(f"jupyter-notauser{tag}", None)  # the name fits, but no JUPYTERHUB_USER: not ours
    run(f"postgres-{tag}", ghost, ours)  # not a user container's name
    state = str(tmp_path / "docker-state.json")
    common = ("--timeout", "3600", "--docker", "--docker-state-file", state,
              "--docker-orphan-grace", "2")  # fmt: skip

    first = run_once(hub, "culler", tmp_path, *common)
    assert first.returncode == 0, first.log
    results = {d["target"]: d["result"] for d in first.status["decisions"]}
    # the grace period starts now: nothing removed yet
    assert exists(client, f"jupyter-{ghost}")
    assert results[f"jupyter-{alive}"] == "active"
    time.sleep(2.5)

    second = run_once(hub, "culler", tmp_path, *common)
    assert second.returncode == 0, second.log
    results = {d["target"]: d["result"] for d in second.status["decisions"]}
    assert results[f"jupyter-{ghost}"] == "culled", second.log
    assert not exists(client, f"jupyter-{ghost}")
    assert exists(client, f"jupyter-{alive}")
    assert exists(client, f"jupyter-notauser{tag}") and exists(client, f"postgres-{tag}")
    assert exists(client, f"jupyter-other{tag}")
    assert results[f"jupyter-other{tag}"] == "skipped"
    assert f"postgres-{tag}" not in results
    assert hub.token("culler") not in first.log + second.log
