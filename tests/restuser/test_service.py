"""The real service: gunicorn workers, unix socket permissions, TCP tokens, socket activation."""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess

import pytest

from realparts.net import Endpoint, free_port
from realparts.restuser import SKEL, restuser_command


def test_unix_socket_carries_the_configured_mode_and_group(start_restuser):
    group = grp.getgrnam("users")
    service = start_restuser(extra_args=["--socket-mode", "0640", "--socket-group", "users"])
    info = os.stat(service.endpoint.unix)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o640 and info.st_gid == group.gr_gid


def test_unix_socket_default_mode_is_0660(start_restuser):
    service = start_restuser()
    assert stat.S_IMODE(os.stat(service.endpoint.unix).st_mode) == 0o660


def test_full_cycle_over_the_unix_socket(start_restuser):
    endpoint = start_restuser().endpoint
    created = endpoint.request("POST", "/users/alice")
    assert created.status == 201
    again = endpoint.request("POST", "/users/alice")
    assert again.status == 200 and again.json()["uid"] == created.json()["uid"]
    assert endpoint.request("GET", "/users/alice").json()["created"] is False
    assert endpoint.request("GET", "/users/nobody-yet").status == 404
    compat = endpoint.request("POST", "/bob")
    assert compat.status == 200 and compat.json()["dir"] == "/home/bob"
    assert endpoint.request("GET", "/healthz").json() == {"status": "ok"}


def test_every_creation_is_logged_as_one_line(start_restuser):
    service = start_restuser()
    service.endpoint.request("POST", "/users/alice")
    lines = [line for line in service.log().splitlines() if "outcome=created" in line]
    assert len(lines) == 1
    for field in ("name=alice", "uid=20000", "outcome=created", "duration_ms=", "wait_ms="):
        assert field in lines[0]


def test_tcp_needs_the_token(start_restuser, token_file):
    token = token_file.read_text().strip()
    service = start_restuser(tcp=True, extra_args=["--token-file", str(token_file)])
    endpoint = service.endpoint
    assert endpoint.request("POST", "/users/alice").status == 401
    assert endpoint.request("GET", "/users/alice", {"Authorization": "Bearer wrong"}).status == 401
    assert endpoint.request("POST", "/users/alice", {"Authorization": token}).status == 401
    ok = endpoint.request("POST", "/users/alice", {"Authorization": f"Bearer {token}"})
    assert ok.status == 201
    assert endpoint.request("GET", "/healthz").status == 200
    assert token not in service.log()
    assert token not in " ".join(service.argv)


def test_token_from_systemd_credentials_directory(start_restuser, token_file):
    token = token_file.read_text().strip()
    credentials = token_file.parent / "credentials"
    credentials.mkdir()
    shutil.copy(token_file, credentials / "restuser-token")
    service = start_restuser(tcp=True, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert service.endpoint.request("POST", "/users/alice").status == 401
    ok = service.endpoint.request("POST", "/users/alice", {"Authorization": f"Bearer {token}"})
    assert ok.status == 201


def test_systemd_socket_activation_unix(start_restuser, tmp_path):
    """systemd-socket-activate creates the socket and passes it as LISTEN_FDS, as the
    hub-restuser.socket unit does; gunicorn must serve on it, not bind its own."""
    activator = shutil.which("systemd-socket-activate")
    assert activator, "systemd-socket-activate (package systemd) is required"
    path = str(tmp_path / "activated.sock")
    ignored = tmp_path / "not-this.sock"
    service = start_restuser(launcher=[activator, "--listen", path, "-E", "PATH"],
                             endpoint=Endpoint(unix=path), bind=f"unix:{ignored}")  # fmt: skip
    assert not ignored.exists()
    assert service.endpoint.request("POST", "/users/alice").status == 201
    assert "listen=systemd:unix:" in service.log()


def test_systemd_socket_activation_tcp_refuses_without_token(tmp_path, prefix_root):
    activator = shutil.which("systemd-socket-activate")
    port = free_port()
    # systemd-socket-activate starts the service on the first connection.
    process = subprocess.Popen(
        [activator, "--listen", f"127.0.0.1:{port}", *restuser_command(),
         "--prefix", str(prefix_root), "--skel", str(SKEL)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout.readline().startswith("Listening on")
        with pytest.raises(OSError):
            Endpoint(port=port).request("GET", "/healthz", timeout=5)
        output = process.communicate(timeout=20)[0]
    finally:
        process.kill()
    assert "refusing to listen on TCP" in output and "without a token" in output
