# JupyterHub configuration of ./scripts/demo (which sets the HUB_SIDECARS_DEMO_* variables read
# here): a hub on 127.0.0.1 with the dummy authenticator (any name, any password) and real
# jupyter_server processes per user (SimpleLocalProcessSpawner), every file in the demo's scratch
# directory. The sidecars are wired in with the documented snippets, read from docs/ as an admin
# would paste them, with only the values an admin edits changed:
# - docs/jupyterhub_config_restuser.py: the pre-spawn hook that asks hub-restuser (on the
#   demo's socket, accounts under its --prefix root) for the account;
# - docs/jupyterhub_config_culler.py with HUB_MANAGED = False: the culler is a process of its
#   own, as hub-culler.service is, with its own token and the documented role.
# hub-stats (the collector) is a service of its own too, with a token and a read-only role.
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRATCH = Path(os.environ["HUB_SIDECARS_DEMO_DIR"])
HUB_STATE = SCRATCH / "hub"
# Seconds between the hub's looks at the proxy's and the servers' activity (300 by default): a
# demo whose culler timeout is a couple of minutes needs the hub to see activity sooner.
ACTIVITY_INTERVAL = int(os.environ.get("HUB_SIDECARS_DEMO_ACTIVITY_INTERVAL", "30"))


def demo_port(name):
    return int(os.environ[f"HUB_SIDECARS_DEMO_{name}"])


def documented_snippet(name, constants, replacements=()):
    """docs/NAME as an admin would paste it, with some one-line constants set to Python
    expressions and some literal texts replaced; fails loudly when the snippet has changed so
    that one of them is no longer there."""
    text = (REPO / "docs" / name).read_text()
    for constant, expression in constants.items():
        line = re.compile(rf"^{constant} = .*$", re.MULTILINE)
        if len(line.findall(text)) != 1:
            raise RuntimeError(
                f"docs/{name}: {constant} is not one line any more; update {__file__}"
            )
        text = line.sub(f"{constant} = {expression}".replace("\\", "\\\\"), text)
    for old, new in replacements:
        if old not in text:
            raise RuntimeError(f"docs/{name}: {old} is not there any more; update {__file__}")
        text = text.replace(old, new)
    return text


c = get_config()  # noqa: F821 - JupyterHub's config loader provides get_config

c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = demo_port("PORT")
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = demo_port("HUB_PORT")
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{demo_port('PROXY_API_PORT')}"
c.ConfigurableHTTPProxy.command = [str(REPO / "node_modules" / ".bin" / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(HUB_STATE / "proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{HUB_STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(HUB_STATE / "cookie_secret")
c.JupyterHub.pid_file = str(HUB_STATE / "jupyterhub.pid")
c.JupyterHub.last_activity_interval = ACTIVITY_INTERVAL

c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True

c.JupyterHub.spawner_class = "simple"
# The restuser hook replaces this with the account's home under the --prefix root.
c.SimpleLocalProcessSpawner.home_dir_template = str(SCRATCH / "homes" / "{username}")
# jupyterhub-singleuser of the venv with JupyterLab that ./scripts/demo makes.
c.Spawner.cmd = [os.environ["HUB_SIDECARS_DEMO_SINGLEUSER"]]
# The demo hub runs as root and this spawner does not switch users (a real deployment's does).
c.Spawner.args = ["--allow-root"]
c.Spawner.environment = {"JUPYTERHUB_ACTIVITY_INTERVAL": str(ACTIVITY_INTERVAL)}
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 90

# As docs/ suggests loading them from jupyterhub_config.py: exec.
exec(  # noqa: S102
    documented_snippet(
        "jupyterhub_config_restuser.py",
        {
            "RESTUSER_SOCKET": repr(str(SCRATCH / "restuser.sock")),
            "RESTUSER_HOME_ROOT": repr(str(SCRATCH / "root")),
        },
    ),
    {"c": c},
)

c.JupyterHub.services = []
c.JupyterHub.load_roles = []
exec(  # noqa: S102
    documented_snippet(
        "jupyterhub_config_culler.py",
        {"HUB_MANAGED": "False"},
        [('"/etc/hub-sidecars/hub-api-token"', repr(str(SCRATCH / "culler.token")))],
    ),
    {"c": c},
)

# hub-stats, as hub-stats.service runs: a process of its own (started by ./scripts/demo) with a
# token of its own, and only the scopes a full recording needs, all read-only.
STATS_SCOPES = [
    "list:users",  # list users and their servers
    "read:users",  # admin flag and created date
    "read:users:activity",  # last_activity of users and servers
    "read:servers",  # server state (ready, pending, started)
    "list:groups",  # list groups
    "read:groups",  # their members
]
c.JupyterHub.services.append(
    {"name": "stats", "api_token": (SCRATCH / "stats-hub.token").read_text().strip()}
)
c.JupyterHub.load_roles.append({"name": "hub-stats", "scopes": STATS_SCOPES, "services": ["stats"]})
