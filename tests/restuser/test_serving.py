"""The real service under hostile and unlucky clients: slow and half-open connections, server-level
errors, creations waiting on the lock, Ctrl-C in the middle of creations, every listener checked."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from realparts.accountdb import accounts
from realparts.net import Endpoint, free_port, open_slow_connections
from realparts.restuser import SKEL, UID_MAX, UID_MIN, restuser_command


def timed(endpoint: Endpoint, method: str, path: str, headers=None):
    started = time.monotonic()
    reply = endpoint.request(method, path, headers, timeout=10)
    return reply, time.monotonic() - started


def bearer(token_file) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_file.read_text().strip()}"}


def test_hundreds_of_slow_connections_do_not_stall_tcp(start_restuser, token_file):
    """Over TCP the connections arrive before any token check: any local process can open
    them. With 4 sync workers, 4 were enough to stall every request for 120 s."""
    service = start_restuser(tcp=True, extra_args=["--token-file", str(token_file)],
                             headers=bearer(token_file))  # fmt: skip
    endpoint = service.endpoint
    assert endpoint.request("POST", "/users/alice", bearer(token_file)).status == 201
    slow = open_slow_connections(endpoint, 400)
    try:
        for path in ("/healthz", "/users/alice"):
            for _ in range(5):
                reply, seconds = timed(endpoint, "GET", path, bearer(token_file))
                assert reply.status == 200 and seconds < 5.0, (path, seconds)  # the stall was 120 s
        reply, seconds = timed(endpoint, "POST", "/users/bob", bearer(token_file))
        assert reply.status == 201 and seconds < 5.0
    finally:
        for sock in slow:
            sock.close()
    assert "Traceback" not in service.log()


def test_slow_connections_on_the_unix_socket(start_restuser):
    service = start_restuser()
    slow = open_slow_connections(service.endpoint, 200)
    try:
        reply, seconds = timed(service.endpoint, "GET", "/healthz")
        assert reply.status == 200 and seconds < 5.0
    finally:
        for sock in slow:
            sock.close()


def hold_account_lock(prefix_root):
    """Take the service's account lock from outside, as a long creation would hold it."""
    path = prefix_root / "var/lib/hub-sidecars/restuser/accounts.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_lookups_and_health_do_not_queue_behind_waiting_creations(start_restuser, prefix_root):
    service = start_restuser(extra_args=["--workers", "2", "--threads", "4", "--lock-timeout", "20"])
    endpoint = service.endpoint
    assert endpoint.request("POST", "/users/alice").status == 201
    fd = hold_account_lock(prefix_root)
    pool = ThreadPoolExecutor(16)
    try:
        waiting = [pool.submit(endpoint.request, "POST", f"/users/wait{n}", None, None, 30)
                   for n in range(16)]  # fmt: skip
        time.sleep(1.0)  # every worker thread is now blocked on the lock
        assert not any(future.done() for future in waiting)
        for path in ("/healthz", "/users/alice", "/openapi.json"):
            reply, seconds = timed(endpoint, "GET", path)
            assert reply.status == 200 and seconds < 5.0, (path, seconds)  # queued: 20 s
    finally:
        os.close(fd)
    assert sorted(future.result().status for future in waiting) == [201] * 16
    pool.shutdown()


def test_threads_share_a_store_safely(start_restuser, prefix_root):
    """Many creation threads per worker share one store and one lock object."""
    service = start_restuser(extra_args=["--workers", "2", "--threads", "16", "--lock-timeout", "120"])
    names = [f"t{n:02d}" for n in range(40)] * 2
    with ThreadPoolExecutor(len(names)) as pool:
        statuses = list(pool.map(lambda n: service.endpoint.request("POST", f"/users/{n}").status,
                                 names))  # fmt: skip
    assert statuses.count(201) == 40 and statuses.count(200) == 40
    assert len(accounts(prefix_root, UID_MIN, UID_MAX)) == 40
    # The lock is free afterwards: a later creation does not answer 503.
    assert service.endpoint.request("POST", "/users/after").status == 201
    assert "AssertionError" not in service.log() and "level=error" not in service.log()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_lets_creations_in_flight_finish(start_restuser, prefix_root, sig):
    """Ctrl-C in the demo's terminal sends SIGINT to the whole process group (gunicorn's
    master, its workers and any useradd running): it must stop as gracefully as SIGTERM."""
    service = start_restuser(extra_args=["--lock-timeout", "20"])
    fd = hold_account_lock(prefix_root)
    pool = ThreadPoolExecutor(6)
    try:
        waiting = [pool.submit(service.endpoint.request, "POST", f"/users/inflight{n}", None,
                               None, 30) for n in range(6)]  # fmt: skip
        time.sleep(3.0)  # every request accepted and waiting for the lock
        os.killpg(service.process.process.pid, sig)
        time.sleep(0.5)
    finally:
        os.close(fd)
    assert [future.result().status for future in waiting] == [201] * 6
    assert service.process.process.wait(timeout=30) == 0
    created = accounts(prefix_root, UID_MIN, UID_MAX)
    assert sorted(created) == sorted(f"inflight{n}" for n in range(6))
    pending = prefix_root / "var/lib/hub-sidecars/restuser/pending"
    assert list(pending.iterdir()) == []
    for uid, gid, home in created.values():
        landed = (prefix_root / home.lstrip("/") / ".jupyter/jupyter_server_config.json").lstat()
        assert (landed.st_uid, landed.st_gid) == (uid, gid)
    pool.shutdown()


