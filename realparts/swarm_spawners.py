"""The three Docker spawners as the swarm tests' hubs run them (imported by the hub, from
.venv-hub5): unchanged but for where a server listens. The test's swarm has no IPVS and no
route out, so every server runs on the namespace's host network, on a port of its own
(picked by the hub, which runs in that namespace), and the hub reaches it on 127.0.0.1: the
override dockerspawner's own docs give for network_mode=host."""

from dockerspawner import DockerSpawner, SwarmSpawner
from jhub import SwarmSpawner as JhubSwarmSpawner
from jupyterhub.utils import random_port


class HostDockerSpawner(DockerSpawner):
    async def start(self):
        self.port = random_port()
        return await super().start()

    async def get_ip_and_port(self):
        return "127.0.0.1", self.port


class HostSwarmSpawner(SwarmSpawner):
    async def start(self):
        self.port = random_port()
        return await super().start()

    async def get_ip_and_port(self):
        return "127.0.0.1", self.port


class HostJhubSwarmSpawner(JhubSwarmSpawner):
    """jhub's start returns (service name, service_port): the name resolves on an overlay
    network only."""

    async def start(self):
        self.port = self.service_port = random_port()
        await super().start()
        return "127.0.0.1", self.port
