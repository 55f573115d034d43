"""The culler benchmark's parts: the shared responder under a burst of connections, the counting
proxy in front of a real HTTP server, and the population plan."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import requests

from bench.counting_proxy import CountingProxy
from bench.culler import most_in_flight, stops_answered
from bench.hub_state import Population
from realparts.net import free_port
from realparts.process import ManagedProcess

RESPONDER = Path(__file__).resolve().parents[2] / "realparts" / "responder.py"


@pytest.fixture
def responder(tmp_path: Path):
    port = free_port()
    process = ManagedProcess([sys.executable, str(RESPONDER), str(port)], tmp_path / "r.log")
    process.start(
        lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200,
        20,
        "responder",
    )
    yield process, port
    os.killpg(process.process.pid, signal.SIGCONT)
    process.stop()


def test_responder_takes_a_burst_of_connections_while_busy(responder):
    """A restarted hub checks all its servers at once. The responder is frozen (as a busy
    process would be) while 200 clients connect and send a request: every one is answered
    promptly once it runs again, none waits for a dropped connection attempt to be retried."""
    process, port = responder
    os.killpg(process.process.pid, signal.SIGSTOP)
    clients = []
    try:
        for index in range(200):
            sock = socket.socket()
            sock.settimeout(0.5)
            try:
                sock.connect(("127.0.0.1", port))
                sock.sendall(f"GET /user/u{index}/api HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            except OSError:
                pass  # a dropped attempt; its request is not answered below
            clients.append(sock)
    finally:
        os.killpg(process.process.pid, signal.SIGCONT)
    deadline = time.monotonic() + 3
    answered = 0
    for sock in clients:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if sock.recv(64).startswith(b"HTTP/1.1 200"):
                answered += 1
        except OSError:
            pass
        sock.close()
    assert answered == 200


def test_counting_proxy_forwards_and_counts_by_kind(responder):
    _, port = responder
    proxy = CountingProxy(free_port(), port).start()
    try:
        with requests.Session() as session:  # one kept-alive connection for all four
            base = f"http://127.0.0.1:{proxy.port}"
            assert session.get(f"{base}/user/alice/api/kernels").json() == []
            echoed = session.get(f"{base}/hub/api/users?state=ready").json()
            assert echoed["path"] == "/hub/api/users"
            assert session.delete(f"{base}/hub/api/users/alice/server").status_code == 200
            assert session.get(f"{base}/favicon.ico").status_code == 200
        exchanges = proxy.take()
    finally:
        proxy.close()
    assert [(ex.method, ex.kind) for ex in exchanges] == [
        ("GET", "server"), ("GET", "hub"), ("DELETE", "hub"), ("GET", "other"),
    ]  # fmt: skip
    assert all(ex.arrived <= ex.answered for ex in exchanges)
    assert most_in_flight(exchanges) == 1  # one client, one request after the other
    assert set(stops_answered(exchanges, {"alice", "bob"})) == {"alice"}
    assert proxy.take() == []


def test_population_spreads_servers_and_draws_the_active_ones():
    plan = Population.spread(2000, 500, 300)
    assert len(plan.users) == 2000 and len(set(plan.running)) == 500
    assert len(plan.idle) == 300 and len(plan.active) == 200
    assert set(plan.active) <= set(plan.running) and not set(plan.active) & set(plan.idle)
    assert plan.running[0] == "u00000" and plan.running[-1] == "u01996"
    assert Population.spread(2000, 500, 300) == plan  # identical state for every run
    with pytest.raises(ValueError):
        Population.spread(10, 20, 5)