RAW_REQUESTS = {
    "bad request line": b"THIS IS NOT HTTP\r\n\r\n",
    "uri too long": b"GET /users/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header too large": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n",
    "too many headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-H%d: v\r\n" % n for n in range(200)) + b"\r\n",
    "bad header": b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(RAW_REQUESTS))
def test_errors_from_the_http_server_itself_are_json(start_restuser, case):
    service = start_restuser()
    sock = open_slow_connections(service.endpoint, 1)[0]
    try:
        sock.settimeout(10)
        sock.sendall(RAW_REQUESTS[case])
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    assert 400 <= status < 500, head
    assert b"content-type: application/json" in head.lower(), head
    error = json.loads(body)
    assert set(error) == {"title", "description"} and error["title"].startswith(str(status))


def head_of(reply) -> dict[str, str]:
    return {key.lower(): value for key, value in reply.headers.items()}


def test_head_is_answered_wherever_get_is(start_restuser):
    endpoint = start_restuser().endpoint
    assert endpoint.request("POST", "/users/alice").status == 201
    for path in ("/healthz", "/openapi.json", "/users/alice"):
        got = endpoint.request("GET", path)
        head = endpoint.request("HEAD", path)
        assert head.status == 200 and head.body == b"", path
        assert head_of(head)["content-type"] == head_of(got)["content-type"] == "application/json"
        assert head_of(head)["content-length"] == head_of(got)["content-length"]
    assert endpoint.request("HEAD", "/users/nobody-here").status == 404


def test_bearer_scheme_is_case_insensitive(start_restuser, token_file):
    token = token_file.read_text().strip()
    service = start_restuser(tcp=True, extra_args=["--token-file", str(token_file)])
    for scheme in ("bearer", "BEARER", "Bearer"):
        reply = service.endpoint.request("GET", "/users/absent", {"Authorization": f"{scheme} {token}"})
        assert reply.status == 404, scheme
    assert service.endpoint.request("GET", "/users/absent", {"Authorization": f"Basic {token}"}).status == 401


@pytest.mark.parametrize("loopback_first", [True, False])
def test_every_systemd_socket_is_checked(tmp_path, prefix_root, token_file, loopback_first):
    """A socket unit listening on loopback AND on every address must be refused, whichever
    order systemd passes them in."""
    activator = shutil.which("systemd-socket-activate")
    assert activator, "systemd-socket-activate (package systemd) is required"
    loopback, everywhere = free_port(), free_port()
    listen = ["--listen", f"127.0.0.1:{loopback}", "--listen", f"0.0.0.0:{everywhere}"]
    if not loopback_first:
        listen = listen[2:] + listen[:2]
    process = subprocess.Popen(
        [activator, *listen, *restuser_command(), "--prefix", str(prefix_root), "--skel", str(SKEL),
         "--token-file", str(token_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout.readline().startswith("Listening on")
        assert process.stdout.readline().startswith("Listening on")
        with pytest.raises(OSError):
            Endpoint(port=loopback).request("GET", "/healthz", timeout=5)
        output = process.communicate(timeout=20)[0]
    finally:
        process.kill()
    assert "refusing non-loopback address 0.0.0.0" in output


def test_systemd_loopback_sockets_are_all_served(tmp_path, prefix_root, token_file):
    activator = shutil.which("systemd-socket-activate")
    first, second = free_port(), free_port()
    process = subprocess.Popen(
        [activator, "--listen", f"127.0.0.1:{first}", "--listen", f"127.0.0.1:{second}",
         *restuser_command(), "--prefix", str(prefix_root), "--skel", str(SKEL),
         "--token-file", str(token_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        statuses = {}
        while time.monotonic() < deadline and len(statuses) < 2:
            for port in (first, second):
                try:
                    statuses[port] = Endpoint(port=port).request("GET", "/healthz", timeout=5).status
                except OSError:
                    time.sleep(0.2)
        assert statuses == {first: 200, second: 200}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def read_until_closed(sock, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_connections_that_never_send_their_headers_are_closed(start_restuser):
    service = start_restuser(extra_args=["--header-timeout", "1s"])
    slow = open_slow_connections(service.endpoint, 20)
    started = time.monotonic()
    try:
        answers = [read_until_closed(sock, timeout=10) for sock in slow]
    finally:
        for sock in slow:
            sock.close()
    assert time.monotonic() - started < 5
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and json.loads(body)["title"] == "408 Request Timeout"
    # A request that does arrive in time is not affected.
    assert service.endpoint.request("GET", "/healthz").status == 200


def test_a_connection_flood_beyond_the_descriptor_limit_does_not_lock_clients_out(start_restuser):
    """With systemd's default soft limit of 1024 descriptors, 2200 idle connections used to
    exhaust a worker: every new client timed out and asyncio logged a traceback per failed
    accept() (262 MB in 25 s). Now the oldest connection still waiting for its headers makes
    room for a new one."""
    service = start_restuser(launcher=["prlimit", "--nofile=256:256"],
                             extra_args=["--workers", "1", "--header-timeout", "60s"])  # fmt: skip
    slow = open_slow_connections(service.endpoint, 600)
    try:
        time.sleep(1.0)
        for _ in range(5):
            reply, seconds = timed(service.endpoint, "GET", "/healthz")
            assert reply.status == 200 and seconds < 5.0, seconds  # locked out: timed out
    finally:
        for sock in slow:
            sock.close()
    log = service.log()
    # A burst may briefly reach the limit: asyncio then pauses accepting for a second.
    assert "Traceback" not in log and len(log.splitlines()) < 50
