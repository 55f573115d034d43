# hub-sidecars culler, hub side: paste into jupyterhub_config.py after your own
# c.JupyterHub.services and c.JupyterHub.load_roles (it appends to both), or load it from there:
#   exec(open("/opt/hub-sidecars/share/doc/hub-sidecars/jupyterhub_config_culler.py").read())
#
# Two ways to run the culler; pick one, never both against the same hub:
#
# 1. hub-culler.service (systemd, the suite's default). The hub only grants the scopes: keep the
#    role below, set HUB_MANAGED = False, give the service a token of its own (api_token) and
#    put the same token in /etc/hub-sidecars/hub-api-token (mode 0600, root); the unit hands it
#    over as the credential hub-api-token. Settings go in /etc/hub-sidecars/culler.toml.
#
# 2. A hub-managed service (HUB_MANAGED = True, as jupyterhub-idle-culler usually runs): the hub
#    starts `hub-culler` itself, restarts it when it exits, and gives it JUPYTERHUB_API_TOKEN and
#    JUPYTERHUB_API_URL in its environment (the token never shows in argv). Its log lines go to
#    the hub's log. The test suite runs this file against a real JupyterHub
#    (tests/e2e/test_culler_hub_service.py).
HUB_MANAGED = True
# Where scripts/install puts the command.
HUB_CULLER = "/opt/hub-sidecars/bin/hub-culler"
# The proxy's public URL as seen from this machine. The culler asks each server it is about to
# stop whether a kernel is still busy (GET {server}api/kernels), through the proxy; the hub gives
# a managed service only its own internal API URL, which does not route to users' servers.
PUBLIC_URL = "http://127.0.0.1:8000"
# A server idle this long is stopped; idle-culler's option names and defaults otherwise.
TIMEOUT = "1h"
CULL_EVERY = "10m"
# The last pass's result as JSON. Empty: none. The default, /var/lib/hub-sidecars/culler/
# status.json, belongs to hub-culler.service (StateDirectory=); a culler the hub starts runs as
# the hub's user, who usually cannot write there, and the pass summaries are in the hub's log
# anyway. Give an absolute path the hub's user can write to keep one.
STATUS_FILE = ""
# When the culler last asked each server about its kernels (those questions count as activity
# to the hub, and the culler must not take them for a user's after a restart). Same story: the
# default lives in the unit's state directory; empty keeps it in memory, which is enough for a
# daemon the hub keeps running.
PROBE_STATE_FILE = ""

# The minimal scopes for stopping idle servers, and why each:
CULLER_SCOPES = [
    "list:users",  # list users and their servers
    "read:users:activity",  # last_activity of users and servers
    "read:servers",  # server state (ready, pending, started, url)
    "delete:servers",  # stop servers (and remove named servers with --remove-named-servers)
    # ask a server about its kernels before stopping it (--check-kernels): the question carries
    # a 1-minute token of the server's own user, made and revoked by the culler, never the
    # culler's token (a user reads whatever reaches their server). `tokens!group=students`
    # narrows it to the users the culler may check.
    "tokens",
    # Add these only for the options that need them:
    # "read:users",  # a user's `created` date: --cull-users and a users' --max-age
    # "delete:users",  # --cull-users
    # "read:groups",  # --exclude-groups, and per-group rules ([groups.NAME] in the --config file)
]
# Without read:users the hub hides a user's `created`, so --max-age cannot apply to users;
# without tokens the kernel check falls back to the hub's activity (a server whose
# kernel still computes with no browser open is then stopped), and the culler says so once in
# its log.

if HUB_MANAGED:
    c.JupyterHub.services.append(  # noqa: F821 - `c` is JupyterHub's config
        {
            "name": "culler",
            "command": [
                HUB_CULLER,
                f"--timeout={TIMEOUT}",
                f"--cull-every={CULL_EVERY}",
                f"--public-url={PUBLIC_URL}",
                f"--status-file={STATUS_FILE}",
                f"--probe-state-file={PROBE_STATE_FILE}",
            ],
        }
    )
else:
    c.JupyterHub.services.append(  # noqa: F821
        # The token hub-culler.service reads from /etc/hub-sidecars/hub-api-token (make one with
        # `openssl rand -hex 32`). Read here as the hub runs as root; a hub running as another
        # user gets a copy of its own, readable by that user only.
        {"name": "culler", "api_token": open("/etc/hub-sidecars/hub-api-token").read().strip()}
    )
c.JupyterHub.load_roles.append(  # noqa: F821
    {"name": "hub-culler", "scopes": CULLER_SCOPES, "services": ["culler"]}
)
