"""hub-stats --docker: CPU and memory of each running user container, once per poll.

A user container is a running container that hubsidecars.usercontainers calls a user's server
of this hub (the culler's rule: a name template of `docker_names` fits it, or its service's
name for a swarm task, and its environment carries JUPYTERHUB_USER and this hub's
JUPYTERHUB_API_URL). Each poll adds one `container_samples` row per such container, all in one
transaction; `host` is the engine's node, so a swarm's nodes are told apart. The same
transaction adds a `docker_hosts` row: the host's CPUs and memory as the engine sees them.

cpu_percent is the container's CPU time since the previous sample of the same container,
divided by the wall time between the two samples (the engine's own read times), as a percent
of one core: 250 is two and a half cores busy on average over the poll interval, which is what
an analyst wants from a 5-minute poll (a one-second burst would say little). The first sample
of a container (new container, or a collector just started) has no previous one: its
cpu_percent is NULL. The engine's stats are read with one-shot=true (API 1.41, Docker 20.10):
an immediate answer, not the two-sample second the plain stats call waits.

memory_bytes is what `docker stats` shows: the cgroup's usage less its inactive file cache;
memory_limit_bytes the cgroup's limit (the host's memory when the container has no limit).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import docker
import docker.errors
import requests
import sqlite_utils

from hubsidecars.config import ConfigError
from hubsidecars.usercontainers import UserServers, hub_env
from stats.schema import transaction

log = logging.getLogger("stats.containers")

DOCKER_TIMEOUT = 30  # seconds for one request to the engine
CONCURRENCY = 16  # stats requests in flight at once (and the client's connection pool)


@dataclass(frozen=True)
class CpuReading:
    total_ns: int
    at: datetime


@dataclass(frozen=True)
class Sample:
    container_id: str
    container: str
    user: str
    server_name: str
    cpu_percent: float | None
    memory_bytes: int | None
    memory_limit_bytes: int | None


def environment(attrs: Mapping) -> dict[str, str]:
    """A container's environment (inspect's Config.Env) as a dict."""
    pairs = (item.partition("=") for item in (attrs.get("Config") or {}).get("Env") or ())
    return {key: value for key, _, value in pairs}


def cpu_reading(stats: Mapping) -> CpuReading | None:
    """The CPU counter and the engine's read time, or None when the engine could not read the
    counters (it then answers zeros and the zero time)."""
    total = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    read = str(stats.get("read") or "")
    if not total or read.startswith("0001-01-01"):
        return None
    return CpuReading(int(total), parse_engine_time(read))


def parse_engine_time(text: str) -> datetime:
    """The engine's RFC 3339 times carry nanoseconds; datetime keeps microseconds."""
    text = text.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        rest = rest[:digits][:6].ljust(6, "0") + rest[digits:]
        text = f"{head}.{rest}"
    return datetime.fromisoformat(text)


def cpu_percent(previous: CpuReading | None, now: CpuReading | None) -> float | None:
    """Percent of one core between two readings; None without two usable readings (the first
    sample, a restarted container whose counter went back, unreadable counters)."""
    if previous is None or now is None:
        return None
    wall_ns = (now.at - previous.at).total_seconds() * 1e9
    used_ns = now.total_ns - previous.total_ns
    if wall_ns <= 0 or used_ns < 0:
        return None
    return round(used_ns / wall_ns * 100, 3)


def memory_in_use(stats: Mapping) -> tuple[int | None, int | None]:
    """(usage less inactive file cache, limit), as `docker stats` computes it (cgroup v1 and
    v2 name the cache differently)."""
    memory = stats.get("memory_stats") or {}
    usage, limit = memory.get("usage"), memory.get("limit")
    if usage is None:
        return None, limit
    detail = memory.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return (usage - cache if cache <= usage else usage), limit


