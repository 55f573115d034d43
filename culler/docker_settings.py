"""The Docker backend's settings (`--docker`), declared once; part of CullerSettings."""

from __future__ import annotations

from dataclasses import dataclass

from hubsidecars.config import setting

DEFAULT_DOCKER_STATE = "/var/lib/hub-sidecars/culler/docker-state.json"


@dataclass(frozen=True, kw_only=True)
class DockerSettings:
    docker: bool = setting(
        False,
        "also cull user containers and Swarm services through the Docker engine "
        "(the local socket, or $DOCKER_HOST with $DOCKER_TLS_VERIFY/$DOCKER_CERT_PATH)",
        heading="Docker: user containers (DockerSpawner, tmpnb-style pools) and Swarm services.",
    )
    docker_state_file: str = setting(
        DEFAULT_DOCKER_STATE,
        "where the counters observed per container survive a restart",
        metavar="FILE",
    )
