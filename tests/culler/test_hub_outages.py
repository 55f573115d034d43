"""hub-culler when the hub goes away and comes back, and against JupyterHub 4, 5 and 6."""

from __future__ import annotations

import signal
import time

import pytest

from realparts.culler import CULLER_SCOPES, CullerDaemon, run_once, running
from realparts.hub import HubService

pytestmark = pytest.mark.realhub

TIMEOUT = 3


def services() -> list[HubService]:
    return [
        HubService("admin", ["admin:users", "admin:servers", "access:servers"]),
        HubService("culler", CULLER_SCOPES),
    ]


def test_hub_stopped_mid_run_then_restarted_the_daemon_goes_on_and_culls(start_hub, tmp_path):
    # cleanup_servers=False: the restarted hub finds its (responder) servers again
    hub = start_hub(services(), spawner="responder", cleanup_servers=False)
    hub.create_users(["before", "after"], "admin")
    hub.start_servers(["before"], "admin")
    time.sleep(TIMEOUT + 0.5)
    metrics = tmp_path / "culler.prom"
    daemon = CullerDaemon(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--cull-every", "1",
                          "--request-timeout", "2", "--metrics-file", str(metrics))  # fmt: skip
    daemon.start()
    try:
        daemon.wait_for('msg="server culled" target=before', timeout=30)
        hub.stop()
        # passes fail, one line each, and the daemon keeps its schedule
        log = daemon.wait_for('msg="pass failed"', count=2, timeout=60)
        failed = [line for line in log.splitlines() if 'msg="pass failed"' in line]
        assert all("hub unavailable" in line for line in failed), failed
        assert "Traceback" not in log
        assert daemon.status()["ok"] is False and daemon.status()["errors"]
        assert "hub_culler_last_pass_success 0" in metrics.read_text()

        hub.start()
        hub.start_servers(["after"], "admin")
        time.sleep(TIMEOUT + 0.5)
        daemon.wait_for('msg="server culled" target=after', timeout=60)
        assert daemon.process.process.poll() is None
    finally:
        code, took = daemon.signal(signal.SIGTERM)
    assert code == 0 and took < 15
    assert not running(hub, "after")
    text = metrics.read_text()
    assert "hub_culler_last_pass_success 1" in text
    assert 'hub_culler_outcomes_total{kind="server",result="culled"} 2' in text
    failed_total = [line for line in text.splitlines()
                    if line.startswith("hub_culler_failed_passes_total")]  # fmt: skip
    assert int(failed_total[0].split()[1]) >= 2
    assert hub.token("culler") not in daemon.log() + text


def test_once_exits_non_zero_when_the_hub_cannot_be_reached(tmp_path):
    class Gone:  # a hub that never was: nothing listens on its port
        api_url = "http://127.0.0.1:9/hub/api"

        @staticmethod
        def token(service):
            return "a-token-of-enough-length-0123456789"

    run = run_once(Gone, "culler", tmp_path, "--timeout", "3", "--request-timeout", "1")
    assert run.returncode == 1
    [failed] = run.lines('msg="pass failed"')
    assert "Connection refused" in failed
    assert run.status["ok"] is False


@pytest.mark.parametrize("version", ["4", "5", "6"])
def test_culls_on_every_supported_hub_version(start_hub, tmp_path, version):
    config = """
c.JupyterHub.allow_named_servers = True
c.JupyterHub.tornado_settings = {"slow_stop_timeout": 1}
c.ResponderSpawner.stop_delays = {"slow": 3}
"""
    hub = start_hub(services(), config, spawner="responder", version=version)
    hub.create_users(["idle", "slow", "named", "busy"], "admin")
    hub.start_servers(["idle", "slow", "busy"], "admin")
    hub.start_servers(["named"], "admin", server_name="lab")
    import requests

    requests.put(hub.responder_url("/_responder/users/busy/kernels"),
                 json=[{"id": "k", "execution_state": "busy"}], timeout=5).raise_for_status()
    time.sleep(TIMEOUT + 0.5)

    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT))

    assert run.returncode == 0, run.log
    results = {d["target"]: d["result"] for d in run.status["decisions"]}
    assert results == {"idle": "culled", "slow": "culled", "named/lab": "culled",
                       "busy": "kept-busy"}, run.log  # fmt: skip
    assert not running(hub, "idle") and not running(hub, "slow")
    assert not running(hub, "named", "lab") and running(hub, "busy")
