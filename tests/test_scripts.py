"""Pieces of scripts/lib.sh that the demo and the test command rely on."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from realparts.restuser import REPO


def lib_free_port(preferred: int) -> int:
    result = subprocess.run(["bash", "-c", 'source scripts/lib.sh && free_port "$1"', "-",
                             str(preferred)], cwd=REPO, capture_output=True, text=True,
                            check=True)  # fmt: skip
    return int(result.stdout)


def test_free_port_keeps_a_port_whose_last_connection_waits_in_time_wait():
    """The demo restarted a minute after Ctrl-C must come back on the URL the browser has open:
    connections of the stopped run linger in TIME_WAIT, and a server binds over them."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the server closes first: its side of port waits in TIME_WAIT
            client.recv(1)
    states = subprocess.run(["ss", "-tanH", "state", "time-wait", f"( sport = :{port} )"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert f":{port}" in states, "the test did not leave a TIME_WAIT connection"
    assert lib_free_port(port) == port


def test_free_port_moves_off_a_port_that_is_listened_on():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        other = lib_free_port(port)
    assert other != port and other > 0


GROUPED = """
import os, pytest
@pytest.mark.xdist_group("together")
@pytest.mark.parametrize("n", range(6))
def test_one(n):
    with open(os.environ["RECORD"], "a") as record:
        record.write(__name__ + " " + os.environ["PYTEST_XDIST_WORKER"] + "\\n")
"""


def test_the_worker_groups_scripts_test_relies_on_are_honoured(tmp_path):
    """scripts/test runs --dist loadgroup: tests in one xdist_group must share a worker (one
    Docker engine's sweeps, the host-wide duplicity checks). A pytest/xdist pair that ignores
    the groups runs them side by side, silently."""
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_other.py").write_text(GROUPED.replace("together", "elsewhere"))
    record = tmp_path / "record"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-n", "3", "--dist", "loadgroup", "--rootdir", str(tmp_path),
                             "-c", "/dev/null", str(tmp_path)],
                            capture_output=True, text=True, env={**os.environ, "RECORD": str(record)},
                            cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    ran = [line.split() for line in record.read_text().splitlines()]
    assert len(ran) == 12
    per_group: dict[str, set[str]] = {}
    for module, worker in ran:
        per_group.setdefault(module, set()).add(worker)
    assert [len(workers) for workers in per_group.values()] == [1, 1], ran


def test_the_benchmarks_import_nothing_from_the_tests():
    """bench/ and tests/ share real-part helpers through realparts/, never one through the
    other (a benchmark must run from a checkout whatever the tests become)."""
    bench = Path(__file__).resolve().parents[1] / "bench"
    importing = [path.name for path in sorted(bench.glob("*.py"))
                 if re.search(r"^\s*(from|import) tests\b", path.read_text(), re.M)]
    assert importing == []
