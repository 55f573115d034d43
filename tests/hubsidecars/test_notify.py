"""sd_notify without libsystemd: datagrams on a real AF_UNIX socket bound by the test."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hubsidecars.notify import Notifier
from realparts.restuser import REPO


@pytest.fixture
def listener(tmp_path: Path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(5)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_each_message_arrives_as_systemd_expects_it(listener):
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": listener.getsockname()})
    assert notifier.enabled
    assert notifier.ready("started") is True
    assert received(listener) == ["READY=1", "STATUS=started"]
    notifier.status("culled 3 of 40\nservers")
    assert received(listener) == ["STATUS=culled 3 of 40 servers"]
    notifier.watchdog()
    assert received(listener) == ["WATCHDOG=1"]
    notifier.stopping()
    assert received(listener) == ["STOPPING=1"]
    notifier.ready()
    assert received(listener) == ["READY=1"]


def test_an_abstract_socket_is_reached_through_its_at_sign_name():
    name = f"hub-sidecars-test-{os.getpid()}-{os.urandom(4).hex()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier.from_environment({"NOTIFY_SOCKET": "@" + name}).ready()
        assert received(sock) == ["READY=1"]


def test_the_environment_of_a_real_process_is_read(listener):
    """What a daemon started by systemd does: from_environment() in a fresh process."""
    code = ("from hubsidecars.notify import Notifier; n = Notifier.from_environment(); "
            "n.ready('up'); print(n.watchdog_interval)")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": listener.getsockname(),
           "WATCHDOG_USEC": "3000000"}  # fmt: skip
    env.pop("WATCHDOG_PID", None)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=30, check=True)  # fmt: skip
    assert result.stdout.strip() == "1.5"
    assert received(listener) == ["READY=1", "STATUS=up"]


@pytest.mark.parametrize(
    "env, interval",
    [
        ({"WATCHDOG_USEC": "4000000"}, 2.0),
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "4242"}, 2.0),
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "999999"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_the_watchdog_interval_is_half_the_timeout_and_only_for_the_named_process(env, interval):
    assert Notifier.from_environment(env, pid=4242).watchdog_interval == interval


def test_outside_systemd_every_call_is_a_quiet_no_op(caplog):
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    with caplog.at_level(logging.DEBUG):
        results = [notifier.ready("x"), notifier.status("y"), notifier.watchdog(),
                   notifier.stopping()]  # fmt: skip
    assert results == [False, False, False, False]
    assert caplog.records == []


def test_a_socket_that_is_gone_is_logged_once_and_never_raises(tmp_path, caplog):
    path = tmp_path / "gone.sock"
    notifier = Notifier(str(path), logger=logging.getLogger("svc"))
    with caplog.at_level(logging.INFO):
        assert notifier.status("one") is False
        assert notifier.watchdog() is False
        assert notifier.stopping() is False
    assert len(caplog.records) == 1
    record = caplog.records[0]
    assert record.levelno == logging.WARNING and "sd_notify failed" in record.getMessage()
