"""What went wrong, as the exit-code contract of every hub-sidecars command names it.

Core code raises one of these; the one `main` wrapper (hubsidecars.cli_main) turns it into a
single line on stderr and the exit code below, the same in all four services:

    0  success
    1  failed: the command ran and did not do its job (a pass, a chain, a restore failed)
    2  bad usage or configuration: fix the command line or the settings; retrying cannot help
   75  busy (EX_TEMPFAIL): another instance runs, or a lock stayed held; try again later

An exception that is none of these is a bug or an unforeseen outside failure: exit 1 too.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUSY = 75


class SidecarError(Exception):
    """Base of the errors that carry their exit code; the message is one line for the admin."""

    exit_code = EXIT_FAILED


class Failed(SidecarError):
    """The command ran and failed (a missing source root, a restore duplicity refused)."""

    exit_code = EXIT_FAILED


class ConfigError(SidecarError):
    """Bad usage or configuration; the message is one line for the admin. Exit code 2."""

    exit_code = EXIT_USAGE


class Busy(SidecarError):
    """Another instance holds what this one needs (its pid lock, the job lock, a chain's
    lock), at once or after the configured wait. Exit code 75, which the timer-started units
    count as a skipped run rather than a failure."""

    exit_code = EXIT_BUSY


__all__ = ["EXIT_BUSY", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "Busy", "ConfigError", "Failed",
           "SidecarError"]  # fmt: skip
