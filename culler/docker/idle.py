"""Counter-based idleness of a container, and the small state file that remembers it.

Without a hub, the only evidence of use is what the engine counts: CPU time and network bytes.
A container is idle when, between a sample taken at least `timeout` ago and now, neither moved
by more than its threshold. Samples (and when each orphan was first seen) survive a restart in
a JSON file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from hubsidecars.config import format_duration
from hubsidecars.files import replace_file
from hubsidecars.logs import log_event

STATE_VERSION = 1


@dataclass(frozen=True)
class Sample:
    """Counters of one container at one moment: CPU seconds used since it started, and bytes
    received plus sent (None when it has no network, e.g. --network none or host)."""

    at: float
    cpu: float
    net: int | None


@dataclass(frozen=True)
class Idleness:
    """What judge() found from a container's counters (the hub's servers get a
    culler.policy.Verdict instead: a rule, an age, a reason for the log)."""

    idle: bool
    reason: str
    keep: tuple[Sample, ...]  # the samples to remember for the next pass


def judge(
    history: tuple[Sample, ...] | list[Sample],
    now: Sample,
    timeout: float,
    cpu_threshold: float,
    net_threshold: int,
) -> Idleness:
    """Is the container idle, given its earlier samples (oldest first) and the current one?"""
    history = [s for s in history if s.at < now.at]
    if any(
        s.cpu > now.cpu or (s.net is not None and now.net is not None and s.net > now.net)
        for s in history
    ):
        history = []  # counters went back: the container restarted, observe it anew
    anchors = [s for s in history if s.at <= now.at - timeout]
    if not anchors:
        watched = now.at - history[0].at if history else 0.0
        return Idleness(
            False,
            f"observed {format_duration(round(watched))} of timeout {format_duration(timeout)}",
            (*history, now),
        )
    anchor = anchors[-1]
    cpu = now.cpu - anchor.cpu
    net = now.net - anchor.net if now.net is not None and anchor.net is not None else 0
    span = format_duration(round(now.at - anchor.at))
    keep = (anchor, *(s for s in history if s.at > anchor.at), now)
    moved = f"cpu +{cpu:.2f}s, net +{net}B in {span}"
    if cpu > cpu_threshold or net > net_threshold:
        return Idleness(False, f"{moved} (thresholds {cpu_threshold:g}s, {net_threshold}B)", keep)
    return Idleness(True, f"idle: {moved} (thresholds {cpu_threshold:g}s, {net_threshold}B)", keep)


def sample_from_stats(stats: dict, at: float) -> Sample | None:
    """A Sample from the engine's stats answer (GET /containers/{id}/stats?stream=false), or
    None when the engine could not read the container's counters: it then answers zeros with
    the zero time in "read", and zeros would look like a restart or like no movement at all."""
    cpu_ns = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    if not cpu_ns or str(stats.get("read", "")).startswith("0001-01-01"):
        return None
    networks = stats.get("networks")
    net = None
    if networks:
        net = sum(int(n.get("rx_bytes", 0)) + int(n.get("tx_bytes", 0)) for n in networks.values())
    return Sample(at, cpu_ns / 1e9, net)


@dataclass
class DockerState:
    """Samples per container ID, and when each orphan (container or service ID) was first
    seen orphaned."""

    samples: dict[str, tuple[Sample, ...]] = field(default_factory=dict)
    orphans: dict[str, float] = field(default_factory=dict)

    def prune(self, live_ids: set[str]) -> None:
        """Forget what is gone from the engine."""
        for table in (self.samples, self.orphans):
            for key in [k for k in table if k not in live_ids]:
                del table[key]

    def to_json(self) -> dict:
        return {
            "version": STATE_VERSION,
            "samples": {
                cid: [[s.at, s.cpu, s.net] for s in samples]
                for cid, samples in self.samples.items()
            },
            "orphans": self.orphans,
        }

    @classmethod
    def from_json(cls, data: dict) -> DockerState:
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("not a version 1 state")
        samples = {
            str(cid): tuple(
                Sample(float(at), float(cpu), None if net is None else int(net))
                for at, cpu, net in rows
            )
            for cid, rows in data.get("samples", {}).items()
        }
        orphans = {str(k): float(v) for k, v in data.get("orphans", {}).items()}
        return cls(samples, orphans)


class StateFile:
    """Loads and saves DockerState. A missing or unreadable file is one warning and a fresh
    start; a save is atomic (temporary file, fsync, rename), so a crash never leaves half a file."""

    def __init__(self, path: str | os.PathLike, logger: logging.Logger) -> None:
        self.path = Path(path)
        self.logger = logger

    def load(self) -> DockerState:
        try:
            return DockerState.from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            log_event(
                self.logger,
                "docker state file missing, starting afresh",
                logging.WARNING,
                path=str(self.path),
            )
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log_event(
                self.logger,
                "docker state file unreadable, starting afresh",
                logging.WARNING,
                path=str(self.path),
                error=type(exc).__name__,
            )
        return DockerState()

    def save(self, state: DockerState) -> None:
        replace_file(self.path, json.dumps(state.to_json()), 0o600)
