"""The restuser units under a real systemd (PID 1 in a container): installed with
scripts/install, socket-activated, sandboxed as shipped, and still able to create accounts."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.realsystemd

SOCKET = "/run/hub-restuser/restuser.sock"


def curl(container, method, path):
    result = container.run("curl", "-s", "--max-time", "20", "-w", "\n%{http_code}", "--unix-socket", SOCKET,
                           "-X", method, f"http://restuser{path}", check=False)  # fmt: skip
    body, _, status = result.stdout.rpartition("\n")
    return int(status or 0), body


@pytest.fixture(scope="module")
def installed_once(systemd_container):
    """scripts/install once per module: the container is shared by this module's tests."""
    result = systemd_container.run(
        "/src/scripts/install", "--wheels", "/wheels", "--enable", check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return systemd_container


@pytest.fixture
def installed(installed_once):
    """The units as shipped: no drop-ins, the socket listening afresh, the service not started."""
    c = installed_once
    c.run("rm", "-rf", "/etc/systemd/system/hub-restuser.socket.d",
          "/etc/systemd/system/hub-restuser.service.d")  # fmt: skip
    c.run("systemctl", "daemon-reload")
    c.run("systemctl", "stop", "hub-restuser.service", "hub-restuser.socket")
    c.run("systemctl", "reset-failed", "hub-restuser.service", "hub-restuser.socket", check=False)
    c.run("systemctl", "start", "hub-restuser.socket")
    return c


def test_socket_activation_creates_a_real_account_inside_the_sandbox(installed):
    c = installed
    assert c.run("systemctl", "is-active", "hub-restuser.socket").stdout.strip() == "active"
    # Socket activation: the service starts only with the first connection.
    assert (
        c.run("systemctl", "is-active", "hub-restuser.service", check=False).stdout.strip()
        == "inactive"
    )
    mode, owner = c.run("stat", "-c", "%a %U:%G", SOCKET).stdout.split()
    assert (mode, owner) == ("660", "root:root")

    status, body = curl(c, "POST", "/users/alice")
    assert status == 201, body + c.journal("hub-restuser.service")
    account = json.loads(body)
    assert account["home"] == "/home/alice" and account["uid"] >= 1000

    # A real account in the container's own /etc/passwd, home complete, private, owned by alice.
    assert c.run("id", "-u", "alice").stdout.strip() == str(account["uid"])
    listing = c.run("stat", "-c", "%n %a %U", "/home/alice", "/home/alice/Welcome.ipynb",
                    "/home/alice/.profile", "/home/alice/.jupyter/jupyter_server_config.json").stdout  # fmt: skip
    assert listing.splitlines()[0] == "/home/alice 700 alice"
    assert all(line.endswith(" alice") for line in listing.splitlines())

    assert curl(c, "POST", "/users/alice")[0] == 200
    assert curl(c, "GET", "/users/root")[0] == 403
    assert curl(c, "GET", "/healthz") == (200, '{"status": "ok"}')

    show = c.run(
        "systemctl", "show", "hub-restuser.service", "-p", "Type,ActiveState,SubState"
    ).stdout
    assert "Type=notify" in show and "ActiveState=active" in show and "SubState=running" in show
    # restuser logs before it answers; journald reads the line at its own pace
    journal = c.journal_with(
        "hub-restuser.service",
        re.compile(r"outcome=created.*name=alice\b|name=alice\b.*outcome=created"),
    )
    # The journal is shared with the module's other tests: look at alice's lines only.
    created = [
        line for line in journal.splitlines() if "outcome=created" in line and "name=alice" in line
    ]
    assert len(created) == 1 and "duration_ms=" in created[0]
    assert not re.search(r"\bts=", journal), "journald adds the time; lines must not repeat it"


def test_service_restarts_on_demand_after_a_stop(installed):
    c = installed
    assert curl(c, "POST", "/users/bob")[0] == 201
    c.run("systemctl", "stop", "hub-restuser.service")
    assert c.run("systemctl", "is-active", "hub-restuser.socket").stdout.strip() == "active"
    status, body = curl(c, "GET", "/users/bob")
    assert status == 200 and json.loads(body)["name"] == "bob"


def test_units_verify_clean_and_score_inside_real_systemd(installed):
    c = installed
    verify = c.run("systemd-analyze", "verify", "/etc/systemd/system/hub-restuser.service",
                   "/etc/systemd/system/hub-restuser.socket", check=False)  # fmt: skip
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    security = c.run("systemd-analyze", "security", "hub-restuser.service", check=False).stdout
    exposure = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", security).group(1))
    assert exposure <= 2.5


def test_tcp_socket_with_token_credential(installed):
    """Loopback TCP as docs/restuser.md describes: a drop-in per unit, token as a credential."""
    from realparts.net import free_port

    c, port, token = installed, free_port(), "tcp-test-token-0123456789abcdef"
    c.run("sh", "-c", f"umask 077; printf %s {token} > /etc/hub-sidecars/restuser.token")
    c.run("sh", "-c", f"printf 'Authorization: Bearer %s\\n' {token} > /root/auth-header")
    c.run(
        "mkdir",
        "-p",
        "/etc/systemd/system/hub-restuser.socket.d",
        "/etc/systemd/system/hub-restuser.service.d",
    )
    c.run("sh", "-c", f"printf '[Socket]\\nListenStream=\\nListenStream=127.0.0.1:{port}\\n' "
                      "> /etc/systemd/system/hub-restuser.socket.d/tcp.conf")  # fmt: skip
    c.run("sh", "-c", "printf '[Service]\\nLoadCredential=restuser-token:/etc/hub-sidecars/restuser.token\\n' "
                      "> /etc/systemd/system/hub-restuser.service.d/token.conf")  # fmt: skip
    c.run("systemctl", "daemon-reload")
    c.run("systemctl", "restart", "hub-restuser.socket")

    url = f"http://127.0.0.1:{port}/users/carol"
    without = c.run(
        "curl", "-s", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", url
    ).stdout
    assert without == "401", c.journal("hub-restuser.service")
    with_token = c.run("curl", "-s", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}", "-H", "@/root/auth-header",
                       "-X", "POST", url).stdout  # fmt: skip
    assert with_token == "201"
    assert token not in c.journal("hub-restuser.service")
    assert token not in c.run("ps", "-e", "-ww", "-o", "args").stdout
