"""The Docker backend's settings (`--docker`), declared once; part of CullerSettings.

The defaults find the containers DockerSpawner starts (`jupyter-{username}`, and
`jupyter-{username}--{servername}` for named servers) and the services of the Swarm spawners
(dockerspawner's SwarmSpawner uses the same names; cassinyio's SwarmSpawner
`jupyter-{md5 of the user name}-{server name, or 1}`). Every one of these spawners puts
JUPYTERHUB_USER in the container's environment, which is how the culler tells a user's server
from anything else running on the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from hubsidecars.config import Duration, setting
from hubsidecars.usercontainers import DOCKERSPAWNER_NAMES, SWARMSPAWNER_NAMES

DEFAULT_DOCKER_STATE = "/var/lib/hub-sidecars/culler/docker-state.json"
__all__ = ["DOCKERSPAWNER_NAMES", "SWARMSPAWNER_NAMES", "DockerSettings"]


@dataclass(frozen=True, kw_only=True)
class DockerSettings:
    docker: bool = setting(
        False,
        "also cull user containers and Swarm services through the Docker engine "
        "(the local socket, or $DOCKER_HOST with $DOCKER_TLS_VERIFY/$DOCKER_CERT_PATH)",
        heading="Docker: user containers (DockerSpawner, tmpnb-style pools) and Swarm services.",
    )
    docker_container_names: tuple[str, ...] = setting(
        DOCKERSPAWNER_NAMES,
        "name templates of user containers (comma separated): {username} and {servername} "
        "escaped as DockerSpawner does, {md5} the md5 of the user name, {any} any text; "
        "change 'jupyter' when DockerSpawner.prefix is set; empty: none by name",
        metavar="TEMPLATES",
    )
    docker_service_names: tuple[str, ...] = setting(
        SWARMSPAWNER_NAMES,
        "name templates of users' Swarm services, as for --docker-container-names",
        metavar="TEMPLATES",
    )
    docker_labels: tuple[str, ...] = setting(
        (),
        "a container or service carrying one of these labels (key or key=value, comma "
        "separated) is a candidate too, whatever its name",
        metavar="LABELS",
    )
    docker_require_hub_env: bool = setting(
        True,
        "touch only containers and services whose environment names the hub user they serve "
        "(JUPYTERHUB_USER, set by every JupyterHub spawner): the hub's own container never has "
        "it; turn off for tmpnb-style pools that no hub started",
    )
    docker_hub_api_url: tuple[str, ...] = setting(
        (),
        "the JUPYTERHUB_API_URL this hub gives its servers (the hub's hub_connect_url plus "
        "/hub/api; comma separated if several): a container or service with another is "
        "another hub's and never touched; default: --url (with --no-hub: any hub's)",
        metavar="URLS",
    )
    docker_exclude: tuple[str, ...] = setting(
        ("jupyterhub",),
        "names or IDs (a prefix of 12 or more hex digits) of containers and services never "
        "touched, e.g. the hub's own; the container the culler runs in is always excluded",
        metavar="NAMES",
    )
    docker_services: bool = setting(
        True,
        "also look at Swarm services (only when the engine is a swarm manager): with the hub, "
        "orphans are removed; with --no-hub, a service whose task on this node is idle",
    )
    docker_orphan_grace: Duration = setting(
        300.0,
        "with the hub backend: remove a running container or service whose user has no "
        "running or pending server in the hub once it has been seen so this long",
        min=0,
    )
    docker_cpu_threshold: Duration = setting(
        2.0,
        "without the hub: a container whose CPU time grew by at most this much over --timeout "
        "(and its network bytes by at most --docker-net-threshold) is idle",
        min=0,
    )
    docker_net_threshold: int = setting(
        65536,
        "bytes received plus sent over --timeout below which a container counts as idle "
        "(containers without a network count as idle on the network side)",
        metavar="BYTES",
        min=0,
    )
    docker_remove: bool = setting(
        False,
        "remove idle containers after stopping them (orphans are always removed)",
    )
    docker_stop_timeout: Duration = setting(
        10.0,
        "seconds a container gets to exit after SIGTERM before it is killed",
        min=0,
        max=3600,
    )
    docker_request_timeout: Duration = setting(
        60.0, "timeout of one request to the Docker engine", min=1, max=3600
    )
    docker_state_file: str = setting(
        DEFAULT_DOCKER_STATE,
        "where the counters observed per container, and when each orphan was first seen, "
        "survive a restart",
        metavar="FILE",
    )
