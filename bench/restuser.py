"""Benchmark hub-restuser against baselines measured in the same run.

1. Creation: 500 accounts through the API with 16 concurrent clients, against a bare
   sequential `useradd` loop (same argv the service uses) on the same kind of prefix root.
   Goal: ratio >= 0.9 (the service adds almost nothing to useradd itself).
2. Lookups of existing accounts with 16 concurrent connections (wrk, on the same 2 cores),
   against a bare gunicorn app with the same workers answering a constant JSON body.
   Goals: >= 3000 requests/s, p99 <= 10 ms.

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
sys.path.insert(0, str(REPO))

from restuser.prefix import init_prefix  # noqa: E402
from restuser.useradd import UserAdd  # noqa: E402
from tests.realparts.net import Endpoint, free_port  # noqa: E402
from tests.realparts.restuser import SKEL, UID_MAX, UID_MIN, RestuserProcess  # noqa: E402

CLIENTS = 16


def baseline_useradd(root: Path, names: list[str]) -> float:
    """Seconds for a plain sequential useradd loop, with the service's own argv."""
    useradd = UserAdd(skel=SKEL, uid_min=UID_MIN, uid_max=UID_MAX, prefix=root)
    started = time.perf_counter()
    for name in names:
        subprocess.run(useradd.create_argv(name), check=True, capture_output=True)
    return time.perf_counter() - started


def service_creation(scratch: Path, root: Path, names: list[str]) -> float:
    service = RestuserProcess(root, Endpoint(unix=str(scratch / "create.sock")),
                              scratch / "create.log", ["--workers", "4"]).start()  # fmt: skip
    try:
        def post(name: str) -> int:
            return service.endpoint.request("POST", f"/users/{name}").status

        started = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            statuses = list(pool.map(post, names))
        elapsed = time.perf_counter() - started
    finally:
        service.stop()
    if statuses.count(201) != len(names):
        raise SystemExit(f"creation run failed: {sorted(set(statuses))}")
    return elapsed


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
    script.write_text(textwrap.dedent(f"""\
        wrk.headers["Authorization"] = "Bearer {token}"
        done = function(summary, latency, requests)
          io.write(string.format("RESULT %d %d %d %.1f %.1f %.1f\\n",
            summary.requests, summary.errors.status + summary.errors.connect
              + summary.errors.read + summary.errors.write + summary.errors.timeout,
            summary.duration, latency:percentile(50), latency:percentile(99), latency.max))
        end
    """))
    script.chmod(0o600)
    output = subprocess.run(
        [ensure_wrk(), "-t", "2", "-c", str(CLIENTS), "-d", f"{seconds}s", "-s", str(script),
         f"http://127.0.0.1:{port}{url_path}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    requests, errors, duration_us, p50, p99, worst = re.search(r"RESULT (.*)", output).group(1).split()
    return {
        "rps": int(requests) / (int(duration_us) / 1e6),
        "errors": int(errors),
        "p50_ms": float(p50) / 1000,
        "p99_ms": float(p99) / 1000,
        "max_ms": float(worst) / 1000,
    }


BARE_APP = '''
import json
BODY = json.dumps({"name": "student000", "uid": 20000, "gid": 20000, "home": "/home/student000",
                   "shell": "/bin/bash", "created": False}).encode()
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]
'''


def bare_gunicorn(scratch: Path, port: int) -> subprocess.Popen:
    (scratch / "bare_app.py").write_text(BARE_APP)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "4", "--bind", f"127.0.0.1:{port}",
         "--control-socket-disable", "--chdir", str(scratch), "bare_app:app"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if Endpoint(port=port).request("GET", "/").status == 200:
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("bare gunicorn did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=10, help="length of each lookup run")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (useradd --prefix)")
    names = [f"student{index:03d}" for index in range(args.accounts)]

    with tempfile.TemporaryDirectory(prefix="restuser-bench-") as tmp:
        scratch = Path(tmp)
        init_prefix(scratch / "baseline")
        init_prefix(scratch / "service")
        base_seconds = baseline_useradd(scratch / "baseline", names)
        service_seconds = service_creation(scratch, scratch / "service", names)
        base_rate, service_rate = len(names) / base_seconds, len(names) / service_seconds
        print(f"creation: bare sequential useradd {base_rate:.1f} accounts/s; "
              f"API with {CLIENTS} clients {service_rate:.1f} accounts/s; "
              f"ratio {service_rate / base_rate:.2f} (goal >= 0.90)")  # fmt: skip

        token = os.urandom(16).hex()
        token_file = scratch / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        port = free_port()
        service = RestuserProcess(scratch / "service", Endpoint(port=port), scratch / "lookup.log",
                                  ["--workers", "4", "--token-file", str(token_file)],
                                  ).start(headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        try:
            lookups = run_wrk(scratch, "/users/student123", port, token, args.seconds)
        finally:
            service.stop()
        bare_port = free_port()
        bare = bare_gunicorn(scratch, bare_port)
        try:
            baseline = run_wrk(scratch, "/", bare_port, token, args.seconds)
        finally:
            bare.kill()
            bare.wait()
        print(f"lookups: {lookups['rps']:.0f} requests/s, p50 {lookups['p50_ms']:.2f} ms, "
              f"p99 {lookups['p99_ms']:.2f} ms, max {lookups['max_ms']:.1f} ms, "
              f"errors {lookups['errors']} (goals >= 3000/s, p99 <= 10 ms)")  # fmt: skip
        print(f"lookups baseline (bare gunicorn, constant JSON): {baseline['rps']:.0f} requests/s, "
              f"p50 {baseline['p50_ms']:.2f} ms, p99 {baseline['p99_ms']:.2f} ms; "
              f"ratio {lookups['rps'] / baseline['rps']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
