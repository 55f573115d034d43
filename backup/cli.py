"""`hub-backup run | cleanup | status | restore | verify | drill`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from backup import settings as backup_settings
from backup.build import build_jobs
from hubsidecars import suite_version
from hubsidecars.cli_main import run_main, say, unforeseen
from hubsidecars.commands import CommandError
from hubsidecars.config import GenerateConfig, SettingsParser, add_commands, load_settings
from hubsidecars.errors import Busy, ConfigError, Failed, SidecarError
from hubsidecars.logs import log_event, setup_logging

log = logging.getLogger("backup")

DESCRIPTION = """\
Encrypted duplicity backups of the user homes: one chain per home, an incremental every run,
a new full chain every full_every, cleanup keeping keep_full full chains, status, restore,
verify and a restore drill. Every option can also be set in the TOML file given with --config
(default /etc/hub-sidecars/backup.toml when it exists) or in the environment variable shown.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = SettingsParser(prog="hub-backup", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {suite_version()}")
    parser.add_argument("--generate-config", action=GenerateConfig,
                        render=backup_settings.example_config)  # fmt: skip
    command = add_commands(parser, backup_settings.BackupSettings, backup_settings.ENV_PREFIX)

    run = command("run", "back up every home: an incremental, or a new full when it is due")
    run.add_argument("users", nargs="*", metavar="USER", help="only these users")
    run.add_argument("--full", action="store_true", help="a new full chain for each home now, "
                     "whatever is due (after a scare, before a migration)")  # fmt: skip
    cleanup = command("cleanup", "keep the keep_full newest full chains per user, remove the "
                      "rest and duplicity's leftovers")  # fmt: skip
    cleanup.add_argument("users", nargs="*", metavar="USER", help="only these users")
    status = command("status", "per user: newest full, incrementals, last success and its age; "
                     "exit 1 when a chain needs a look: last success older than max_age, last "
                     "attempt failed, incomplete or killed, last drill failed")  # fmt: skip
    status.add_argument("--json", action="store_true", help="print JSON")
    restore = command("restore", "restore a user's home, or one path in it, into a staging "
                      "directory (never over live data unless --in-place)")  # fmt: skip
    restore.add_argument("user", metavar="USER")
    restore.add_argument("path", nargs="?", metavar="PATH", help="relative to the home")
    restore.add_argument("--time", metavar="T", help="as it was at T: an ISO 8601 date or time "
                         "(2026-11-20, 2026-11-20T08:00:00+01:00; local time without an "
                         "offset), an interval back from now (3D, 1h30m; s m h D W M Y), "
                         "seconds since the epoch, or now")  # fmt: skip
    restore.add_argument("--to", metavar="DIR", help="staging directory (must not exist or be "
                         "empty)")  # fmt: skip
    restore.add_argument("--in-place", action="store_true", help="replace the live files (the "
                         "current ones are moved aside first)")  # fmt: skip
    restore.add_argument("--previous-owner", action="store_true", help="allow a time from "
                         "before the home passed to another uid (those backups hold the "
                         "previous owner's files)")  # fmt: skip
    verify = command("verify", "compare every chain's latest backup with the homes")
    verify.add_argument("users", nargs="*", metavar="USER")
    drill = command("drill", "restore a sample of files of every chain and compare them with "
                    "the homes (content and mode)")  # fmt: skip
    drill.add_argument("users", nargs="*", metavar="USER")
    return parser


def print_status(rows: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'user':20} {'newest full':25} {'incr':>4} {'last success':25} {'age':>8}  state")
    for row in rows:
        age = "-" if row["age_s"] is None else f"{row['age_s'] / 3600:.1f}h"
        state = ("STALE" if row["stale"] else "INCOMPLETE" if row["incomplete"]
                 else "PROBLEM" if row["problem"] else "ok")  # fmt: skip
        if row["last_error"]:
            state += f" (last error: {row['last_error'][:80]})"
        elif row["problem"] and not row["stale"] and row["drill_ok"] is not False:
            state += f" ({row['problem'][:80]})"
        if row["last_drill"] and not row["drill_ok"]:
            state += f" (last drill failed {row['last_drill']})"
        if not row["home_present"]:
            state += " (home gone)"
        print(f"{row['user'] or row['chain']:20} {row['newest_full'] or '-':25} "
              f"{row['incrementals']:>4} {row['last_success'] or 'never':25} {age:>8}  {state}")


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), dispatch, argv)


