"""`hub-stats`: the collector daemon; `export`, `serve` and `charts` for the analyst."""

from __future__ import annotations

import argparse
import logging
import sys

from hubsidecars import suite_version
from hubsidecars.cli_main import run_main
from hubsidecars.config import (
    ConfigError,
    GenerateConfig,
    SettingsParser,
    add_commands,
    add_options,  # fmt: skip
    load_settings,
)
from hubsidecars.logs import log_event, setup_logging
from hubsidecars.notify import Notifier
from hubsidecars.periodic import PeriodicRunner
from stats import settings as stats_settings

log = logging.getLogger("stats")

DESCRIPTION = """\
Record who is active on a JupyterHub into activity.sqlite (hub-stats, the collector daemon;
--once for one poll), and hand it to analysts: `hub-stats export`, `hub-stats serve`,
`hub-stats charts`. Every option can also be set in the TOML file given with --config or in
the environment variable shown.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = SettingsParser(prog="hub-stats", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {suite_version()}")
    parser.add_argument("--generate-config", action=GenerateConfig,
                        render=stats_settings.example_config)  # fmt: skip
    add_options(parser, stats_settings.StatsSettings, stats_settings.ENV_PREFIX)
    # no command: the collector (`hub-stats --config FILE` runs it, as the unit does)
    command = add_commands(parser, stats_settings.StatsSettings, stats_settings.ENV_PREFIX)
    command("collect", help="the collector daemon (the default)")
    export = command(
        "export", help="write a consistent snapshot of the database (or its views as CSV)",
        description="Write a consistent copy of --db to OUT.sqlite while the collector may be "
        "writing; with --csv DIR, every view as DIR/VIEW.csv instead.",
    )  # fmt: skip
    export.add_argument("out", nargs="?", metavar="OUT.sqlite")
    export.add_argument("--csv", metavar="DIR", help="write each view as CSV into DIR")
    command("serve", help="serve the file, the views as CSV, /stats.json and the charts page")
    charts = command("charts", help="draw the charts into image files")
    charts.add_argument("out_dir", metavar="OUT_DIR")
    charts.add_argument("--format", choices=("png", "svg"), default="png")
    return parser


def collect(settings: stats_settings.StatsSettings) -> int:
    from hubsidecars.hubsettings import hub_client
    from stats.collector import Collector

    client = hub_client(settings)
    containers = None
    if settings.docker:
        from stats.containers import ContainerSampler

        containers = ContainerSampler.from_settings(settings)
    collector = Collector(client, settings.db, settings.interval, groups=settings.groups,
                          containers=containers,
                          culler_footprints=settings.culler_footprints)  # fmt: skip
    log_event(log, "collecting", url=settings.url, db=settings.db, interval=settings.interval,
              docker=settings.docker)  # fmt: skip
    runner = PeriodicRunner(collector, settings.interval, name="poll",
                            notifier=Notifier.from_environment(), logger=log)  # fmt: skip
    return runner.run_once() if settings.once else runner.run_forever()


def export(settings, out: str | None, csv_dir: str | None) -> int:
    from stats import export as exporting

    if bool(out) == bool(csv_dir):
        raise ConfigError("export needs OUT.sqlite or --csv DIR (one of them)")
    if csv_dir:
        written = exporting.export_csv(settings.db, csv_dir)
        print(f"wrote {len(written)} views as CSV into {csv_dir}")
    else:
        exporting.export_snapshot(settings.db, out)
        print(f"wrote a snapshot of {settings.db} to {out}")
    return 0


def serve(settings) -> int:
    from stats.web import serve as serving

    return serving(settings)


def charts(settings, out_dir: str, image_format: str) -> int:
    from stats.charts import render_charts

    written = render_charts(settings.db, out_dir, image_format=image_format)
    for path in written:
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), dispatch, argv)


def dispatch(args: dict) -> int:
    command = args.pop("command", None) or "collect"
    settings = stats_settings.resolve(
        load_settings(stats_settings.StatsSettings, stats_settings.ENV_PREFIX, args),
        needs_hub=command == "collect",
    )
    setup_logging(settings.log_format, settings.log_level)
    if command == "collect":
        return collect(settings)
    if command == "export":
        return export(settings, args.get("out"), args.get("csv"))
    if command == "serve":
        return serve(settings)
    return charts(settings, args["out_dir"], args.get("format") or "png")


if __name__ == "__main__":
    sys.exit(main())
