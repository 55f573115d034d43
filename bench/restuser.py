"""Benchmark hub-restuser against baselines measured in the same run.

1. Creation: 500 accounts through the API with 16 concurrent clients, against a bare
   sequential `useradd` loop (same argv the service uses) on the same kind of prefix root.
   Goal: ratio >= 0.9 (the service adds almost nothing to useradd itself).
2. Lookups of existing accounts with 16 concurrent connections (wrk, on the same 2 cores),
   the service with its default settings (one asyncio worker), against a bare gunicorn app
   with 4 sync workers answering a constant JSON body.
   Goals: >= 3000 requests/s, p99 <= 10 ms.
3. Slow clients: latency of an authorised lookup over TCP while 0, 50 and 500 connections
   sit idle or half-sent (opened before any token check, as any local process could).
   Goal: p99 under 50 ms with 500 open; the ratio to the 0-connection run is printed.

Run as root: python bench/restuser.py [--accounts 500] [--seconds 10]. Installs wrk (apt) if
it is missing. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# This file is named restuser.py: its own directory must not shadow the restuser package.
sys.path[0] = str(REPO)

from realparts.net import Endpoint, free_port, open_slow_connections  # noqa: E402
from realparts.process import ManagedProcess  # noqa: E402
from realparts.restuser import SKEL, UID_MAX, UID_MIN, RestuserProcess  # noqa: E402
from restuser.prefix import init_prefix  # noqa: E402
from restuser.useradd import UserAdd  # noqa: E402

CLIENTS = 16


def bare_useradd(useradd: UserAdd, names: list[str]) -> float:
    """Seconds for a plain sequential useradd loop, with the service's own argv."""
    started = time.perf_counter()
    for name in names:
        subprocess.run(useradd.create_argv(name), check=True, capture_output=True)
    return time.perf_counter() - started


def api_creation(endpoint: Endpoint, names: list[str]) -> float:
    """Seconds to create `names` through the API with CLIENTS concurrent clients."""

    def post(name: str) -> int:
        return endpoint.request("POST", f"/users/{name}").status

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = list(pool.map(post, names))
    elapsed = time.perf_counter() - started
    if statuses.count(201) != len(names):
        raise SystemExit(f"creation run failed: {sorted(set(statuses))}")
    return elapsed


def creation(scratch: Path, accounts: int, rounds: int) -> None:
    """Interleave rounds of the bare loop and of the API, so that both meet the same disk
    conditions (shadow fsyncs every file it rewrites, and disk latency drifts)."""
    init_prefix(scratch / "baseline")
    init_prefix(scratch / "service")
    useradd = UserAdd(skel=SKEL, uid_min=UID_MIN, uid_max=UID_MAX, prefix=scratch / "baseline")
    service = RestuserProcess(scratch / "service", Endpoint(unix=str(scratch / "create.sock")),
                              scratch / "create.log").start()  # fmt: skip
    per_round = accounts // rounds
    bare_total = api_total = 0.0
    round_ratios = []
    try:
        for index in range(rounds):
            names = [f"s{index}x{number:03d}" for number in range(per_round)]
            bare = bare_useradd(useradd, names)
            api = api_creation(service.endpoint, names)
            bare_total, api_total = bare_total + bare, api_total + api
            round_ratios.append(bare / api)
    finally:
        service.stop()
    created = per_round * rounds
    bare_rate, api_rate = created / bare_total, created / api_total
    print(f"creation ({created} accounts, {rounds} interleaved rounds): bare sequential useradd "
          f"{bare_rate:.1f} accounts/s; API with {CLIENTS} clients {api_rate:.1f} accounts/s; "
          f"ratio {api_rate / bare_rate:.2f} (goal >= 0.90; rounds "
          f"{min(round_ratios):.2f}..{max(round_ratios):.2f})")  # fmt: skip


