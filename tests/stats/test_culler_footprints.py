"""hub-culler's questions to a server must not make its user look active in activity.sqlite.

A real hub and proxy, a real single-user server whose kernel runs a long cell with no browser
(set up behind the proxy's back), the real `hub-culler` asking it about its kernels (through
the proxy, as it does) and the real `hub-stats` polling. The culler's question moves the
server's and the user's last_activity in the hub (the proxy stamps the route, the hub copies
it every last_activity_interval); hub-stats reads the culler's published footprints and does
not record that as the user's activity. A request of the user's own afterwards still counts.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from realparts.culler import run_once as cull_once
from realparts.hub import HubService
from realparts.kernels import UserServer
from realparts.stats import STATS_SCOPES, rows, run_once, stamp
from stats.footprints import SLACK

pytestmark = pytest.mark.realhub

TIMEOUT = 5  # the culler's --timeout and hub-stats' --interval
CONFIG = "c.JupyterHub.last_activity_interval = 2\n"
CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers",
                 "tokens"]  # fmt: skip


def services() -> list[HubService]:
    return [
        HubService("admin", ["admin:users", "admin:servers", "access:servers"]),
        HubService("culler", CULLER_SCOPES),
        HubService("stats", STATS_SCOPES),
    ]


def hub_activity(hub, name: str) -> tuple[datetime, datetime]:
    """(the user's, the default server's) last_activity as the hub has them now."""
    model = hub.api("GET", f"/users/{name}", "admin").json()
    return (datetime.fromisoformat(model["last_activity"]),
            datetime.fromisoformat(model["servers"][""]["last_activity"]))  # fmt: skip


def wait_moved(hub, name: str, since: tuple[datetime, datetime], timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        now = hub_activity(hub, name)
        if now[0] > since[0] and now[1] > since[1]:
            return now
        assert time.monotonic() < deadline, f"the hub's last_activity of {name} did not move"
        time.sleep(0.2)


def test_the_cullers_questions_are_not_recorded_as_activity(start_hub, tmp_path):
    hub = start_hub(services(), CONFIG, spawner="simple")
    hub.create_users(["kay"], "admin")
    hub.start_servers(["kay"], "admin", timeout=120)
    server = UserServer.direct(hub, "kay", "admin")
    kernel = server.start_kernel()
    server.wait_ready(kernel["id"])
    server.make_busy(kernel["id"])
    time.sleep(TIMEOUT + 1)  # idle for the culler, not active for hub-stats
    db = tmp_path / "activity.sqlite"
    footprints = tmp_path / "footprints" / "probe-footprints.json"  # beside the probe marks
    env = {"HUB_STATS_CULLER_FOOTPRINTS": str(footprints)}

    def poll(interval: float = TIMEOUT) -> None:
        run = run_once(hub, "stats", db, interval=interval, env=env)
        assert run.returncode == 0, run.log

    poll()
    before = hub_activity(hub, "kay")
    culled = cull_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT))
    assert culled.returncode == 0, culled.log
    assert [d["result"] for d in culled.status["decisions"]] == ["kept-busy"], culled.log
    probed = wait_moved(hub, "kay", before)  # the question went through the proxy
    poll()

    # 1. Not recorded as kay's activity: no event, not active in the legacy view or the poll.
    assert rows(db, "SELECT count(*) FROM activity_events WHERE poll_id = 2") == [(0,)]
    assert rows(db, "SELECT user, active FROM activity WHERE date = "
                    "(SELECT time FROM polls WHERE id = 2)") == [("kay", 0)]  # fmt: skip
    assert rows(db, "SELECT active_users FROM polls WHERE id = 2") == [(0,)]

    # 2. What the hub recorded is the proxy's stamp of the culler's question: inside the
    #    window the culler measured around it (not its send time), as published.
    windows = json.loads(footprints.read_text())["windows"]
    spans = {tuple(w["key"]): (datetime.fromisoformat(w["from"]),
                               datetime.fromisoformat(w["until"])) for w in windows}  # fmt: skip
    user_span, server_span = spans[("user", "kay")], spans[("server", "kay", "")]
    assert user_span[0] <= probed[0] <= user_span[1], (probed, user_span)
    assert server_span[0] <= probed[1] <= server_span[1], (probed, server_span)
    assert probed[1] != server_span[0]

    # 3. kay's own request through the proxy afterwards is activity (once past the slack
    #    hub-stats allows around the culler's window: a stamp within it would be taken for
    #    the culler's).
    past = max(user_span[1], server_span[1]) + SLACK - datetime.now(UTC)
    time.sleep(max(0.0, past.total_seconds()) + 0.1)
    UserServer.through_proxy(hub, "kay", "admin", track_activity=True).status()
    own = wait_moved(hub, "kay", probed)
    poll(interval=60)  # active within the poll's interval however slowly this machine runs
    assert rows(db, "SELECT user, server_name, last_activity FROM activity_events "
                    "WHERE poll_id = 3 ORDER BY server_name") == [  # fmt: skip
        ("kay", None, stamp(own[0])), ("kay", "", stamp(own[1]))
    ]
    assert rows(db, "SELECT user, active FROM activity WHERE date = "
                    "(SELECT time FROM polls WHERE id = 3)") == [("kay", 1)]  # fmt: skip
    server.interrupt(kernel["id"])


def test_footprints_file_is_readable_by_another_user(tmp_path):
    """The culler publishes its windows in a directory and file another service's user may
    read (hub-stats.service binds that one directory), whatever the culler's umask."""
    import os
    import stat

    from culler.footprints import footprints_path, publish_footprints

    marks = tmp_path / "state" / "probe-marks.json"
    marks.parent.mkdir(mode=0o700)
    marks.write_text(json.dumps([{"key": ["server", "kay", ""],
                                  "from": "2026-03-02T09:00:00+00:00",
                                  "until": "2026-03-02T09:00:00.050000+00:00", "real": None}]))
    old = os.umask(0o077)
    try:
        publish_footprints(str(marks), now=datetime.fromisoformat("2026-03-02T10:00:00+00:00"))
    finally:
        os.umask(old)
    path = Path(footprints_path(str(marks)))
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert json.loads(path.read_text())["windows"] == [{
        "key": ["server", "kay", ""], "from": "2026-03-02T09:00:00+00:00",
        "until": "2026-03-02T09:00:00.050000+00:00"}]  # fmt: skip
