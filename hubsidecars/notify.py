"""Tell systemd how a daemon is doing (sd_notify(3): READY, STATUS, STOPPING, WATCHDOG).

Speaks the datagram protocol directly, so python-systemd is not needed. Outside systemd
(no NOTIFY_SOCKET) every call is a no-op; a failed send is logged once and never raises,
because a daemon must not die of its status line.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from hubsidecars.logs import log_event


class Notifier:
    def __init__(
        self,
        address: str | None,
        watchdog_usec: int | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        """`address` is NOTIFY_SOCKET's value: a path, or '@name' for an abstract socket."""
        self.address = address or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self.logger = logger or logging.getLogger(__name__)
        self._failure_logged = False

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] | None = None,
        pid: int | None = None,
        logger: logging.Logger | None = None,
    ) -> Notifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID as systemd sets them.

        The watchdog is ours only when WATCHDOG_PID is unset or names this process: a child
        that inherited the variables must not ping on its parent's behalf.
        """
        env = os.environ if environ is None else environ
        watchdog_usec = None
        watchdog_pid = env.get("WATCHDOG_PID", "").strip()
        if not watchdog_pid or watchdog_pid == str(os.getpid() if pid is None else pid):
            try:
                watchdog_usec = int(env.get("WATCHDOG_USEC", ""))
            except ValueError:
                watchdog_usec = None
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec, logger)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half the timeout, as sd_watchdog_enabled(3) advises."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2_000_000

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([_status_line(status)] if status is not None else []))

    def status(self, text: str) -> bool:
        return self.send(_status_line(text))

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([_status_line(status)] if status is not None else []))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def send(self, *assignments: str) -> bool:
        """Send one datagram of VAR=value lines; True when it was delivered."""
        if self.address is None or not assignments:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(assignments).encode(), target)
        except OSError as exc:
            if not self._failure_logged:
                self._failure_logged = True
                log_event(self.logger, "sd_notify failed; later failures are not logged",
                          logging.WARNING, socket=self.address, error=str(exc))  # fmt: skip
            return False
        return True


def _status_line(text: str) -> str:
    # One message is newline-separated assignments: a newline inside STATUS would end it.
    return "STATUS=" + " ".join(str(text).splitlines())
