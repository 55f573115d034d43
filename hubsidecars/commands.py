"""The one place that runs external commands (useradd, userdel, duplicity, ...).

Every command gets stdin from /dev/null, a minimal C-locale environment, its own session, a
timeout that kills its whole process group, one log line with secrets masked, and errors that
name the exit code's meaning from the tool's own table and end with the tail of its stderr.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from hubsidecars.logs import log_event

# Only these reach the child unless the caller adds more: nothing of our own environment (tokens,
# credentials directories, the admin's locale) leaks into a tool, and messages stay parseable.
BASE_ENV = MappingProxyType({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
MASK = "***"
TAIL_LINES = 5
TAIL_CHARS = 1000
# How long a child may still run after we were interrupted (Ctrl-C, SystemExit) while waiting for
# it: long enough for useradd to finish rewriting /etc/passwd, short enough for a person waiting.
INTERRUPT_GRACE = 5.0
# After killing a timed-out group, how long to wait for its pipes to close.
_REAP_TIMEOUT = 5.0

_log = logging.getLogger("hubsidecars.commands")


@dataclass(frozen=True)
class Tool:
    """An external program and what its exit codes mean (from its manual page)."""

    name: str
    exit_codes: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exit_codes", MappingProxyType(dict(self.exit_codes)))

    def meaning(self, exit_code: int) -> str:
        if exit_code == 0:
            return "success"
        if exit_code < 0:
            return f"killed by {_signal_name(-exit_code)}"
        return self.exit_codes.get(exit_code, "unknown exit code")


@dataclass(frozen=True)
class CommandResult:
    """A finished command. stdout/stderr are the child's own text (not masked): the caller
    passed the secrets in and decides what to do with output; everything the runner itself
    logs or raises is masked."""

    tool: Tool
    argv: tuple[str, ...]  # masked
    exit_code: int
    stdout: str
    stderr: str
    duration_ms: float

    @property
    def meaning(self) -> str:
        return self.tool.meaning(self.exit_code)


class CommandError(Exception):
    """A command did not run to an accepted exit code. `argv` is masked."""

    def __init__(self, message: str, tool: Tool, argv: tuple[str, ...]) -> None:
        super().__init__(message)
        self.tool = tool
        self.argv = argv


class CommandNotStarted(CommandError):
    """The program could not be started (missing, not executable, bad cwd)."""


class CommandFailed(CommandError):
    """The command exited with a code outside `ok_codes` (or was killed by a signal)."""

    def __init__(
        self, tool: Tool, argv: tuple[str, ...], exit_code: int, stderr: str, stdout: str = ""
    ) -> None:
        self.exit_code = exit_code
        self.meaning = tool.meaning(exit_code)
        self.stderr = stderr  # masked, whole
        self.stdout = stdout  # not masked; never put in the message
        self.stderr_tail = stderr_tail(stderr)
        if exit_code < 0:
            message = f"{tool.name} was {self.meaning}"
        else:
            message = f"{tool.name} exited {exit_code} ({self.meaning})"
        if self.stderr_tail:
            message += f": {self.stderr_tail}"
        super().__init__(message, tool, argv)


class CommandTimeout(CommandError):
    """The command overran its timeout; its whole process group was killed."""

    def __init__(self, tool: Tool, argv: tuple[str, ...], timeout: float, stderr: str) -> None:
        self.timeout = timeout
        self.stderr_tail = stderr_tail(stderr)
        message = f"{tool.name} did not finish within {timeout:g} s and was killed"
        if self.stderr_tail:
            message += f": {self.stderr_tail}"
        super().__init__(message, tool, argv)


def mask(text: str, secrets: Collection[str]) -> str:
    """`text` with every occurrence of every non-empty secret replaced by ***."""
    # Longest first, so a secret that contains a shorter one is masked whole.
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, MASK)
    return text


def mask_argv(argv: Iterable[str], secrets: Collection[str]) -> tuple[str, ...]:
    """Masks whole arguments and secrets inside them (`--passphrase=SECRET`, `url://u:SECRET@`)."""
    return tuple(mask(str(arg), secrets) for arg in argv)


def stderr_tail(stderr: str, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """The last `lines` non-blank lines of stderr on one line, at most `chars` characters."""
    kept = [line.strip() for line in stderr.splitlines() if line.strip()][-lines:]
    tail = " | ".join(kept)
    return tail if len(tail) <= chars else "..." + tail[-(chars - 3) :]


def run_command(
    argv: Iterable[str | os.PathLike[str]],
    *,
    tool: Tool,
    timeout: float,
    env: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    ok_codes: Collection[int] = (0,),
    pass_fds: Collection[int] = (),
    cwd: str | os.PathLike[str] | None = None,
    logger: logging.Logger | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
    failure_level: int = logging.WARNING,
) -> CommandResult:
    """Run `argv` to completion and return its result.

    `env` is added to BASE_ENV (the child sees nothing else of ours). Every string in `secrets`
    is masked in logs and exception messages; pass any secret the command may see, e.g. a
    PASSPHRASE given in `env`. `pass_fds` are kept open in the child (duplicity's --log-fd:
    pass a file's descriptor, not a pipe that nobody drains while the command runs).
    `on_start` is given the child as soon as it runs (a caller that must be able to stop it
    from another thread, e.g. on SIGTERM, keeps it; it runs in its own process group).
    `failure_level`: the level of the line logged when the command fails, times out or does
    not start; a caller that reports the failure itself passes DEBUG (one failure, one line).
    Raises CommandFailed for an exit code outside `ok_codes`, CommandTimeout, CommandNotStarted.
    """
    argv = [os.fspath(arg) for arg in argv]
    secrets = tuple(secret for secret in secrets if secret)
    logger = logger or _log
    shown = mask_argv(argv, secrets)
    child_env = {**BASE_ENV, **(env or {})}
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env,
            cwd=cwd,
            pass_fds=tuple(pass_fds),
            # Its own session, so its own process group: a Ctrl-C in the admin's terminal sends
            # SIGINT to the terminal's foreground group (us), and must not kill useradd halfway
            # through rewriting /etc/passwd. It also lets a timeout kill the child's whole group.
            start_new_session=True,
            # The child's messages are in the C locale; file names in them may be any bytes.
            encoding="utf-8",
            errors="replace",
        )
    except OSError as error:
        reason = mask(f"{tool.name} could not be started: {error}", secrets)
        _log_outcome(logger, failure_level, "command not started", tool, shown, started,
                     reason=reason)  # fmt: skip
        raise CommandNotStarted(reason, tool, shown) from None

    if on_start is not None:
        on_start(process)
    try:
        stdout, stderr = _communicate(process, timeout)
    except subprocess.TimeoutExpired as expired:
        stderr = mask(_text(expired.stderr), secrets)
        error = CommandTimeout(tool, shown, timeout, stderr)
        _log_outcome(logger, failure_level, "command timed out", tool, shown, started,
                     timeout_s=timeout, stderr_tail=error.stderr_tail)  # fmt: skip
        raise error from None

    exit_code = process.returncode
    duration_ms = _elapsed_ms(started)
    if exit_code not in ok_codes:
        error = CommandFailed(tool, shown, exit_code, mask(stderr, secrets), stdout)
        _log_outcome(logger, failure_level, "command failed", tool, shown, started,
                     exit_code=exit_code, meaning=error.meaning,
                     stderr_tail=error.stderr_tail)  # fmt: skip
        raise error
    if logger.isEnabledFor(logging.DEBUG):  # spare the formatting on hot paths (useradd)
        extra = {"meaning": tool.meaning(exit_code)} if exit_code else {}
        if stderr.strip():
            extra["stderr_tail"] = mask(stderr_tail(stderr), secrets)
        _log_outcome(logger, logging.DEBUG, "command finished", tool, shown, started,
                     exit_code=exit_code, **extra)  # fmt: skip
    return CommandResult(tool, shown, exit_code, stdout, stderr, duration_ms)


def _communicate(process: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """Collect the output; on timeout kill the child's whole group and raise TimeoutExpired."""
    deadline = time.monotonic() + timeout
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        try:
            _, stderr = process.communicate(timeout=_REAP_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Something that left the group (a daemonised gpg-agent) still holds our pipes.
            process.wait()
            stderr = ""
        raise subprocess.TimeoutExpired(process.args, timeout, stderr=stderr) from None
    except BaseException:
        # We were interrupted while waiting (KeyboardInterrupt in a foreground run, SystemExit
        # from a stopping worker): let the child finish its work briefly rather than leave it
        # half done, then make sure nothing of it outlives us.
        grace = max(0.0, min(INTERRUPT_GRACE, deadline - time.monotonic()))
        try:
            process.communicate(timeout=grace)
        except (subprocess.TimeoutExpired, KeyboardInterrupt, SystemExit):  # or a second Ctrl-C
            _kill_group(process)
            process.wait()
        raise


def _kill_group(process: subprocess.Popen) -> None:
    signal_group(process.pid, signal.SIGKILL)


class RunningCommands:
    """The commands one caller has running, so that another thread (a signal handler) can stop
    them all: pass `started` as run_command's `on_start`, call `forget_ended` when a command
    returns. `terminate` sends SIGTERM to each one's process group and SIGKILL `grace` seconds
    later to what is left; from then on the caller must start nothing (`stopping`), and a
    command that started anyway (a thread past its last look) goes the same way at once."""

    def __init__(self) -> None:
        self._running: set[subprocess.Popen] = set()
        # re-entrant: terminate() runs in a signal handler, maybe while the thread it
        # interrupted holds it
        self._lock = threading.RLock()
        self._terminated: list[tuple[int, float]] = []  # (process group, SIGKILL deadline)
        self._grace: float | None = None  # set by terminate

    @property
    def stopping(self) -> bool:
        return self._grace is not None

    def started(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.add(process)
            if self._grace is None:
                return
            self._terminated.append((process.pid, time.monotonic() + self._grace))
            grace = self._grace
        signal_group(process.pid, signal.SIGTERM)
        _kill_later([process.pid], grace)

    def forget_ended(self) -> None:
        with self._lock:
            self._running = {p for p in self._running if p.returncode is None}

    def terminate(self, grace: float) -> int:
        """SIGTERM to every running command's process group now, SIGKILL after `grace`
        seconds (from a timer). Returns how many. Call `finish_terminating` before exiting."""
        with self._lock:
            self._grace = grace
            groups = [process.pid for process in self._running]
            deadline = time.monotonic() + grace
            self._terminated.extend((group, deadline) for group in groups)
        for group in groups:
            signal_group(group, signal.SIGTERM)
        _kill_later(groups, grace)
        return len(groups)

    def finish_terminating(self) -> None:
        """Wait out the grace of every group `terminate` signalled, then SIGKILL what is left:
        a child that handles SIGTERM and is stuck would otherwise outlive the program, as the
        timer dies with it."""
        with self._lock:
            terminated = list(self._terminated)
        for group, deadline in terminated:
            while _group_alive(group) and time.monotonic() < deadline:
                time.sleep(0.05)
            signal_group(group, signal.SIGKILL)


def signal_group(group: int, signum: int) -> None:
    """Send `signum` to process group `group`; one that is gone (or not ours) is left alone."""
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_later(groups: list[int], grace: float) -> None:
    """SIGKILL `groups` after `grace` seconds, from a timer: a child that ignores SIGTERM
    holds up the thread waiting on it until then."""
    if groups:
        timer = threading.Timer(grace, lambda: [signal_group(g, signal.SIGKILL)
                                                for g in groups])  # fmt: skip
        timer.daemon = True
        timer.start()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _log_outcome(logger, level, msg, tool, shown, started, **fields) -> None:
    log_event(logger, msg, level, tool=tool.name, argv=shlex.join(shown),
              duration_ms=_elapsed_ms(started), **fields)  # fmt: skip


def _elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
