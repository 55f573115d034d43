"""Pieces of scripts/lib.sh that the demo and the test command rely on."""

from __future__ import annotations

import socket
import subprocess

from tests.realparts.restuser import REPO


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
