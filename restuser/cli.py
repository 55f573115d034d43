"""`hub-restuser`: serve the API, or prepare a scratch root for --prefix; and the build step
that turns the settings into the account store."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hubsidecars import suite_version
from hubsidecars.cli_main import run_main
from hubsidecars.config import (
    ConfigError,
    GenerateConfig,
    SettingsParser,
    add_commands,
    load_settings,  # fmt: skip
)
from hubsidecars.logs import log_event, setup_logging
from hubsidecars.secrets import read_bearer_token
from hubsidecars.serving import checked_listeners, run_server
from restuser import settings as restuser_settings
from restuser.accounts import AccountStore
from restuser.app import create_app
from restuser.home import HomeBuilder
from restuser.names import NamePolicy
from restuser.prefix import init_prefix
from restuser.useradd import UserAdd

log = logging.getLogger("restuser")


def build_parser() -> argparse.ArgumentParser:
    parser = SettingsParser(
        prog="hub-restuser",
        description="Make sure system accounts exist for JupyterHub users, over a small REST API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {suite_version()}")
    parser.add_argument("--generate-config", action=GenerateConfig,
                        render=restuser_settings.example_config)  # fmt: skip
    parser.deprecated_commands = {"example-config": "--generate-config"}
    command = add_commands(parser, restuser_settings.RestuserSettings,
                           restuser_settings.ENV_PREFIX, required=True)  # fmt: skip
    command(
        "serve",
        help="serve the API under gunicorn",
        description="Serve the restuser API. Every option can also be set in the TOML file "
        "given with --config or in the environment variable shown.",
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


def build_store(settings: restuser_settings.RestuserSettings) -> AccountStore:
    """The build step: the account store (name policy, useradd, homes, lock) the settings
    describe. Each gunicorn worker builds its own."""
    skel = Path(settings.skel).resolve()
    useradd = UserAdd(
        skel=skel,
        home_pattern=settings.home_pattern,
        shell=settings.shell,
        uid_min=settings.uid_min,
        uid_max=settings.uid_max,
        groups=settings.groups,
        prefix=Path(settings.prefix).resolve() if settings.prefix else None,
    )
    state = restuser_settings.state_dir(settings)
    try:
        return AccountStore(
            policy=NamePolicy(settings.name_pattern, settings.deny_names),
            useradd=useradd,
            home=HomeBuilder(skel, settings.home_mode),
            state_dir=state,
            lock_timeout=settings.lock_timeout,
            existing_home=settings.existing_home,
        )
    except OSError as error:
        raise ConfigError(f"cannot create state directory {state}: {error.strerror}") from None


def serve(cli_values: dict) -> int:
    settings = restuser_settings.resolve(
        load_settings(restuser_settings.RestuserSettings, restuser_settings.ENV_PREFIX, cli_values)
    )
    setup_logging(settings.log_format, settings.log_level)
    token = read_bearer_token(settings.token_file, restuser_settings.TOKEN_CREDENTIAL)
    listeners = checked_listeners(settings.bind, token, settings.allow_remote,
                                  token_flag="--token-file",
                                  credential=restuser_settings.TOKEN_CREDENTIAL)  # fmt: skip
    for problem in build_store(settings).problems():
        log_event(log, "cannot create accounts until fixed; /healthz answers 503", logging.WARNING,
                  problem=problem)  # fmt: skip

    def app_factory():
        return create_app(build_store(settings), token, creator_threads=settings.threads)

    return run_server(app_factory, listeners, settings, proc_name="hub-restuser", logger=log,
                      token=token, prefix=settings.prefix or "/", skel=settings.skel)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), dispatch, argv)


def dispatch(args: dict) -> int:
    command = args.pop("command")
    if command == "init-prefix":
        init_prefix(Path(args["dir"]))
        print(f"created {args['dir']}/etc/{{passwd,group,shadow,gshadow}} and {args['dir']}/home")
        return 0
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
