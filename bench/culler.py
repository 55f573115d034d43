"""Benchmark hub-culler against jupyterhub-idle-culler 2.0.0 on one real JupyterHub.

The hub (JupyterHub 6 from .venv, configurable-http-proxy, the shared responder as every
user's server) gets --users users, --servers running servers, of which --idle are idle and the
others pinned active (their last_activity set 55 minutes ahead through the activity API). Each
stop takes --stop-seconds (the spawner sleeps). The state is built once, the hub's sqlite
database saved, and restored before every run, so each culler meets identical state.

One pass of each culler, with the same --concurrency and --timeout, one after the other:
- jupyterhub-idle-culler has no --once: it runs with --cull-every 3600 and is stopped once the
  hub has answered the stop of every idle server;
- hub-culler --once, with its defaults (kernel probe on: the responder answers api/kernels with
  []), and again with --no-check-kernels.
Both reach the hub through a counting reverse proxy in this process, in front of the proxy's
public port (--url http://127.0.0.1:PORT/hub/api): it counts every request (hub API and users'
servers) and times the answers.

Pass time = from the culler's process start until the hub answered the last idle server's stop
(DELETE 204, timed at the counting proxy; a 202 is followed by polling the hub until the server
is gone). For hub-culler the time until its own exit is printed too. Peak RSS = VmHWM of the
culler process (polled from /proc every 50 ms); CPU = its user+system time (wait4). After each
run the bench checks that exactly the idle servers were stopped and the active ones still run.

Run as root: python bench/culler.py [--users 2000 --servers 500 --idle 300] [--concurrency 10]
[--repeat 1]; quick: --users 200 --servers 50 --idle 30. A full run took 8.5 minutes here
(build 45 s, idle-culler's pass 310 s, hub restarts ~5 s each); the quick one 1.5 minutes.
--keep DIR keeps the logs, each run's requests (TSV) and hub-culler's status files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this file's directory comes first on the path, and this file (culler.py)
# would shadow the culler package there.
if sys.path[0] == str(Path(__file__).resolve().parent):
    sys.path[0] = str(REPO)

from bench.counting_proxy import CountingProxy, Exchange  # noqa: E402
from bench.hub_state import CULLER, HubState, Population  # noqa: E402
from realparts.net import free_port  # noqa: E402

VENV_BIN = REPO / ".venv" / "bin"
STOP_PATH = re.compile(r"^/hub/api/users/([^/?]+)/(?:server|servers/)/?(?:\?.*)?$")


@dataclass(frozen=True)
class Culler:
    label: str
    argv: list[str]
    once: bool  # exits by itself after one pass


def cullers(url: str, timeout: int, concurrency: int, scratch: Path, chosen: list[str]):
    common = ["--url", url, "--timeout", str(timeout), "--concurrency", str(concurrency)]
    status = str(scratch / "hub-culler-status.json")
    table = {
        "idle": Culler("jupyterhub-idle-culler 2.0.0",
                       [str(VENV_BIN / "jupyterhub-idle-culler"), *common, "--cull-every",
                        "3600"], once=False),
        "hub": Culler("hub-culler --once",
                      [str(VENV_BIN / "hub-culler"), "--once", *common, "--status-file", status],
                      once=True),
        "hub-nocheck": Culler("hub-culler --once --no-check-kernels",
                              [str(VENV_BIN / "hub-culler"), "--once", *common, "--status-file",
                               status, "--no-check-kernels"], once=True),
    }  # fmt: skip
    return [table[key] for key in chosen]


class PeakRss:
    """Polls VmHWM (the process's own high-water RSS) until the process is gone."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.path = Path(f"/proc/{pid}/status")
        self.interval = interval
        self.kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                text = self.path.read_text()
            except OSError:
                return
            match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
            if match:
                self.kib = max(self.kib, int(match.group(1)))
            self._stop.wait(self.interval)

    def finish(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.kib


@dataclass
class Outcome:
    label: str
    first_stop_seconds: float | None  # start-up, listing and deciding until the first stop
    stops_in_flight: int  # the most stop requests the hub had at once
    pass_seconds: float
    exit_seconds: float | None
    culled: int
    kept: int
    wrong: list[str]
    peak_rss_mib: float
    cpu_seconds: float
    hub_requests: dict[str, int]
    server_requests: int
    other_requests: int
    load: tuple[float, float, float]
    exit_code: int
    status: dict = field(default_factory=dict)

    @property
    def hub_total(self) -> int:
        return sum(self.hub_requests.values())


def stops_answered(exchanges: list[Exchange], names: set[str]) -> dict[str, Exchange]:
    """The first successful stop request per name among `names`."""
    answered = {}
    for exchange in exchanges:
        match = STOP_PATH.match(exchange.path)
        if exchange.method == "DELETE" and match and 200 <= exchange.status < 300:
            name = match.group(1)
            if name in names and name not in answered:
                answered[name] = exchange
    return answered


def most_in_flight(exchanges: list[Exchange]) -> int:
    """The most of `exchanges` that were under way at the same moment."""
    events = sorted([(ex.arrived, 1) for ex in exchanges] + [(ex.answered, -1) for ex in exchanges])
    most = current = 0
    for _, change in events:
        current += change
        most = max(most, current)
    return most


def run_one(culler: Culler, state: HubState, proxy: CountingProxy, scratch: Path, token: str,
            deadline_seconds: float) -> Outcome:  # fmt: skip
    idle = set(state.population.idle)
    proxy.take()
    status_path = scratch / "hub-culler-status.json"
    status_path.unlink(missing_ok=True)
    log_path = scratch / f"{culler.label.split()[0]}.log"
    load = os.getloadavg()
    with open(log_path, "ab") as log:
        log.write(f"\n==== {' '.join(culler.argv)}\n".encode())
        log.flush()
        started = time.monotonic()
        process = subprocess.Popen(
            culler.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "JUPYTERHUB_API_TOKEN": token}, cwd=scratch,
            start_new_session=True,
        )  # fmt: skip
    rss = PeakRss(process.pid)
    pass_end = exited = None
    exit_code, cpu = -1, 0.0
    stopping: set[str] = set()  # answered 202: the hub still stops them
    try:
        while True:
            if exited is None:
                pid, wait_status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    exited = time.monotonic()
                    exit_code = os.waitstatus_to_exitcode(wait_status)
                    process.returncode = exit_code
                    cpu = usage.ru_utime + usage.ru_stime
            if pass_end is None:
                answered = stops_answered(proxy.snapshot(), idle)
                if set(answered) == idle:
                    stopping = {name for name, ex in answered.items() if ex.status == 202}
                    if not stopping:
                        pass_end = max(ex.answered for ex in answered.values())
                    elif not stopping & state.running_servers():
                        pass_end = time.monotonic()
            if pass_end is not None and (exited is not None or not culler.once):
                break
            if exited is not None and pass_end is None:
                # The culler ended without stopping every idle server: count what it did.
                pass_end = exited
                break
            if time.monotonic() - started > deadline_seconds:
                raise RuntimeError(f"{culler.label}: no complete pass within {deadline_seconds} s "
                                   f"(see {log_path})")  # fmt: skip
            time.sleep(0.1)
    finally:
        if exited is None:
            os.killpg(process.pid, signal.SIGTERM)
            _, wait_status, usage = os.wait4(process.pid, 0)
            exit_code = os.waitstatus_to_exitcode(wait_status)
            process.returncode = exit_code
            cpu = usage.ru_utime + usage.ru_stime
        peak = rss.finish()
    exchanges = proxy.take()
    _write_requests(scratch / f"requests-{len(list(scratch.glob('requests-*')))}.tsv", culler,
                    started, exchanges)  # fmt: skip
    first_stop = min((ex.arrived for ex in stops_answered(exchanges, idle).values()), default=None)
    run_index = len(list(scratch.glob("requests-*.tsv"))) - 1
    if status_path.exists():
        (scratch / f"status-{run_index}.json").write_bytes(status_path.read_bytes())
    remaining = state.running_servers()
    running, active = set(state.population.running), set(state.population.active)
    culled = running - remaining
    wrong = sorted((culled ^ idle) | (active - remaining))
    hub_requests: dict[str, int] = {}
    for exchange in exchanges:
        if exchange.kind == "hub":
            hub_requests[exchange.method] = hub_requests.get(exchange.method, 0) + 1
    status = json.loads(status_path.read_text()) if status_path.exists() else {}
    return Outcome(
        label=culler.label, pass_seconds=pass_end - started,
        first_stop_seconds=(first_stop - started) if first_stop is not None else None,
        stops_in_flight=most_in_flight([ex for ex in exchanges if STOP_PATH.match(ex.path)]),
        exit_seconds=(exited - started) if culler.once and exited else None,
        culled=len(culled), kept=len(remaining & running), wrong=wrong,
        peak_rss_mib=peak / 1024, cpu_seconds=cpu, hub_requests=hub_requests,
        server_requests=sum(ex.kind == "server" for ex in exchanges),
        other_requests=sum(ex.kind == "other" for ex in exchanges), load=load,
        exit_code=exit_code, status=status,
    )  # fmt: skip


def _write_requests(path: Path, culler: Culler, started: float, exchanges: list[Exchange]):
    """Every request of one run, seconds from the culler's start (kept with --keep)."""
    lines = [f"# {culler.label}", "arrived\tanswered\tmethod\tstatus\tpath"]
    lines += [f"{ex.arrived - started:.3f}\t{ex.answered - started:.3f}\t{ex.method}\t"
              f"{ex.status}\t{ex.path}" for ex in exchanges]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def print_table(outcomes: list[Outcome]) -> None:
    """One column per run, one row per figure."""

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    def hub_requests(out: Outcome) -> str:
        methods = " ".join(f"{n} {method}" for method, n in sorted(out.hub_requests.items()))
        return f"{out.hub_total} ({methods})"

    rows = [
        ("", lambda out: out.label),
        ("pass wall time", lambda out: seconds(out.pass_seconds)),
        ("  until its first stop", lambda out: seconds(out.first_stop_seconds)),
        ("  until it exited (--once)", lambda out: seconds(out.exit_seconds)),
        ("servers culled", lambda out: str(out.culled)),
        ("servers kept running", lambda out: str(out.kept)),
        ("culled/kept against the plan", lambda out: str(len(out.wrong))),
        ("most stops under way at once", lambda out: str(out.stops_in_flight)),
        ("peak RSS (VmHWM)", lambda out: f"{out.peak_rss_mib:.1f} MiB"),
        ("CPU time (user+sys)", lambda out: f"{out.cpu_seconds:.2f} s"),
        ("hub API requests", hub_requests),
        ("requests to users' servers", lambda out: str(out.server_requests)),
        ("other requests", lambda out: str(out.other_requests)),
        ("exit code", lambda out: str(out.exit_code)),
        ("load average (1 min) at start", lambda out: f"{out.load[0]:.2f}"),
    ]
    cells = [[label] + [figure(out) for out in outcomes] for label, figure in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(cells[0]))]
    for row in cells:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    for out in outcomes:
        if out.wrong:
            print(f"{out.label}: against the plan (first 5): {out.wrong[:5]}")
        if out.status:
            counts = out.status.get("counts", out.status)
            print(f"{out.label} status file counts: {json.dumps(counts, sort_keys=True)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--servers", type=int, default=500, help="running servers")
    parser.add_argument("--idle", type=int, default=300, help="of the running servers, idle")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument(
        "--timeout", type=int, default=30,
        help="the cullers' --timeout (it changes no pass's work; shorter, less waiting for the "
        "idle servers to become idle after the build)",
    )  # fmt: skip
    parser.add_argument("--stop-seconds", type=float, default=1.0, help="each stop takes this")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each culler")
    parser.add_argument(
        "--cullers",
        default="idle,hub,hub-nocheck",
        help="which to run, in order: idle, hub, hub-nocheck",
    )
    parser.add_argument(
        "--keep", metavar="DIR", help="keep logs, the hub's log and each run's requests in DIR"
    )
    args = parser.parse_args()
    chosen = [name.strip() for name in args.cullers.split(",") if name.strip()]
    population = Population.spread(args.users, args.servers, args.idle)
    if "hub" in ",".join(chosen) and not (VENV_BIN / "hub-culler").exists():
        raise SystemExit(f"{VENV_BIN / 'hub-culler'} is missing (pip install -e . in the venv)")
    with tempfile.TemporaryDirectory(prefix="culler-bench-") as tmp:
        scratch = Path(tmp)
        (scratch / "hub").mkdir()
        state = HubState(scratch / "hub", population, args.stop_seconds)
        proxy = None
        outcomes: list[Outcome] = []
        try:
            print(f"building: {args.users} users, {args.servers} running servers "
                  f"({args.idle} idle), each stop {args.stop_seconds} s", flush=True)  # fmt: skip
            built = state.build()
            print(f"  built in {built:.0f} s", flush=True)
            proxy = CountingProxy(free_port(), state.hub.proxy_port).start()
            url = f"http://127.0.0.1:{proxy.port}/hub/api"
            token = state.hub.token(CULLER)
            plan = cullers(url, args.timeout, args.concurrency, scratch, chosen)
            deadline = args.idle * args.stop_seconds * 2 + 180
            for round_number in range(args.repeat):
                for culler in plan:
                    restarted = state.restore(args.timeout)
                    print(f"  run {round_number + 1}: {culler.label} (hub restarted in "
                          f"{restarted:.0f} s)", flush=True)  # fmt: skip
                    outcomes.append(run_one(culler, state, proxy, scratch, token, deadline))
                    state.stop()
        finally:
            if proxy is not None:
                proxy.close()
            state.close()
            if args.keep:
                keep = Path(args.keep)
                keep.mkdir(parents=True, exist_ok=True)
                kept = [*scratch.glob("*.log"), *scratch.glob("requests-*.tsv"),
                        *scratch.glob("status-*.json"),
                        *scratch.glob("hub/*.log")]  # fmt: skip
                for log in kept:
                    (keep / log.name).write_bytes(log.read_bytes())
        report(args, outcomes)


