"""The Docker backend: users' containers and Swarm services, culled through the engine's API.

With the hub backend on, a container or service whose user has no running or pending server in
the hub is an orphan, removed after a grace period. Without it, a container whose CPU and network
counters stood still for the timeout is stopped (and removed if configured), and a service whose
task on this node did so is removed. Candidates are what hubsidecars.usercontainers calls users'
servers of this hub, minus the excluded and the culler's own container.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import requests

from culler.docker.idle import DockerState, StateFile, judge, sample_from_stats
from culler.docker.settings import DockerSettings
from culler.hubpass import run_concurrently
from culler.outcomes import Kind, Outcome, PassResult
from hubsidecars.config import ConfigError, format_duration
from hubsidecars.logs import log_event
from hubsidecars.usercontainers import Owner, UserServers, hub_env

_CONTAINER_DIR = re.compile(r"/containers/([0-9a-f]{64})/")
_CGROUP_ID = re.compile(r"docker[/-]([0-9a-f]{64})\b")


class EngineUnavailable(Exception):
    """The engine cannot be reached (`unreachable`) or answered 5xx; the message is one line."""

    def __init__(self, message: str, unreachable: bool) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def short_error(exc: BaseException) -> str:
    """One line about a Docker SDK or connection error, never the engine's whole answer."""
    if isinstance(exc, docker.errors.APIError):
        text = str(exc.explanation or getattr(exc.response, "reason", "") or "error")
        text = text.strip().splitlines()[0] if text.strip() else "error"
        status = exc.status_code
        return f"{status} {text[:200]}" if status else text[:200]
    for cause in _causes(exc):
        if isinstance(cause, PermissionError):
            return "permission denied on the engine's socket"
        if isinstance(cause, FileNotFoundError):
            return "the engine's socket does not exist"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}".strip()


def _causes(exc: BaseException):
    """The exception and everything it wraps (requests and urllib3 nest the real cause in
    args and `reason`)."""
    seen: set[int] = set()
    stack: list = [exc]
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(
            [
                current.__cause__,
                current.__context__,
                getattr(current, "reason", None),
                *current.args,
            ]
        )


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, docker.errors.APIError):
        return exc.status_code is None or exc.status_code >= 500
    return isinstance(exc, (requests.RequestException, ConnectionError))


