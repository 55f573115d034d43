"""One real JupyterHub with many users and running servers, some pinned active, built once and
restored from a database snapshot for each benchmark run."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from realparts.hub import HubService, RealHub

BENCH = "bench"
CULLER = "culler"
# What the bench itself needs: create users, start servers, pin their activity, read them.
BENCH_SCOPES = ["admin:users", "admin:servers", "users:activity"]
# Both cullers run with this one token: idle-culler's documented scopes, plus tokens for
# hub-culler's kernel probe (a short-lived token of each checked server's user).
CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers",
                 "tokens"]  # fmt: skip
# The hub refuses activity more than an hour ahead; pinned servers stay active for 55 minutes.
PIN_AHEAD = timedelta(minutes=55)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class Population:
    """Which users exist, which have a running server, which of those are kept active."""

    users: list[str]
    running: list[str]
    active: list[str]

    @property
    def idle(self) -> list[str]:
        active = set(self.active)
        return [name for name in self.running if name not in active]

    @classmethod
    def spread(cls, users: int, running: int, idle: int) -> Population:
        """Running servers spread evenly over the users, the active ones drawn at random
        (fixed seed), so that neither culler meets them in one block."""
        if not 0 <= idle <= running <= users:
            raise ValueError("need 0 <= idle <= servers <= users")
        names = [f"u{number:05d}" for number in range(users)]
        step = users / running if running else 1
        with_server = [names[int(index * step)] for index in range(running)]
        active = sorted(random.Random(6).sample(with_server, running - idle))
        return cls(names, with_server, active)


class HubState:
    """The hub, its snapshot and the population; `stop_seconds` is what each stop takes."""

    def __init__(self, workdir: Path, population: Population, stop_seconds: float) -> None:
        self.population = population
        self.snapshot = workdir / "snapshot.sqlite"
        delays = {name: stop_seconds for name in population.running}
        # last_activity_interval: the hub must not copy the proxy's route activity (routes are
        # re-added at every restart) into last_activity while a run is going on.
        config = f"""
c.ResponderSpawner.stop_delays = {delays!r}
c.JupyterHub.last_activity_interval = 24 * 3600
"""
        self.hub = RealHub(workdir, [HubService(BENCH, BENCH_SCOPES), HubService(CULLER,
                           CULLER_SCOPES)], config, spawner="responder",
                           cleanup_servers=False)  # fmt: skip
        self.idle_since: datetime | None = None  # the newest activity of an idle server

    def build(self) -> float:
        """Create users, start servers, pin the active ones, snapshot the database; seconds."""
        started = time.monotonic()
        self.hub.start()
        self.hub.create_users(self.population.users, BENCH)
        # Idle servers first: the active ones' starts then count towards the idle timeout.
        self.hub.start_servers(self.population.idle, BENCH)
        self.hub.start_servers(self.population.active, BENCH)
        self._pin(self.population.active)
        self.idle_since = max(
            parse_time(user["servers"][""]["last_activity"])
            for user in self.hub.list_users(BENCH, state="ready")
            if user["name"] in set(self.population.idle)
        )
        self.hub.stop()
        self.hub.save_db(self.snapshot)
        return time.monotonic() - started

    def _pin(self, names: list[str]) -> None:
        stamp = (datetime.now(UTC) + PIN_AHEAD).isoformat().replace("+00:00", "Z")
        body = {"last_activity": stamp, "servers": {"": {"last_activity": stamp}}}

        def pin(name: str) -> None:
            reply = self.hub.api("POST", f"/users/{name}/activity", BENCH, json=body)
            if reply.status_code != 200:
                raise RuntimeError(f"pinning {name}: {reply.status_code} {reply.text[:300]}")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(pin, names))

    def restore(self, timeout: float) -> float:
        """Start the hub on the snapshot, wait until every server is ready again and the idle
        ones have been idle for `timeout` (+2 s); seconds the restart took."""
        started = time.monotonic()
        self.hub.restore_db(self.snapshot)
        self.hub.start()
        self.hub.wait_ready(self.population.running, BENCH)
        elapsed = time.monotonic() - started
        wait = (
            self.idle_since + timedelta(seconds=timeout + 2) - datetime.now(UTC)
        ).total_seconds()
        if wait > 0:
            print(f"  waiting {wait:.0f} s until the idle servers are {timeout} s idle", flush=True)
            time.sleep(wait)
        self.check_active_pinned()
        return elapsed

    def check_active_pinned(self) -> None:
        """The restarted hub still has the same activity: active servers in the future, idle
        ones before idle_since."""
        now = datetime.now(UTC)
        active = set(self.population.active)
        for user in self.hub.list_users(BENCH, state="ready"):
            seen = parse_time(user["servers"][""]["last_activity"])
            if user["name"] in active and seen <= now:
                raise RuntimeError(f"{user['name']} should be pinned active, last activity {seen}")
            if user["name"] not in active and seen > self.idle_since:
                raise RuntimeError(f"{user['name']} should be idle, last activity {seen}")

    def running_servers(self) -> set[str]:
        """Names whose default server the hub has (ready or still stopping)."""
        return {user["name"] for user in self.hub.list_users(BENCH)
                if "" in user.get("servers", {})}  # fmt: skip

    def stop(self) -> None:
        self.hub.stop()

    def close(self) -> None:
        self.hub.close()
