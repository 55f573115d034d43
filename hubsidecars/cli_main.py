"""The one `main` of the four commands: parse the arguments, run the command, and turn what
went wrong into one line on stderr and the exit code of the contract in hubsidecars.errors."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

from hubsidecars.errors import EXIT_FAILED, Busy, SidecarError
from hubsidecars.logs import stderr_is_the_journal

# syslog priorities of the line (under systemd, `journalctl -p err` finds the errors)
_ERROR, _WARNING = 3, 4


def run_main(parser: argparse.ArgumentParser, dispatch: Callable[[dict[str, Any]], int],
             argv: list[str] | None = None) -> int:
    """Parse `argv` with `parser` (a usage error exits 2 there, with one line) and return
    what `dispatch(vars(args))` returns, or the exit code of what it raised:
    ConfigError 2, Busy 75, Failed 1, anything unforeseen 1 (its traceback only when the
    command logs at debug level). Ctrl-C ends quietly with 130, as a shell reports it.
    (`--generate-config`, hubsidecars.config.GenerateConfig, prints and exits while parsing.)"""
    args = vars(parser.parse_args(argv))
    try:
        return dispatch(args)
    except SidecarError as error:
        busy = isinstance(error, Busy)
        say(parser.prog, "busy" if busy else "error", str(error), _WARNING if busy else _ERROR)
        return error.exit_code
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Exception as error:  # noqa: BLE001 - unforeseen: one line, not a traceback
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            traceback.print_exc()
        say(parser.prog, "error", unforeseen(error), _ERROR)
        return EXIT_FAILED


def unforeseen(error: BaseException) -> str:
    """What an unforeseen exception says, for an admin: an OSError's reason and file (not
    `[Errno 13]`), otherwise the exception's type and its first line."""
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def say(prog: str, label: str, message: str, priority: int = _ERROR) -> None:
    """`PROG: LABEL: MESSAGE` as one line on stderr, with its syslog priority in front when
    stderr is the journal (as hubsidecars.logs does for log lines)."""
    text = "; ".join(line.strip() for line in message.splitlines() if line.strip())
    prefix = f"<{priority}>" if stderr_is_the_journal() else ""
    print(f"{prefix}{prog}: {label}: {text}", file=sys.stderr, flush=True)