def report(args, outcomes: list[Outcome]) -> None:
    print()
    print(
        f"culler pass: {args.users} users, {args.servers} running servers, {args.idle} idle, "
        f"stop {args.stop_seconds} s each; --concurrency {args.concurrency} --timeout "
        f"{args.timeout}; JupyterHub 6 + configurable-http-proxy; {os.cpu_count()} cores shared"
    )
    print(
        "pass wall time = culler process start -> the hub answered the last idle server's stop "
        "(timed at a counting proxy in front of the hub's proxy, which also counts the "
        "requests); peak RSS = VmHWM of the culler process, polled every 50 ms"
    )
    print_table(outcomes)
    by_label: dict[str, list[Outcome]] = {}
    for out in outcomes:
        by_label.setdefault(out.label, []).append(out)
    anchor = by_label.get("jupyterhub-idle-culler 2.0.0")
    for label, runs in by_label.items():
        if anchor is None or runs is anchor:
            continue
        ours = statistics.median(out.pass_seconds for out in runs)
        theirs = statistics.median(out.pass_seconds for out in anchor)
        equal = all(out.culled == anchor[0].culled == args.idle and not out.wrong
                    for out in runs + anchor)  # fmt: skip
        print(f"ratio {label} / jupyterhub-idle-culler pass wall time: {ours / theirs:.2f} "
              f"({ours:.1f} s / {theirs:.1f} s, median of {len(runs)}; goal <= 0.5); servers "
              f"culled equal and = {args.idle}: {'yes' if equal else 'NO'}")  # fmt: skip
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