class ContainerSampler:
    """Called by the collector as `sampler(db, poll_id)` after each recorded poll."""

    def __init__(self, client: docker.DockerClient, names: Iterable[str], *,
                 hub_api_urls: Iterable[str] = (),
                 concurrency: int = CONCURRENCY) -> None:  # fmt: skip
        self.client = client
        self.names = tuple(names)
        self.rule = UserServers(self.names, self.names, hub_api_urls=tuple(hub_api_urls))
        self.concurrency = concurrency
        self._previous: dict[str, CpuReading] = {}

    @classmethod
    def from_settings(cls, settings, environ: Mapping[str, str] | None = None) -> ContainerSampler:
        """A sampler on the engine of $DOCKER_HOST (default: the local socket). An engine that
        cannot be reached is a ConfigError with one line (the daemon exits 2 at start)."""
        environ = dict(os.environ if environ is None else environ)
        where = environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        try:
            client = docker.from_env(timeout=DOCKER_TIMEOUT, environment=environ,
                                     max_pool_size=CONCURRENCY)  # fmt: skip
            client.ping()
        except (docker.errors.DockerException, requests.RequestException, OSError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ConfigError(f"docker: cannot reach the engine at {where}: {reason}") from None
        urls = tuple(getattr(settings, "docker_hub_api_url", ()) or ())
        if not urls and getattr(settings, "url", ""):
            urls = (settings.url,)
        return cls(client, settings.docker_names, hub_api_urls=urls)

    def is_user_container(self, name: str, env: Mapping[str, str],
                          labels: Mapping[str, str] | None = None) -> bool:  # fmt: skip
        return self.rule.container(name, dict(labels or {}), hub_env(
            [f"{key}={value}" for key, value in env.items()])).ours

    def samples(self) -> list[Sample]:
        """Read every running user container's counters (no database involved)."""
        running = [
            (container, env)
            for container in self.client.containers.list(filters={"status": "running"})
            if self.is_user_container(container.name, env := environment(container.attrs),
                                      container.labels)
        ]
        # The engine answers a stats request at its next one-second collection tick: asked
        # one after the other, 500 containers would take minutes; asked together, seconds.
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="docker-stats") as pool:
            answers = list(pool.map(self._stats, (container for container, _ in running)))
        found = []
        readings: dict[str, CpuReading] = {}
        for (container, env), stats in zip(running, answers, strict=True):
            if stats is None:  # gone between the listing and now
                continue
            reading = cpu_reading(stats)
            if reading is not None:
                readings[container.id] = reading
            memory, limit = memory_in_use(stats)
            found.append(Sample(
                container.id, container.name, env["JUPYTERHUB_USER"],
                env.get("JUPYTERHUB_SERVER_NAME", ""),
                cpu_percent(self._previous.get(container.id), reading), memory, limit,
            ))  # fmt: skip
        # Containers no longer running are forgotten: the memory stays as small as the hub.
        self._previous = readings
        return found

    @staticmethod
    def _stats(container) -> Mapping | None:
        try:
            return container.stats(stream=False, one_shot=True)
        except docker.errors.NotFound:
            return None

    def __call__(self, db: sqlite_utils.Database, poll_id: int) -> int:
        """Add this poll's samples in one transaction; returns how many."""
        info = self.client.info()
        host = info.get("Name") or "docker"
        rows = [(poll_id, host, s.container, s.user, s.server_name, s.cpu_percent,
                 s.memory_bytes, s.memory_limit_bytes) for s in self.samples()]  # fmt: skip
        with transaction(db):
            db.conn.execute(
                "INSERT INTO docker_hosts (poll_id, host, cpus, memory_bytes) VALUES (?, ?, ?, ?)",
                [poll_id, host, info.get("NCPU"), info.get("MemTotal")],
            )
            db.conn.executemany(
                "INSERT INTO container_samples (poll_id, host, container, user, server_name, "
                "cpu_percent, memory_bytes, memory_limit_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )  # fmt: skip
        return len(rows)
