"""`hub-culler`: the culler daemon (or one pass with --once)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from urllib.parse import urlsplit

from culler import group_rules
from culler import settings as culler_settings
from culler.daemon import CullerJob
from culler.hubpass import HubCuller, HubOptions
from culler.instance import hold_instance_lock, lock_path
from culler.policy import Policy
from hubsidecars import suite_version
from hubsidecars.cli_main import run_main
from hubsidecars.config import (
    ConfigError,
    GenerateConfig,
    SettingsParser,
    add_options,
    load_settings,  # fmt: skip
)
from hubsidecars.config import config_file as config_file_to_read
from hubsidecars.hubapi import HubError
from hubsidecars.hubsettings import HUB_URL_ENV, hub_client
from hubsidecars.logs import log_event, setup_logging
from hubsidecars.notify import Notifier
from hubsidecars.periodic import PeriodicRunner

log = logging.getLogger("culler")

DESCRIPTION = """\
Stop idle JupyterHub servers through the hub's API (never one whose kernels are still
working), and idle or orphaned user containers and Swarm services through Docker (--docker).
The hub options carry jupyterhub-idle-culler's names and defaults. Every option can also be
set in the TOML file given with --config or in the environment variable shown; the hub API
token comes from --token-file, the systemd credential hub-api-token, or $JUPYTERHUB_API_TOKEN.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = SettingsParser(prog="hub-culler", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {suite_version()}")
    parser.add_argument("--generate-config", action=GenerateConfig,
                        render=culler_settings.example_config)  # fmt: skip
    add_options(parser, culler_settings.CullerSettings, culler_settings.ENV_PREFIX)
    return parser


def build_hub(settings: culler_settings.CullerSettings, config_file: str = "") -> HubCuller:
    client = hub_client(settings, public_url=settings.public_url,
                        pool_size=max(10, (settings.concurrency or 256) + 2))  # fmt: skip
    return HubCuller(client, Policy.from_settings(settings),
                     HubOptions.from_settings(settings, config_file))  # fmt: skip


def build_docker(settings: culler_settings.CullerSettings):
    from culler.docker.backend import DockerCuller, connect_docker

    return DockerCuller(connect_docker(settings), settings, logger=logging.getLogger("culler.docker"))


def public_url_is_the_hubs_own(settings, environ) -> str:
    """Why the public URL (where servers are asked about their kernels) is the hub API's own
    address rather than the proxy's, or "" when nothing says so. Only when --public-url is
    unset: it then defaults to the origin of --url, and JupyterHub hands its services the
    hub's own API address in $JUPYTERHUB_API_URL (port 8081 by default), never the proxy's."""
    if settings.public_url:
        return ""
    origin = _origin(settings.url)
    if environ.get(HUB_URL_ENV) and _origin(environ[HUB_URL_ENV]) == origin:
        return f"--url is ${HUB_URL_ENV}, which JupyterHub sets to the hub's own address"
    if urlsplit(settings.url).port == 8081:
        return "--url is on port 8081, the hub's own port by default (the proxy's is 8000)"
    return ""


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def run(settings: culler_settings.CullerSettings, config_file: str = "") -> int:
    # A dry run changes nothing, its own state files included: it may run beside the daemon.
    lock = None if settings.dry_run else lock_path(
        settings.probe_state_file if settings.hub else "", settings.status_file,
        settings.docker_state_file if settings.docker else "",
    )  # fmt: skip
    if lock:
        hold_instance_lock(lock)
    hub = build_hub(settings, config_file) if settings.hub else None
    docker = build_docker(settings) if settings.docker else None
    if hub is not None:
        try:
            version = hub.client.version()
        except HubError as error:  # the hub may come later; every pass tries again
            version = f"unknown ({error})"
        log_event(log, "hub", url=settings.url, version=version,
                  public_url=hub.client.public_url,
                  check_kernels=settings.check_kernels)  # fmt: skip
        own = public_url_is_the_hubs_own(settings, os.environ)
        if own and settings.check_kernels:
            log_event(log, "the public URL is the hub API's own address, not the proxy's: "
                      "questions to users' servers will reach the hub, which redirects them, "
                      "and servers are kept unasked up to --max-busy; set --public-url to the "
                      "proxy's address", logging.WARNING, public_url=hub.client.public_url,
                      why=own)  # fmt: skip
    log_event(log, "policy", timeout=settings.timeout, cull_every=settings.cull_every,
              max_age=settings.max_age, cull_users=settings.cull_users,
              concurrency=settings.concurrency, dry_run=settings.dry_run,
              docker=settings.docker, exclude_users=json.dumps(list(settings.exclude_users)),
              exclude_groups=json.dumps(list(settings.exclude_groups)))  # fmt: skip
    job = CullerJob(hub=hub, docker=docker, dry_run=settings.dry_run,
                    status_file=settings.status_file, metrics_file=settings.metrics_file)  # fmt: skip
    runner = PeriodicRunner(job, settings.cull_every, name="pass",
                            notifier=Notifier.from_environment(), logger=log)  # fmt: skip
    return runner.run_once() if settings.once else runner.run_forever()


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), dispatch, argv)


def dispatch(args: dict) -> int:
    loaded = load_settings(culler_settings.CullerSettings, culler_settings.ENV_PREFIX, args,
                           sections=(group_rules.SECTION,))  # fmt: skip
    config_file = config_file_to_read(culler_settings.ENV_PREFIX, args) or ""
    rules = group_rules.read_group_rules(config_file)  # a wrong rule: exit 2 at start
    if rules and not loaded.hub:
        raise ConfigError("[groups] rules need the hub backend (they are hub groups)")
    shortest = min([r.timeout for r in rules.values() if r.timeout], default=loaded.timeout)
    if not loaded.cull_every and shortest < loaded.timeout:
        # half the shortest timeout, a group's included (idle-culler: half of --timeout)
        loaded = dataclasses.replace(loaded, cull_every=max(1.0, float(int(shortest) // 2)))
    settings = culler_settings.resolve(loaded)
    setup_logging(settings.log_format, settings.log_level)
    return run(settings, config_file)


if __name__ == "__main__":
    sys.exit(main())
