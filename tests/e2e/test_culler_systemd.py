"""hub-culler.service under a real systemd (PID 1 in a --network host container): installed by
scripts/install, sandboxed as shipped, given its token as a credential, and stopping an idle
server of a real JupyterHub running on the host's loopback."""

from __future__ import annotations

import json
import re
import time

import pytest

from realparts.hub import HubService

pytestmark = [pytest.mark.realsystemd, pytest.mark.realhub]

UNIT = "hub-culler.service"
DROPIN_DIR = f"/etc/systemd/system/{UNIT}.d"
CONFIG = "/etc/hub-sidecars/culler.toml"
TOKEN = "/etc/hub-sidecars/hub-api-token"
STATUS = "/var/lib/hub-sidecars/culler/status.json"
# The minimal scopes of docs/jupyterhub_config_culler.py.
CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers",
                 "tokens"]  # fmt: skip


@pytest.fixture(scope="module")
def hub(start_module_hub):
    """A real hub on the host's loopback, its servers served by the shared responder."""
    services = [HubService("admin", ["admin:users", "admin:servers"]),
                HubService("culler", CULLER_SCOPES)]  # fmt: skip
    return start_module_hub(services, spawner="responder")


@pytest.fixture(scope="module")
def installed(systemd_container, hub):
    """The suite as scripts/install left it, then the admin's part: the token file and a config
    pointing at the hub (through the proxy, so that the kernel check reaches the servers) with
    short times."""
    c = systemd_container
    c.write_file(TOKEN, hub.token("culler") + "\n", mode="0600")
    config = f'url = "{hub.api_url}"\ntimeout = "5s"\ncull_every = "2s"\n'
    c.write_file(CONFIG, config)
    return c


@pytest.fixture
def culler(installed):
    """The unit as shipped (no drop-ins), stopped and reset, stopped again at teardown."""
    c = installed
    c.run("rm", "-rf", DROPIN_DIR)
    c.run("systemctl", "daemon-reload")
    c.run("systemctl", "reset-failed", UNIT, check=False)
    yield c
    c.run("systemctl", "stop", UNIT, check=False)
    c.run("rm", "-rf", DROPIN_DIR)
    c.run("systemctl", "daemon-reload")
    c.run("systemctl", "reset-failed", UNIT, check=False)


def show(c, *props: str) -> dict[str, str]:
    out = c.run("systemctl", "show", UNIT, "-p", ",".join(props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout} s: {what}")


def add_dropin(c, name: str, text: str) -> None:
    c.write_file(f"{DROPIN_DIR}/{name}.conf", text)
    c.run("systemctl", "daemon-reload")


def server_running(hub, name: str) -> bool:
    return "" in hub.api("GET", f"/users/{name}", "admin").json().get("servers", {})


def test_the_unit_culls_an_idle_server_and_reports_each_pass(culler, hub):
    c = culler
    hub.create_users(["idle-sd"], "admin")
    hub.start_servers(["idle-sd"], "admin")
    assert server_running(hub, "idle-sd")

    c.run("systemctl", "start", UNIT)  # returns once the daemon said READY=1
    state = show(c, "Type", "ActiveState", "SubState", "User", "DynamicUser")
    assert state["Type"] == "notify" and state["DynamicUser"] == "yes", state
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), c.journal(UNIT)

    # The server has been idle for 5 s within a few passes: the hub stops it.
    wait_until(lambda: not server_running(hub, "idle-sd"), 40,
               f"the culler to stop idle-sd:\n{c.journal(UNIT)}")  # fmt: skip
    # The culling pass's summary comes after the hub removed the server, at journald's pace.
    c.journal_with(UNIT, re.compile(r'msg="pass done".*\bculled=1\b'))
    journal = wait_until(lambda: (j := c.journal(UNIT)).count('msg="pass done"') >= 2 and j,
                         20, "two pass summaries in the journal")  # fmt: skip
    passes = [line for line in journal.splitlines() if 'msg="pass done"' in line]
    assert all(re.search(r"\bseen=\d+ .*\bculled=\d+", line) for line in passes), passes
    assert any(re.search(r"\bculled=1\b", line) for line in passes), passes
    assert not re.search(r"\bts=", journal), "journald adds the time; lines must not repeat it"
    assert hub.token("culler") not in journal
    assert hub.token("culler") not in c.run("ps", "-e", "-ww", "-o", "args").stdout

    # `systemctl status` shows the last pass's summary (STATUS=).
    status_text = show(c, "StatusText")["StatusText"]
    assert re.search(r"\bseen=\d+", status_text), status_text
    assert "seen=" in c.run("systemctl", "status", "--no-pager", UNIT, check=False).stdout

    # The status file in the state directory: the last pass's result as JSON, private.
    status = json.loads(c.run("cat", STATUS).stdout)
    assert status, status
    mode = c.run("stat", "-L", "-c", "%a", "/var/lib/hub-sidecars/culler").stdout.strip()
    assert mode == "700"

    asked = time.monotonic()
    c.run("systemctl", "stop", UNIT)
    took = time.monotonic() - asked
    assert took < 12, f"systemctl stop took {took:.1f} s"  # TimeoutStopSec=20 would kill
    after = show(c, "ActiveState", "Result")
    assert (after["ActiveState"], after["Result"]) == ("inactive", "success"), after
    journal = c.journal_with(UNIT, "signal=SIGTERM", "msg=stopped")
    # A non-zero exit would be logged by systemd ("Main process exited ... status=") and make
    # the Result above "exit-code"; the daemon's own last line says it stopped on SIGTERM.
    assert "signal=SIGTERM" in journal and "msg=stopped" in journal, journal
    assert "Main process exited" not in journal, journal