def engine_address(environ: dict[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect_docker(settings: DockerSettings) -> docker.DockerClient:
    """A client for the engine named by the environment (DOCKER_HOST, DOCKER_TLS_VERIFY,
    DOCKER_CERT_PATH) or the local socket, checked with a ping; ConfigError when it cannot be
    used."""
    where = engine_address()
    try:
        client = docker.from_env(timeout=int(settings.docker_request_timeout))
    except docker.errors.DockerException as exc:
        raise ConfigError(f"docker: cannot use the engine at {where}: {short_error(exc)}") from None
    try:
        client.ping()
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        client.close()
        raise ConfigError(
            f"docker: cannot reach the engine at {where}: {short_error(exc)}"
        ) from None
    return client


def this_hub(settings) -> tuple[str, ...]:
    """The JUPYTERHUB_API_URLs of this hub's servers: --docker-hub-api-url, else the hub's
    API URL (--url) when the hub backend is on; none (any hub's) with --no-hub."""
    if settings.docker_hub_api_url:
        return tuple(settings.docker_hub_api_url)
    if getattr(settings, "hub", False) and getattr(settings, "url", ""):
        return (settings.url,)
    return ()


def own_container_ids(proc_self: Path = Path("/proc/self")) -> frozenset[str]:
    """The ID of the container this process runs in, if any: the engine bind-mounts the
    container's own hostname file on /etc/hostname, and (cgroup v1) names its cgroups after it.
    On the host, neither points at a container."""
    found: set[str] = set()
    try:
        for line in (proc_self / "mountinfo").read_text().splitlines():
            fields = line.split()
            if len(fields) > 4 and fields[4] == "/etc/hostname":
                found.update(_CONTAINER_DIR.findall(fields[3] + "/"))
    except OSError:
        pass
    try:
        found.update(_CGROUP_ID.findall((proc_self / "cgroup").read_text()))
    except OSError:
        pass
    return frozenset(found)


@dataclass(frozen=True)
class Candidate:
    """A container or service the templates or labels selected."""

    kind: Kind
    id: str
    name: str
    labels: dict[str, str]
    env: dict[str, str] | None = None  # the hub entries of its environment, when listed


class DockerCuller:
    """One pass over the engine's running containers (and services, on a swarm manager)."""

    def __init__(
        self,
        client: docker.DockerClient,
        settings: DockerSettings,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.time,
        own_ids: frozenset[str] | None = None,
    ) -> None:
        self.api = client.api
        self.settings = settings
        self.logger = logger or logging.getLogger("culler.docker")
        self.clock = clock
        self.own_ids = own_container_ids() if own_ids is None else own_ids
        self.rule = UserServers(
            settings.docker_container_names, settings.docker_service_names,
            settings.docker_labels, require_hub_env=settings.docker_require_hub_env,
            hub_api_urls=this_hub(settings),
        )  # fmt: skip
        self.state_file = StateFile(settings.docker_state_file, self.logger)
        self.state: DockerState | None = None
        self._stops: list[Callable[[], Outcome]] = []

    # --- the pass ---

    def run_pass(
        self,
        result: PassResult,
        stop: threading.Event,
        hub_servers: frozenset[tuple[str, str]] | None,
    ) -> None:
        """Look at every candidate once; add one Outcome each, and to `result.errors` one line
        when the engine is unreachable or answers 5xx.

        `hub_servers`: None when the hub backend is off (containers are then judged by their
        counters); else every (user, server name) the hub has running or pending, "" for the
        default server. When the hub could not be listed this pass, do not call this with an
        empty set: every container would start its orphan clock.
        """
        if self.state is None:
            self.state = self.state_file.load()
        try:
            containers = self._list_containers()
            services = self._list_services() if self.settings.docker_services else []
        except EngineUnavailable as exc:
            self._engine_error(result, f"docker: listing failed: {exc}")
            return
        live = {c.id for c in containers} | {s.id for s in services}
        self._stops = []
        for candidate in [*containers, *services]:
            if stop.is_set():
                break
            try:
                outcome = self._consider(candidate, hub_servers, result)
            except docker.errors.NotFound:
                live.discard(candidate.id)  # gone during the pass: nothing to do
            except EngineUnavailable as exc:
                self._engine_error(result, f"docker: {candidate.kind} {candidate.name}: {exc}")
                if exc.unreachable:
                    self._stops = []
                    break  # the rest would fail the same way; the next pass retries
            else:
                if outcome is not None:
                    result.add(outcome)
        # A stop waits up to docker_stop_timeout for the container to exit: side by side,
        # up to --concurrency at a time, not one after another.
        limit = getattr(self.settings, "concurrency", 10) or 256
        for outcome in run_concurrently(self._stops, limit, stop):
            result.add(outcome)
        self._stops = []
        self.state.prune(live)
        self._save_state()

    def _engine_error(self, result: PassResult, message: str) -> None:
        result.errors.append(message)
        log_event(self.logger, "docker engine unavailable", logging.ERROR, error=message)

    def _save_state(self) -> None:
        if getattr(self.settings, "dry_run", False):
            return  # a dry run changes nothing the daemon sees, its state file included
        try:
            self.state_file.save(self.state)
        except OSError as exc:
            log_event(
                self.logger,
                "docker state file not written",
                logging.WARNING,
                path=str(self.state_file.path),
                error=exc.strerror or type(exc).__name__,
            )

    def _call(self, method: Callable, *args, **kwargs):
        """One engine request; 5xx and connection failures become EngineUnavailable."""
        try:
            return method(*args, **kwargs)
        except docker.errors.NotFound:
            raise
        except (docker.errors.APIError, requests.RequestException, ConnectionError) as exc:
            if _is_unavailable(exc):
                unreachable = not isinstance(exc, docker.errors.APIError)
                raise EngineUnavailable(short_error(exc), unreachable) from None
            raise

    # --- listing ---

    def _excluded(self, object_id: str, name: str) -> bool:
        if object_id in self.own_ids:
            return True
        for entry in self.settings.docker_exclude:
            if entry == name:
                return True
            if (
                len(entry) >= 12
                and re.fullmatch(r"[0-9a-f]+", entry)
                and object_id.startswith(entry)
            ):
                return True
        return False

    def _list_containers(self) -> list[Candidate]:
        found = []
        for summary in self._call(self.api.containers, filters={"status": "running"}):
            names = [n.lstrip("/") for n in summary.get("Names") or ()]
            name = next((n for n in names if "/" not in n), names[0] if names else "")
            labels = summary.get("Labels") or {}
            if self.rule.task_of(labels):
                continue  # a swarm task: its service is the one to act on, never the task
            if self.rule.candidate("container", name, labels):
                found.append(Candidate("container", summary["Id"], name, labels))
        return found

    def _list_services(self) -> list[Candidate]:
        swarm = (self._call(self.api.info) or {}).get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            return []  # not a swarm manager: no services to see
        found = []
        for service in self._call(self.api.services):
            spec = service.get("Spec") or {}
            replicated = (spec.get("Mode") or {}).get("Replicated")
            if replicated is not None and not replicated.get("Replicas"):
                continue  # scaled to zero: nothing runs
            container_spec = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
            labels = {**(container_spec.get("Labels") or {}), **(spec.get("Labels") or {})}
            name = spec.get("Name", "")
            if self.rule.candidate("service", name, labels):
                env = hub_env(container_spec.get("Env"))
                found.append(Candidate("service", service["ID"], name, labels, env))
        return found

    def _environment(self, candidate: Candidate) -> dict[str, str]:
        if candidate.env is not None:
            return candidate.env
        details = self._call(self.api.inspect_container, candidate.id)
        return hub_env((details.get("Config") or {}).get("Env"))

    # --- deciding ---

    def _consider(
        self,
        candidate: Candidate,
        hub_servers: frozenset[tuple[str, str]] | None,
        result: PassResult,
    ) -> Outcome | None:
        if self._excluded(candidate.id, candidate.name):
            return self._outcome(candidate, "skipped", "excluded (--docker-exclude or our own)")
        verdict = self.rule.judge(candidate.kind, candidate.name, self._environment(candidate))
        if not verdict.ours:
            return self._outcome(candidate, "skipped", verdict.reason)
        owner = verdict.owner
        if hub_servers is not None:
            return self._consider_orphan(candidate, owner, hub_servers, result)
        if candidate.kind == "service":
            task = self._local_task(candidate)
            if task is None:
                return self._outcome(candidate, "skipped", "no task of it runs on this node "
                                     "(a culler on its node judges it)")  # fmt: skip
            return self._consider_idle(candidate, result, task)
        return self._consider_idle(candidate, result, candidate.id)

    def _local_task(self, candidate: Candidate) -> str | None:
        """The ID of the service's running task container on this engine's node, if any (a
        user's server has one replica; the swarm spawners scale none)."""
        tasks = self._call(self.api.containers, filters={
            "status": "running", "label": f"com.docker.swarm.service.id={candidate.id}"})
        return tasks[0]["Id"] if tasks else None

    def _consider_orphan(
        self,
        candidate: Candidate,
        owner: Owner,
        hub_servers: frozenset[tuple[str, str]],
        result: PassResult,
    ) -> Outcome | None:
        if not owner.known:
            return self._outcome(
                candidate,
                "skipped",
                "owner unknown: no JUPYTERHUB_USER and "
                "no {username} or {md5} in the matching template",
            )
        if owner.has_server_in(hub_servers):
            self.state.orphans.pop(candidate.id, None)
            return self._outcome(candidate, "active", f"server of {owner.describe()} in the hub")
        now = self.clock()
        if candidate.id not in self.state.orphans:
            self.state.orphans[candidate.id] = now
            self._log_action(
                candidate,
                "orphan seen",
                f"{owner.describe()} has no server in "
                f"the hub; grace {format_duration(self.settings.docker_orphan_grace)}",
            )
        first_seen = self.state.orphans[candidate.id]
        orphaned = max(0.0, now - first_seen)
        grace = self.settings.docker_orphan_grace
        if orphaned < grace:
            return self._outcome(
                candidate,
                "active",
                f"orphan of {owner.describe()} (no server in the hub) for "
                f"{format_duration(round(orphaned))} of grace "
                f"{format_duration(grace)}",
            )
        reason = (
            f"orphan of {owner.describe()}: no server in the hub for "
            f"{format_duration(round(orphaned))} >= grace {format_duration(grace)}"
        )
        return self._act(candidate, reason, True, result)

    def _consider_idle(self, candidate: Candidate, result: PassResult,
                       container_id: str) -> Outcome | None:  # fmt: skip
        """Idle when the counters of `container_id` (the container, or a service's task here)
        stood still over the timeout; a service is then removed, as its spawner does to stop
        it (stopping its task would only make the swarm start another)."""
        stats = self._call(self.api.stats, container_id, stream=False, one_shot=True)
        now = sample_from_stats(stats, self.clock())
        if now is None:
            return self._outcome(
                candidate, "skipped", "the engine gave no counters (cgroup stats unreadable)"
            )
        verdict = judge(
            self.state.samples.get(candidate.id, ()),
            now,
            self.settings_timeout,
            self.settings.docker_cpu_threshold,
            self.settings.docker_net_threshold,
        )
        self.state.samples[candidate.id] = verdict.keep
        if not verdict.idle:
            return self._outcome(candidate, "active", verdict.reason)
        remove = self.settings.docker_remove or candidate.kind == "service"
        return self._act(candidate, verdict.reason, remove, result)

    @property
    def settings_timeout(self) -> float:
        # CullerSettings carries `timeout` (HubSettings); DockerSettings alone does not.
        return float(getattr(self.settings, "timeout", 600.0))

    # --- acting ---

    def _act(self, candidate: Candidate, reason: str, remove: bool,
             result: PassResult) -> Outcome | None:  # fmt: skip
        """Plan stopping (and removing) the container, or removing the service: None, and
        the pass runs the stop with the others; in a dry run, the would-cull outcome."""
        action = "remove" if remove else "stop"
        if getattr(self.settings, "dry_run", False):
            self._log_action(candidate, f"would {action}", reason)
            return self._outcome(candidate, "would-cull", f"would {action}: {reason}")
        self._stops.append(lambda: self._stop_one(candidate, reason, remove, result))
        return None

    def _stop_one(self, candidate: Candidate, reason: str, remove: bool,
                  result: PassResult) -> Outcome:  # fmt: skip
        """One planned stop, on a thread of its own: whatever fails is this one's outcome (and
        a pass error when the engine is unavailable), never the other stops'."""
        action = "remove" if remove else "stop"
        try:
            return self._do_act(candidate, reason, remove, result)
        except EngineUnavailable as exc:
            self._engine_error(result, f"docker: {candidate.kind} {candidate.name}: {exc}")
            return self._outcome(candidate, "failed", f"{action} failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - one container's failure, not the pass's
            self._log_action(candidate, f"{action} failed", reason, logging.ERROR, short_error(exc))
            return self._outcome(candidate, "failed", f"{action} failed: {short_error(exc)}")

    def _do_act(self, candidate: Candidate, reason: str, remove: bool,
                result: PassResult) -> Outcome:  # fmt: skip
        """Stop (and remove) the container, or remove the service. A 5xx answer fails this one
        and is a pass error; an unreachable engine raises."""
        action = "remove" if remove else "stop"
        try:
            if candidate.kind == "service":
                self._call(self.api.remove_service, candidate.id)
            else:
                self._call(
                    self.api.stop,
                    candidate.id,
                    timeout=int(round(self.settings.docker_stop_timeout)),
                )
                if remove:
                    self._call(self.api.remove_container, candidate.id)
        except docker.errors.NotFound:
            self._log_action(candidate, "gone", reason)
            self.state.orphans.pop(candidate.id, None)
            return self._outcome(candidate, "culled", f"gone before {action}: {reason}")
        except EngineUnavailable as exc:
            if exc.unreachable:
                raise
            self._log_action(candidate, f"{action} failed", reason, logging.ERROR, str(exc))
            result.errors.append(f"docker: {candidate.kind} {candidate.name}: {action}: {exc}")
            return self._outcome(candidate, "failed", f"{action} failed: {exc}")
        except docker.errors.APIError as exc:
            self._log_action(candidate, f"{action} failed", reason, logging.ERROR, short_error(exc))
            return self._outcome(candidate, "failed", f"{action} failed: {short_error(exc)}")
        self.state.samples.pop(candidate.id, None)
        self.state.orphans.pop(candidate.id, None)
        done = "removed" if remove else "stopped"
        self._log_action(candidate, done, reason)
        return self._outcome(candidate, "culled", f"{done}: {reason}")

    def _log_action(
        self,
        candidate: Candidate,
        action: str,
        reason: str,
        level: int = logging.INFO,
        error: str | None = None,
    ) -> None:
        fields = {
            "kind": candidate.kind,
            "target": candidate.name,
            "id": candidate.id[:12],
            "action": action,
            "reason": reason,
        }
        if error:
            fields["error"] = error
        log_event(self.logger, f"docker {candidate.kind} {action}", level, **fields)

    @staticmethod
    def _outcome(candidate: Candidate, result: str, reason: str) -> Outcome:
        return Outcome(candidate.kind, candidate.name, result, reason)  # type: ignore[arg-type]
