"""Hub groups and the culler, against a real JupyterHub's groups: names the culler must quote
in a URL or split with care (`ta#x`, `@sum(1,2)`), and per-group policies from the TOML file
(a GPU group culled sooner, a course's TAs never, a research group after longer), re-read
every pass, the most lenient rule winning for a user in several groups.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import pytest

from realparts.culler import CULLER_SCOPES, CullerDaemon, run_once
from realparts.hub import HubService
from realparts.waiting import wait_until

pytestmark = pytest.mark.realhub

TIMEOUT = 3
CONFIG = """
c.JupyterHub.allow_named_servers = True
c.JupyterHub.last_activity_interval = 2
"""


@pytest.fixture(scope="module")
def hub(start_module_hub):
    return start_module_hub([
        HubService("admin", ["admin:users", "admin:servers", "access:servers", "admin:groups"]),
        HubService("culler", [*CULLER_SCOPES, "read:groups"]),
    ], CONFIG, spawner="responder")  # fmt: skip


def group(hub, name: str, members: list[str]) -> None:
    path = f"/groups/{quote(name, safe='')}"
    if hub.api("GET", path, "admin").status_code == 404:
        reply = hub.api("POST", path, "admin", json={"users": members})
        assert reply.status_code == 201, reply.text
    else:
        hub.api("POST", f"{path}/users", "admin", json={"users": members}).raise_for_status()


def user(hub, name: str, server: str = "") -> None:
    path = f"/users/{quote(name, safe='')}"
    if hub.api("GET", path, "admin").status_code == 404:
        reply = hub.api("POST", path, "admin")
        assert reply.status_code == 201, (name, reply.text)
    suffix = f"/servers/{quote(server, safe='')}" if server else "/server"
    reply = hub.api("POST", f"{path}{suffix}", "admin")
    assert reply.status_code in (201, 202), (name, reply.text)
    hub.wait_ready([name], "admin", server)


def running(hub, name: str, server: str = "") -> bool:
    model = hub.api("GET", f"/users/{quote(name, safe='')}", "admin").json()
    return server in model.get("servers", {})


def decisions(run) -> dict[str, str]:
    return {d["target"]: d["result"] for d in run.status["decisions"]}


def reasons(run) -> dict[str, str]:
    return {d["target"]: d["reason"] for d in run.status["decisions"]}


# -- names in URLs and lists (finding 4) ------------------------------------------------------

ODD = "@sum(1,2)"


@pytest.fixture(scope="module")
def odd_names(hub):
    """tina is in `ta#x`, tom in `ta` (which `ta#x` used to be read as), sam in `@sum(1,2)`,
    and a user named `@sum(1,2)` too; all idle."""
    for name in ("tina", "tom", "sam", ODD):
        user(hub, name)
    group(hub, "ta#x", ["tina"])
    group(hub, "ta", ["tom"])
    group(hub, ODD, ["sam"])
    time.sleep(TIMEOUT + 0.5)
    return ["tina", "tom", "sam", ODD]


def _only(run, names) -> dict[str, str]:
    return {target: result for target, result in decisions(run).items() if target in names}


EXEMPT = {"tina": "skipped", "sam": "skipped", ODD: "skipped", "tom": "would-cull"}


def test_names_with_url_and_list_characters_work_on_the_command_line(hub, odd_names, tmp_path):
    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--dry-run",
                   "--exclude-groups", r"ta#x,@sum(1\,2)", "--exclude-users", r"@sum(1\,2)")  # fmt: skip
    assert run.returncode == 0, run.log
    assert _only(run, odd_names) == EXEMPT, run.log
    # the JSON form, for names holding any character
    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--dry-run",
                   "--exclude-groups", '["ta#x", "@sum(1,2)"]',
                   "--exclude-users", '["@sum(1,2)"]')  # fmt: skip
    assert _only(run, odd_names) == EXEMPT, run.log


def test_names_with_url_and_list_characters_work_in_the_environment(hub, odd_names, tmp_path):
    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--dry-run",
                   HUB_CULLER_EXCLUDE_GROUPS='["ta#x", "@sum(1,2)"]',
                   HUB_CULLER_EXCLUDE_USERS=r"@sum(1\,2)")  # fmt: skip
    assert run.returncode == 0, run.log
    assert _only(run, odd_names) == EXEMPT, run.log


def test_names_with_url_and_list_characters_work_in_the_toml_file(hub, odd_names, tmp_path):
    config = tmp_path / "culler.toml"
    config.write_text('exclude_groups = ["ta#x", "@sum(1,2)"]\nexclude_users = ["@sum(1,2)"]\n')
    run = run_once(hub, "culler", tmp_path, "--timeout", str(TIMEOUT), "--dry-run",
                   "--config", str(config))  # fmt: skip
    assert run.returncode == 0, run.log
    assert _only(run, odd_names) == EXEMPT, run.log


# -- per-group policies -----------------------------------------------------------------------

POLICY = """
timeout = "1h"

