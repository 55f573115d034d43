"""hub-stats.service and hub-stats-web.socket under a real systemd (PID 1 in a --network host
container): installed by scripts/install, sandboxed as shipped, the collector recording polls
of a real JupyterHub on the host's loopback, `hub-stats serve` answering through its socket."""

from __future__ import annotations

import json
import re
import time

import pytest

from realparts.hub import HubService
from realparts.systemd import show
from realparts.waiting import wait_until

pytestmark = [pytest.mark.realsystemd, pytest.mark.realhub]

COLLECTOR = "hub-stats.service"
WEB = "hub-stats-web.service"
WEB_SOCKET = "hub-stats-web.socket"
CONFIG = "/etc/hub-sidecars/stats.toml"
TOKEN = "/etc/hub-sidecars/hub-api-token"
DB = "/var/lib/hub-sidecars/stats/activity.sqlite"
SOCKET = "/run/hub-stats/stats.sock"
STATS_SCOPES = ["list:users", "read:users:activity", "read:servers", "read:users",
                "list:groups", "read:groups"]  # fmt: skip


@pytest.fixture(scope="module")
def hub(start_module_hub):
    services = [HubService("admin", ["admin:users", "admin:servers"]),
                HubService("stats", STATS_SCOPES)]  # fmt: skip
    return start_module_hub(services, spawner="responder")


@pytest.fixture(scope="module")
def installed(systemd_container, hub):
    """The suite as scripts/install left it, then the admin's part: the token and the config."""
    c = systemd_container
    c.write_file(TOKEN, hub.token("stats") + "\n", mode="0600")
    config = f'url = "{hub.api_url}"\ninterval = "5s"\n'
    c.write_file(CONFIG, config)
    yield c
    c.run("systemctl", "stop", COLLECTOR, WEB, WEB_SOCKET, check=False)


def query(c, sql: str) -> list:
    """Rows from the collector's database, read inside the container (as root)."""
    script = ("import json, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
              "print(json.dumps(c.execute(sys.argv[2]).fetchall()))")  # fmt: skip
    return json.loads(c.run("python3", "-c", script, DB, sql).stdout)


def get(c, path: str) -> tuple[int, int]:
    """Status and size of the answer; the body is left in /tmp/body inside the container."""
    done = c.run("curl", "-sS", "--unix-socket", SOCKET, "-o", "/tmp/body", "-w",
                 "%{http_code}", f"http://stats{path}", check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr + c.journal(WEB)[-3000:]
    return int(done.stdout), int(c.run("stat", "-c", "%s", "/tmp/body").stdout)


def test_collector_records_the_real_hub_and_the_web_socket_serves_it(installed, hub):
    c = installed
    hub.create_users(["ada-sd", "bob-sd"], "admin")
    hub.start_servers(["ada-sd"], "admin")

    c.run("systemctl", "start", COLLECTOR)  # returns once the daemon said READY=1
    state = show(c, COLLECTOR, "Type", "ActiveState", "SubState", "DynamicUser", "User")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), c.journal(COLLECTOR)
    assert state["DynamicUser"] == "yes" and state["User"] == "hub-stats", state

    wait_until(lambda: len(query(c, "SELECT id FROM polls WHERE ok = 1")) >= 2, 30,
               f"two recorded polls:\n{c.journal(COLLECTOR)}")  # fmt: skip
    users = {row[0] for row in query(c, "SELECT name FROM users WHERE gone_poll IS NULL")}
    assert {"ada-sd", "bob-sd"} <= users, users
    sessions = query(c, "SELECT user, server_name, end_poll FROM sessions")
    assert ["ada-sd", "", None] in sessions and not any(s[0] == "bob-sd" for s in sessions)
    assert query(c, "SELECT count(*) FROM polls WHERE ok = 0") == [[0]]
    journal = c.journal(COLLECTOR)
    assert hub.token("stats") not in journal
    assert hub.token("stats") not in c.run("ps", "-e", "-ww", "-o", "args").stdout
    assert re.search(r"\busers=\d+", show(c, COLLECTOR, "StatusText")["StatusText"])
    # The state directory is the collector's alone (and the web service's, same user).
    collector_pid = show(c, COLLECTOR, "MainPID")["MainPID"]
    collector_uid = c.run("ps", "-o", "uid=", "-p", collector_pid).stdout.strip()
    mode = c.run("stat", "-L", "-c", "%a %u", "/var/lib/hub-sidecars/stats").stdout.split()
    assert mode == ["700", collector_uid] and collector_uid != "0", mode

    # Socket activation: the first request starts hub-stats serve as the same user.
    c.run("systemctl", "start", WEB_SOCKET)
    assert c.run("stat", "-c", "%a %U %G", SOCKET).stdout.split() == ["660", "root", "root"]
    status, _ = get(c, "/stats.json")
    body = c.run("cat", "/tmp/body").stdout
    assert status == 200, (body, c.journal(WEB))
    now = json.loads(body)
    assert now["last_poll"]["ok"] is True and now["users"] >= 2, now
    assert now["servers_running"] >= 1, now
    web_pid = show(c, WEB, "MainPID")["MainPID"]
    assert c.run("ps", "-o", "uid=", "-p", web_pid).stdout.strip() == collector_uid
    # The page's charting library, served from the package, and a snapshot download.
    status, size = get(c, "/static/vega.js")
    assert status == 200 and size > 100_000, (status, size, c.journal(WEB))
    status, _ = get(c, "/activity.sqlite")
    assert status == 200, c.journal(WEB)
    check = c.run("python3", "-c", "import sqlite3; print(sqlite3.connect('/tmp/body')"
                  ".execute('PRAGMA integrity_check').fetchone()[0])")  # fmt: skip
    assert check.stdout.strip() == "ok"

    # Clean, quick stops.
    for unit in (COLLECTOR, WEB):
        asked = time.monotonic()
        c.run("systemctl", "stop", unit)
        took = time.monotonic() - asked
        assert took < 12, f"systemctl stop {unit} took {took:.1f} s"  # TimeoutStopSec: 20, 30
        after = show(c, unit, "ActiveState", "Result")
        assert (after["ActiveState"], after["Result"]) == ("inactive", "success"), (
            after, c.journal(unit))  # fmt: skip
    assert "Main process exited" not in c.journal(COLLECTOR)


def test_units_verify_clean_and_score_inside_real_systemd(installed):
    c = installed
    for unit in (COLLECTOR, WEB, WEB_SOCKET):
        verify = c.run("systemd-analyze", "verify", f"/etc/systemd/system/{unit}", check=False)
        assert verify.returncode == 0 and verify.stderr == "", (unit, verify.stderr)
    for unit in (COLLECTOR, WEB):
        security = c.run("systemd-analyze", "security", unit, check=False).stdout
        found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security)
        assert float(found.group(1)) <= 2.0, security
