# hub-sidecars restuser, hub side: paste into jupyterhub_config.py (or load it from there with
#   exec(open("/opt/hub-sidecars/share/doc/hub-sidecars/jupyterhub_config_restuser.py").read())
# ). Before every spawn the hub asks hub-restuser to make sure the system account exists, then
# hands the account's uid, gid and home to the spawner. The test suite runs this file verbatim
# against a real JupyterHub (tests/e2e/test_hub_restuser.py).
import asyncio
import http.client
import json
import socket
from urllib.parse import quote

from tornado import web

# Where hub-restuser.socket listens. The hub must run as root or in the socket's group.
RESTUSER_SOCKET = "/run/hub-restuser/restuser.sock"
# Where the homes restuser reports are visible from this hub: "" on the same machine. (The
# tests run restuser with --prefix DIR and set this to DIR.)
RESTUSER_HOME_ROOT = ""


class _RestuserConnection(http.client.HTTPConnection):
    """HTTP over restuser's unix socket."""

    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def restuser_ensure_account(name):
    """POST /users/{name}: the account, created if needed. Raises a 4xx/5xx tornado error."""
    connection = _RestuserConnection(RESTUSER_SOCKET)
    try:
        connection.request("POST", "/users/" + quote(name, safe=""))
        response = connection.getresponse()
        body = json.loads(response.read() or b"{}")
    except (OSError, ValueError) as error:
        raise web.HTTPError(503, f"account service failed at {RESTUSER_SOCKET}: {error}") from None
    finally:
        connection.close()
    if response.status not in (200, 201):
        status = 403 if response.status in (400, 403) else 503
        raise web.HTTPError(status, f"no account for {name!r}: {body.get('description', body)}")
    return body


async def restuser_pre_spawn_hook(spawner):
    account = await asyncio.to_thread(restuser_ensure_account, spawner.user.name)
    home = RESTUSER_HOME_ROOT.rstrip("/") + account["home"]
    spawner.log.info("restuser: %s has uid %s, home %s", account["name"], account["uid"], home)
    # For images that switch user themselves (docker-stacks and friends).
    spawner.environment.update(
        {"NB_USER": account["name"], "NB_UID": str(account["uid"]), "NB_GID": str(account["gid"])}
    )
    spawner.notebook_dir = home
    if hasattr(spawner, "home_dir_template"):  # SimpleLocalProcessSpawner
        spawner.home_dir_template = home
    # LocalProcessSpawner looks the account up by name itself once it exists; DockerSpawner
    # users mount the home, e.g.: spawner.volumes = {home: f"/home/{account['name']}"}


c.Spawner.pre_spawn_hook = restuser_pre_spawn_hook  # noqa: F821 - `c` is JupyterHub's config
