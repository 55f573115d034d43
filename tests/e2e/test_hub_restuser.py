"""A real JupyterHub using the documented snippet: login, spawn, account made by restuser."""

from __future__ import annotations

import stat

import pytest

from realparts.accountdb import accounts
from realparts.hub import HubService
from realparts.restuser import REPO, UID_MAX, UID_MIN

SNIPPET = (REPO / "docs" / "jupyterhub_config_restuser.py").read_text()
pytestmark = pytest.mark.realhub


@pytest.fixture
def hub_with_restuser(start_restuser, start_hub, prefix_root):
    restuser = start_restuser()
    admin = HubService("tests", ["admin:users", "admin:servers", "access:servers"])
    overrides = f"\nRESTUSER_SOCKET = {restuser.endpoint.unix!r}\nRESTUSER_HOME_ROOT = {str(prefix_root)!r}\n"
    # real single-user servers: the test reads the home through the notebook server's API
    hub = start_hub([admin], extra_config=SNIPPET + overrides, spawner="simple")
    yield hub, restuser
    for user in hub.list_users("tests", state="active"):
        hub.api("DELETE", f"/users/{user['name']}/server", "tests")


def test_login_and_spawn_creates_the_account(hub_with_restuser, prefix_root):
    hub, restuser = hub_with_restuser
    assert "newstudent" not in accounts(prefix_root, UID_MIN, UID_MAX)

    session = hub.login("newstudent")
    spawn = session.get(f"{hub.url}/hub/spawn/newstudent", timeout=60)
    assert spawn.status_code == 200, spawn.text[:500]
    hub.wait_for_server("newstudent", "tests")

    uid, gid, home = accounts(prefix_root, UID_MIN, UID_MAX)["newstudent"]
    home_dir = prefix_root / home.lstrip("/")
    info = home_dir.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (uid, 0o700)
    assert "name=newstudent" in restuser.log() and "outcome=created" in restuser.log()

    # The running notebook server works in that home: it lists the welcome notebook from skel.
    contents = hub.request("GET", "/user/newstudent/api/contents", "tests")
    assert contents.status_code == 200, contents.text[:300]
    names = {item["name"] for item in contents.json()["content"]}
    assert "Welcome.ipynb" in names

    # A second spawn finds the account already there (200), with the same uid.
    hub.api("DELETE", "/users/newstudent/server", "tests")
    hub.api("POST", "/users/newstudent/server", "tests")
    hub.wait_for_server("newstudent", "tests")
    assert accounts(prefix_root, UID_MIN, UID_MAX)["newstudent"] == (uid, gid, home)


def test_refused_name_fails_the_spawn_with_a_clear_message(hub_with_restuser, prefix_root):
    hub, _ = hub_with_restuser
    before = (prefix_root / "etc/passwd").read_bytes()
    hub.api("POST", "/users/daemon", "tests")
    reply = hub.api("POST", "/users/daemon/server", "tests")
    # the snippet turns restuser's 403 (system account) into the hub's 403
    assert reply.status_code == 403, reply.text[:300]
    assert "no account for 'daemon'" in reply.json()["message"]
    assert (prefix_root / "etc/passwd").read_bytes() == before