def dispatch(args: dict) -> int:
    command = args.pop("command", None)
    if command is None:
        raise ConfigError("give a command: run, cleanup, status, restore, verify or drill")
    settings = backup_settings.resolve(
        load_settings(backup_settings.BackupSettings, backup_settings.ENV_PREFIX, args)
    )
    setup_logging(settings.log_format, settings.log_level)
    jobs = build_jobs(settings)
    stop_on_signals(jobs)
    code = run_and_record(jobs, command, args)
    if jobs.stopped_by:
        jobs.duplicity.finish_terminating()
        log_event(log, f"{command} stopped by {jobs.stopped_by}; an interrupted set is made "
                  "afresh by the next run", logging.WARNING)  # fmt: skip
        return 128 + signal.Signals[jobs.stopped_by].value
    return code


def stop_on_signals(jobs) -> None:
    """SIGTERM (systemctl stop, kill) and SIGINT (Ctrl-C) stop the job as a whole: duplicity
    runs in its own process group, beyond the terminal's Ctrl-C, and in worker threads, which
    a KeyboardInterrupt would never reach; left alone it would go on after we exit."""

    def handle(signum, frame) -> None:
        jobs.stop(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)


def run_and_record(jobs, command: str, args: dict) -> int:
    try:
        return run_command(jobs, command, args)
    finally:
        if jobs.reporting.metrics_file and not (command in ("run", "cleanup")
                                                and jobs.options.dry_run):  # fmt: skip
            write_metrics(jobs)


def write_metrics(jobs) -> None:
    """After every command (status included), from the records: a failed write is a warning."""
    from backup.metrics import metrics_text
    from hubsidecars.files import replace_file

    try:
        replace_file(jobs.reporting.metrics_file, metrics_text(jobs.status(), jobs.now()))
    except SidecarError:
        pass  # the source cannot be listed: the command says so
    except OSError as error:
        log_event(log, "cannot write the metrics file", logging.WARNING,
                  path=jobs.reporting.metrics_file, error=error.strerror)  # fmt: skip


def run_command(jobs, command: str, args: dict) -> int:
    from backup.actions.restore import restore

    if command == "status":
        rows = jobs.status()
        print_status(rows, args.get("json", False))
        return 1 if any(row["problem"] for row in rows) else 0
    if command == "restore":
        try:
            restored = restore(jobs.context, args["user"], args.get("path"),
                               time=args.get("time"), to=args.get("to"),
                               in_place=args.get("in_place", False),
                               previous_owner=args.get("previous_owner", False))  # fmt: skip
            print("\n".join(restored.lines()))
            return 0
        except CommandError as error:
            raise Failed(f"restore failed: {str(error).splitlines()[0]}") from None
        except OSError as error:
            raise Failed(f"restore failed: {error.strerror}: {error.filename}") from None
    if command == "run":
        return _run_with_hooks(jobs, args)
    return _reported(getattr(jobs, command)(args.get("users") or None))


def _reported(report) -> int:
    """One error line per failed chain (`hub-backup: CHAIN: why`), then the summary, at info
    level: the failures have their lines already."""
    for outcome in report.failed:
        say("hub-backup", outcome.chain, outcome.detail)
    log_event(log, report.summary())
    return report.exit_code


def _hooks(jobs):
    """The monitoring hooks of a run; a hooks file that cannot be used is logged, and the
    backup goes on without pushes (it matters more than its monitoring)."""
    from backup.hooks import Hooks

    options = jobs.reporting.hooks
    if jobs.options.dry_run or options is None:
        return Hooks({})
    try:
        return options.read()
    except ConfigError as error:
        log_event(log, "monitoring hooks not used", logging.ERROR, error=str(error))
        return options.without_urls()


def _run_with_hooks(jobs, args: dict) -> int:
    """`run`, with the start event once the job lock is held, and success or failure (its
    first failed chain's line) at the end; a run that finds another one running sends none."""
    hooks = _hooks(jobs)
    try:
        report = jobs.run(args.get("users") or None, full=args.get("full", False),
                          on_start=lambda: hooks.started("hub-backup run started"))  # fmt: skip
    except Busy:
        raise  # another run holds the job lock: this one never started, nothing to report
    except SidecarError as error:  # the source cannot be listed, ...: a failure to report too
        hooks.finished(False, f"hub-backup run failed: {error}")
        raise
    except Exception as error:
        hooks.finished(False, f"hub-backup run failed: {unforeseen(error)}")
        raise
    code = _reported(report)
    if jobs.stopped_by:
        hooks.finished(False, f"hub-backup run stopped by {jobs.stopped_by}; "
                       f"{report.summary()}")  # fmt: skip
    elif report.failed:
        first = report.failed[0]
        hooks.finished(False, f"{report.summary()}; {first.chain}: {first.detail}")
    else:
        hooks.finished(True, report.summary())
    return code


if __name__ == "__main__":
    sys.exit(main())
