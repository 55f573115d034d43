"""The test swarm itself (realparts/swarm.py): a second engine that is a swarm manager,
runs a service from a local image on the namespace's host network, and leaves nothing behind:
no network namespace, mount, cgroup or daemon, and the default engine untouched."""

from __future__ import annotations

import subprocess

import pytest

from realparts.docker import busybox_image
from realparts.hostcheck import mounts
from realparts.swarm import ADVERTISE, SwarmEngine, engine_objects
from realparts.waiting import wait_until

pytestmark = pytest.mark.swarm


def test_a_swarm_of_its_own_comes_and_goes_without_a_trace(tmp_path):
    mounts_before = set(mounts())
    default_before = subprocess.run(["ls", "/var/run/docker.sock"], capture_output=True).returncode
    engine = SwarmEngine(tmp_path / "swarm", name="hswtest").start()
    try:
        info = engine.docker("info", "--format",
                             "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} "
                             "{{.Swarm.NodeAddr}}").stdout.split()  # fmt: skip
        assert info == ["active", "true", ADVERTISE]
        image = busybox_image(env=engine.env())
        engine.docker("service", "create", "--detach", "--no-resolve-image", "--network", "host",
                      "--name", "probe", image, "sleep", "3600")  # fmt: skip
        engine.docker("run", "-d", "--network", "none", "--name", "plain", image, "sleep", "3600")
        wait_until(lambda: engine_objects(engine) == {"probe": "service", "plain": "container"},
                   30, "the service's task and the container to run")  # fmt: skip
        # while it runs, the check sees it: the namespace, the daemons, the cgroups
        seen = " ".join(engine.leftovers())
        assert "network namespace hswtest" in seen and "dockerd" in seen, seen
        assert "cgroup /sys/fs/cgroup/" in seen, seen
    finally:
        engine.stop()  # raises when anything is left
    assert engine.leftovers() == []
    assert "hswtest" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                           text=True).stdout  # fmt: skip
    # other workers' tests mount tmpfs under their own tmp_path meanwhile: not this engine's
    others = str(tmp_path.parent.parent)
    new = {point for point in set(mounts()) - mounts_before
           if point.startswith(str(tmp_path)) or not point.startswith(others)}  # fmt: skip
    assert new == set()
    # the default engine's socket is where it was (its own tests run beside this group)
    assert subprocess.run(["ls", "/var/run/docker.sock"],
                          capture_output=True).returncode == default_before  # fmt: skip