def test_the_scheduler_keeps_a_short_watchdog_happy(culler):
    c = culler
    add_dropin(c, "watchdog", "[Service]\nWatchdogSec=2s\n")
    c.run("systemctl", "start", UNIT)
    time.sleep(7)
    state = show(c, "ActiveState", "Result", "NRestarts", "WatchdogUSec")
    assert state["WatchdogUSec"] == "2s", state
    assert (state["ActiveState"], state["Result"], state["NRestarts"]) == (
        "active", "success", "0"
    ), c.journal(UNIT)  # fmt: skip


def test_a_bad_configuration_fails_once_and_is_not_restarted(culler):
    c = culler
    add_dropin(c, "bad", "[Service]\nEnvironment=HUB_CULLER_TIMEOUT=soon\n")
    assert c.run("systemctl", "start", UNIT, check=False).returncode != 0
    time.sleep(7)  # beyond RestartSec=5: a restart would have happened by now
    state = show(c, "ActiveState", "Result", "NRestarts", "ExecMainStatus")
    assert (state["ActiveState"], state["NRestarts"]) == ("failed", "0"), state
    journal = c.journal(UNIT)
    assert "status=2/INVALIDARGUMENT" in journal, journal
    assert "timeout" in journal.lower()


def test_a_failing_daemon_is_restarted(culler):
    # The token file gone: systemd cannot load the credential, the start fails, and
    # Restart=on-failure tries again (this exit is not the "bad configuration" 2).
    c = culler
    c.run("mv", TOKEN, TOKEN + ".away")
    try:
        c.run("systemctl", "start", UNIT, check=False)
        wait_until(lambda: int(show(c, "NRestarts")["NRestarts"]) >= 1, 20,
                   f"a restart:\n{c.journal(UNIT)}")  # fmt: skip
    finally:
        c.run("mv", TOKEN + ".away", TOKEN)
    # With the token back, the next restart comes up by itself.
    wait_until(lambda: show(c, "ActiveState")["ActiveState"] == "active", 30,
               f"the unit to come up again:\n{c.journal(UNIT)}")  # fmt: skip


# A stand-in for the engine's socket: root:docker 0660 like dockerd's, recording the first line
# of each request. (No Docker engine runs inside the systemd container; what is under test is
# whether the sandboxed unit may connect at all.)
SOCKET_RECORDER = """\
import grp, os, socket
path, record = "/run/docker.sock", "/run/docker-socket.record"
server = socket.socket(socket.AF_UNIX)
server.bind(path)
os.chown(path, 0, grp.getgrnam("docker").gr_gid)
os.chmod(path, 0o660)
server.listen()
while True:
    conn, _ = server.accept()
    line = conn.recv(4096).split(b"\\r\\n")[0].decode()
    with open(record, "a") as out:
        out.write(line + "\\n")
    conn.close()
"""


@pytest.fixture
def docker_socket(culler):
    c = culler
    c.run("groupadd", "-f", "docker")
    c.write_file("/root/socket_recorder.py", SOCKET_RECORDER)
    c.run("systemd-run", "--unit=docker-socket-recorder", "python3", "/root/socket_recorder.py")
    c.run("sh", "-c", "until test -S /run/docker.sock; do sleep 0.1; done", timeout=20)
    yield c
    c.run("systemctl", "stop", "docker-socket-recorder", check=False)
    c.run("rm", "-f", "/run/docker.sock", "/run/docker-socket.record")


def test_the_documented_docker_dropin_lets_the_sandbox_reach_the_engine_socket(docker_socket):
    c = docker_socket
    # As shipped (hub-only), --docker cannot reach a root:docker 0660 socket: the unit fails
    # with the reason and is not restarted (a bad configuration, exit 2).
    add_dropin(c, "docker-on", "[Service]\nEnvironment=HUB_CULLER_DOCKER=true\n")
    assert c.run("systemctl", "start", UNIT, check=False).returncode != 0
    c.journal_with(UNIT, re.compile("permission denied", re.IGNORECASE))
    assert c.run("cat", "/run/docker-socket.record", check=False).stdout == ""
    c.run("systemctl", "reset-failed", UNIT)
    # The drop-in the unit's comment documents: the docker group, nothing else.
    add_dropin(c, "docker-group", "[Service]\nSupplementaryGroups=docker\n")
    c.run("systemctl", "start", UNIT, check=False)
    record = wait_until(lambda: c.run("cat", "/run/docker-socket.record", check=False).stdout,
                        20, f"a request on the socket:\n{c.journal(UNIT)}")  # fmt: skip
    assert re.match(r"(GET|HEAD) /\S+ HTTP/1.1$", record.splitlines()[0]), record


def test_unit_verifies_clean_and_scores_inside_real_systemd(installed):
    c = installed
    verify = c.run("systemd-analyze", "verify", f"/etc/systemd/system/{UNIT}", check=False)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    security = c.run("systemd-analyze", "security", UNIT, check=False).stdout
    exposure = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", security).group(1))
    assert exposure <= 2.0, security