[groups.gpu]
timeout = "3s"
max_busy = "3s"

[groups.research]
timeout = "1d"

[groups.tas]
exempt = true
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_each_group_gets_its_own_rule_and_the_most_lenient_wins(hub, tmp_path):
    # gina: gpu only (and a named server); remy: gpu and research; tara: gpu and tas;
    # pat: no group (the file's timeout of an hour applies)
    for name in ("gina", "remy", "tara", "pat"):
        user(hub, name)
    user(hub, "gina", server="big")
    group(hub, "gpu", ["gina", "remy", "tara"])
    group(hub, "research", ["remy"])
    group(hub, "tas", ["tara"])
    time.sleep(TIMEOUT + 0.5)
    config = write(tmp_path / "culler.toml", POLICY)

    dry = run_once(hub, "culler", tmp_path, "--config", str(config), "--dry-run")
    assert dry.returncode == 0, dry.log
    mine = {"gina", "gina/big", "remy", "tara", "pat"}
    assert _only(dry, mine) == {"gina": "would-cull", "gina/big": "would-cull",
                                "remy": "active", "tara": "skipped", "pat": "active"}, dry.log  # fmt: skip
    why = reasons(dry)
    assert "timeout 0:00:03" in why["gina"] and "group gpu" in why["gina"]
    assert "group gpu" in why["gina/big"]  # a named server follows its user's groups
    assert "most lenient" in why["remy"] and "research" in why["remy"]
    assert "24:00:00" in why["remy"]
    assert "exempt" in why["tara"] and "group tas" in why["tara"]
    # the dry run says the rule of each decision in its log too
    assert any("group gpu" in line for line in dry.lines("target=gina"))

    run = run_once(hub, "culler", tmp_path, "--config", str(config))
    assert run.returncode == 0, run.log
    assert _only(run, mine) == {"gina": "culled", "gina/big": "culled", "remy": "active",
                                "tara": "skipped", "pat": "active"}, run.log  # fmt: skip
    assert not running(hub, "gina") and not running(hub, "gina", "big")
    assert running(hub, "remy") and running(hub, "tara") and running(hub, "pat")


def test_the_group_rules_are_read_again_every_pass(hub, tmp_path):
    user(hub, "ruth")
    group(hub, "slow", ["ruth"])
    config = write(tmp_path / "culler.toml", '[groups.slow]\ntimeout = "1h"\n')
    time.sleep(TIMEOUT + 0.5)
    daemon = CullerDaemon(hub, "culler", tmp_path, "--config", str(config), "--timeout",
                          str(TIMEOUT), "--cull-every", "1", "--exclude-users",
                          "gina,remy,tara,pat,tina,tom,sam,@sum(1\\,2)")  # fmt: skip
    daemon.start()
    try:
        wait_until(lambda: daemon.status_file.exists() and "ruth" in decisions_of(daemon), 30,
                   daemon.log)
        assert decisions_of(daemon)["ruth"] == "active", daemon.log()
        write(config, '[groups.slow]\ntimeout = "2s"\n')
        wait_until(lambda: not running(hub, "ruth"), 30, daemon.log)
        # a broken edit stops culling (one error per pass) rather than culling by wrong rules
        write(config, '[groups.slow]\ntimeout = "soon"\n')
        user(hub, "ruth")
        wait_until(lambda: "group" in " ".join(daemon.status().get("errors", [])), 30,
                   "an error naming the group in the status file")
    finally:
        daemon.stop()
    assert running(hub, "ruth")


def decisions_of(daemon) -> dict[str, str]:
    try:
        return {d["target"]: d["result"] for d in daemon.status()["decisions"]}
    except (ValueError, KeyError):
        return {}


def test_a_group_rule_in_the_file_is_checked_at_start(hub, tmp_path):
    config = write(tmp_path / "culler.toml", '[groups.gpu]\ntimeout = "3s"\nbogus = 1\n')
    run = run_once(hub, "culler", tmp_path, "--config", str(config))
    assert run.returncode == 2, run.log
    assert "bogus" in run.log and "Traceback" not in run.log
