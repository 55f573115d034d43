"""hub-stats --docker beside real hubs on the test's swarm (realparts/swarm.py): the CPU
and memory of real servers, swarm tasks (dockerspawner's SwarmSpawner) and plain containers
(DockerSpawner), recorded per node, only the hub's own, and shown per node by /stats.json's
figures (running servers, their CPU and memory, and the node's capacity as far as the samples
know it: the sum of the limits)."""

from __future__ import annotations

import sqlite3

import pytest

from realparts.hub import HubService
from realparts.process import ManagedProcess
from realparts.stats import argv, stats_env
from stats.web import ActivityStore

pytestmark = pytest.mark.hub

SERVICES = [HubService("admin", ["admin:users", "admin:servers"])]


def samples(db, poll_id=None) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        if poll_id is None:
            poll_id = conn.execute("SELECT max(poll_id) FROM container_samples").fetchone()[0]
        return conn.execute(
            "SELECT host, container, user, server_name, cpu_percent, memory_bytes, "
            "memory_limit_bytes FROM container_samples WHERE poll_id = ? ORDER BY container",
            [poll_id]).fetchall()  # fmt: skip
    finally:
        conn.close()


def sampled_polls(db) -> int:
    try:
        conn = sqlite3.connect(db)
        try:
            query = "SELECT count(DISTINCT poll_id) FROM container_samples"
            return conn.execute(query).fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return 0


def test_hub_stats_records_swarm_tasks_and_containers_per_node(swarm_hubs, swarm_engine,
                                                                tmp_path):  # fmt: skip
    swarm = swarm_hubs("swarm", SERVICES)
    plain = swarm_hubs("docker", SERVICES)
    swarm.create_users(["ana"], "admin")
    plain.create_users(["ben"], "admin")
    swarm.start_servers(["ana"], "admin", timeout=90)
    swarm.start_servers(["ana"], "admin", server_name="lab", timeout=90)
    plain.start_servers(["ben"], "admin", timeout=90)
    node = swarm_engine.docker("info", "--format", "{{.Name}}").stdout.strip()
    expected = {swarm: {("ana", "", "jupyter-ana.1."), ("ana", "lab", "jupyter-ana--lab.1.")},
                plain: {("ben", "", "jupyter-ben")}}
    for hub, servers in expected.items():
        db = tmp_path / f"{hub.kind}.sqlite"
        command = argv(hub.api_url, db, "--docker", "--groups=false", "--docker-hub-api-url",
                       hub.server_api_url, interval=5)  # fmt: skip
        daemon = ManagedProcess(command, tmp_path / f"hub-stats-{hub.kind}.log",
                                env=stats_env(hub.token("admin"),
                                              DOCKER_HOST=swarm_engine.docker_host))  # fmt: skip
        try:
            daemon.start(lambda db=db: sampled_polls(db) >= 2, 60, "hub-stats with two sampled polls")
        finally:
            daemon.stop()
        rows = samples(db)
        # only this hub's servers: the other hub's, on the same engine, are not recorded
        assert {(user, server) for _, _, user, server, *_ in rows} == \
            {(user, server) for user, server, _ in servers}, (rows, daemon.log())  # fmt: skip
        for (host, container, user, server, cpu, memory, limit) in rows:
            prefix = next(p for u, s, p in servers if (u, s) == (user, server))
            assert container.startswith(prefix), container  # a task is sampled as itself
            assert host == node
            assert cpu is not None and cpu >= 0  # the daemon's second sample of it
            assert memory > 10_000_000  # a real jupyter-server's Python, not an empty shell
            assert limit >= memory
        figures = ActivityStore(str(db)).now()["docker"]
        assert set(figures["hosts"]) == {node}
        assert figures["hosts"][node]["containers"] == len(servers)
        assert figures["hosts"][node]["memory_bytes"] == sum(row[5] for row in rows)