def ensure_wrk() -> str:
    if not shutil.which("wrk"):
        print("installing wrk (apt-get install wrk)", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip
    return shutil.which("wrk")


def run_wrk(scratch: Path, url_path: str, port: int, token: str, seconds: int) -> dict:
    """Requests/s and latency percentiles from wrk; the token goes in a 0600 script file."""
    script = scratch / f"wrk-{port}.lua"
    script.write_text(
        textwrap.dedent(f"""\
        wrk.headers["Authorization"] = "Bearer {token}"
        done = function(summary, latency, requests)
          io.write(string.format("RESULT %d %d %d %.1f %.1f %.1f\\n",
            summary.requests, summary.errors.status + summary.errors.connect
              + summary.errors.read + summary.errors.write + summary.errors.timeout,
            summary.duration, latency:percentile(50), latency:percentile(99), latency.max))
        end
    """)
    )
    script.chmod(0o600)
    output = subprocess.run(
        [ensure_wrk(), "-t", "2", "-c", str(CLIENTS), "-d", f"{seconds}s", "-s", str(script),
         f"http://127.0.0.1:{port}{url_path}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    requests, errors, duration_us, p50, p99, worst = (
        re.search(r"RESULT (.*)", output).group(1).split()
    )
    return {
        "rps": int(requests) / (int(duration_us) / 1e6),
        "errors": int(errors),
        "p50_ms": float(p50) / 1000,
        "p99_ms": float(p99) / 1000,
        "max_ms": float(worst) / 1000,
    }


BARE_APP = """
import json
BODY = json.dumps({"name": "student000", "uid": 20000, "gid": 20000, "home": "/home/student000",
                   "shell": "/bin/bash", "created": False}).encode()
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]
"""


def bare_gunicorn(scratch: Path, port: int) -> ManagedProcess:
    (scratch / "bare_app.py").write_text(BARE_APP)
    process = ManagedProcess(
        [sys.executable, "-m", "gunicorn", "--workers", "4", "--bind", f"127.0.0.1:{port}",
         "--no-control-socket", "--chdir", str(scratch), "bare_app:app"],
        scratch / "bare.log",
    )  # fmt: skip
    process.start(
        lambda: Endpoint(port=port).request("GET", "/").status == 200, 20, "bare gunicorn"
    )
    return process


def lookups(scratch: Path, seconds: int, rounds: int) -> None:
    """restuser lookups of an existing account vs a bare gunicorn, alternating."""
    token = os.urandom(16).hex()
    token_file = scratch / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    port, bare_port = free_port(), free_port()
    service = RestuserProcess(scratch / "service", Endpoint(port=port), scratch / "lookup.log",
                              ["--token-file", str(token_file)],
                              ).start(headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    bare = bare_gunicorn(scratch, bare_port)
    ours, theirs = [], []
    try:
        # Let the creation phase's writes reach the disk, and warm both servers up, so that
        # the first measured run does not pay for either.
        os.sync()
        run_wrk(scratch, "/users/s0x001", port, token, 2)
        run_wrk(scratch, "/", bare_port, token, 2)
        for _ in range(rounds):
            ours.append(run_wrk(scratch, "/users/s0x001", port, token, seconds))
            theirs.append(run_wrk(scratch, "/", bare_port, token, seconds))
    finally:
        service.stop()
        bare.stop()
    for label, runs in (
        ("lookups", ours),
        ("lookups baseline (bare gunicorn, constant JSON)", theirs),
    ):
        best = max(runs, key=lambda run: run["rps"])
        print(f"{label}: " + "; ".join(
            f"{run['rps']:.0f} requests/s, p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, "
            f"errors {run['errors']}" for run in runs) + f" (best {best['rps']:.0f}/s)")  # fmt: skip
    ratio = sum(run["rps"] for run in ours) / sum(run["rps"] for run in theirs)
    print(f"lookups ratio to bare gunicorn {ratio:.2f}; goals: >= 3000 requests/s, p99 <= 10 ms")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def slow_clients(scratch: Path, requests: int, counts: tuple[int, ...] = (0, 50, 500)) -> None:
    """Latency of authorised lookups, one at a time, with `count` slow connections open."""
    token = os.urandom(16).hex()
    token_file = scratch / "slow-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    headers = {"Authorization": f"Bearer {token}"}
    service = RestuserProcess(scratch / "service", Endpoint(port=free_port()),
                              scratch / "slow.log",
                              ["--token-file", str(token_file)],
                              ).start(headers=headers)  # fmt: skip
    figures = {}
    try:
        for count in counts:
            slow = open_slow_connections(service.endpoint, count)
            try:
                latencies = []
                for _ in range(requests):
                    started = time.perf_counter()
                    reply = service.endpoint.request("GET", "/users/s0x001", headers, timeout=130)
                    latencies.append((time.perf_counter() - started) * 1000)
                    if reply.status != 200:
                        raise SystemExit(f"slow-clients run: lookup answered {reply.status}")
            finally:
                for sock in slow:
                    sock.close()
            figures[count] = (percentile(latencies, 0.5), percentile(latencies, 0.99),
                              max(latencies))  # fmt: skip
    finally:
        service.stop()
    base_p99 = figures[counts[0]][1]
    print("slow clients (authorised lookups over TCP, one at a time, "
          f"{requests} per run): " + "; ".join(
              f"{count} open: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.2f} ms "
              f"(p99 x{p99 / base_p99:.1f})" for count, (p50, p99, worst) in figures.items())
          + f"; goal p99 < 50 ms with {counts[-1]} open")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per comparison")
    parser.add_argument("--seconds", type=int, default=5, help="length of each lookup run")
    parser.add_argument("--slow-requests", type=int, default=300,
                        help="lookups measured per slow-clients run")
    parser.add_argument("--keep", metavar="DIR", help="keep the service logs in DIR")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (useradd --prefix)")
    with tempfile.TemporaryDirectory(prefix="restuser-bench-") as tmp:
        creation(Path(tmp), args.accounts, args.rounds)
        lookups(Path(tmp), args.seconds, rounds=3)
        slow_clients(Path(tmp), args.slow_requests)
        if args.keep:
            for log in Path(tmp).glob("*.log"):
                shutil.copy(log, args.keep)


if __name__ == "__main__":
    main()
