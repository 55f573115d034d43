"""`hub-restuser`: serve the API, or prepare a scratch root for --prefix."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from hubsidecars import suite_version
from hubsidecars.cli_main import run_main
from hubsidecars.config import SettingsParser, add_commands, load_settings
from hubsidecars.listeners import check_listeners, describe, parse_bind, systemd_listeners
from hubsidecars.logs import log_event, setup_logging
from hubsidecars.serving import GunicornServer, server_options
from restuser import settings as restuser_settings
from restuser.app import create_app
from restuser.prefix import init_prefix

log = logging.getLogger("restuser")


def build_parser() -> argparse.ArgumentParser:
    parser = SettingsParser(
        prog="hub-restuser",
        description="Make sure system accounts exist for JupyterHub users, over a small REST API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {suite_version()}")
    command = add_commands(parser, restuser_settings.RestuserSettings,
                           restuser_settings.ENV_PREFIX, required=True)  # fmt: skip
    command(
        "serve",
        help="serve the API under gunicorn",
        description="Serve the restuser API. Every option can also be set in the TOML file "
        "given with --config or in the environment variable shown.",
    )
    command(
        "example-config",
        help="print the example configuration file, every setting with its default",
        description="Print units/restuser.toml.example, generated from the settings' "
        "declarations: hub-restuser example-config > /etc/hub-sidecars/restuser.toml",
        settings=False,
    )
    init = command(
        "init-prefix",
        help="create a scratch root for --prefix holding this host's system accounts",
        description="Create DIR/etc/{passwd,group,shadow,gshadow} with the host's system "
        "accounts (uid/gid below 1000 and nobody) and an empty DIR/home, so that "
        "'serve --prefix DIR' can create accounts without touching the host.",
        settings=False,
    )
    init.add_argument("dir", metavar="DIR")
    return parser


def serve(cli_values: dict) -> int:
    settings = restuser_settings.validate(
        load_settings(restuser_settings.RestuserSettings, restuser_settings.ENV_PREFIX, cli_values)
    )
    setup_logging(settings.log_format, settings.log_level)
    token = restuser_settings.read_token(settings)
    listeners = systemd_listeners(os.environ) or [parse_bind(settings.bind)]
    check_listeners(listeners, token, settings.allow_remote,
                    f"give --token-file or a '{restuser_settings.TOKEN_CREDENTIAL}' systemd credential")  # fmt: skip

    store = restuser_settings.build_store(settings)
    for problem in store.problems():
        log_event(log, "cannot create accounts until fixed; /healthz answers 503", logging.WARNING,
                  problem=problem)  # fmt: skip
    log_event(log, "starting", listen=describe(listeners), prefix=settings.prefix or "/",
              skel=settings.skel, workers=settings.workers, token="yes" if token else "no")  # fmt: skip

    def app_factory():
        store = restuser_settings.build_store(settings)
        return create_app(store, token, creator_threads=settings.threads)

    options = server_options(
        listeners, proc_name="hub-restuser", workers=settings.workers,
        log_level=settings.log_level, access_log=settings.access_log,
        socket_mode=settings.socket_mode, socket_group=settings.socket_group, logger=log,
    )  # fmt: skip
    GunicornServer(app_factory, options, header_timeout=settings.header_timeout).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), dispatch, argv)


def dispatch(args: dict) -> int:
    command = args.pop("command")
    if command == "init-prefix":
        init_prefix(Path(args["dir"]))
        print(f"created {args['dir']}/etc/{{passwd,group,shadow,gshadow}} and {args['dir']}/home")
        return 0
    if command == "example-config":
        print(restuser_settings.example_config(), end="")
        return 0
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
