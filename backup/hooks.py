"""Monitoring hooks of `hub-backup run`: a push URL per event and an optional command on failure.

The URLs are those of push monitors (healthchecks.io, Uptime Kuma, ...): a dead man's switch
alerts when a backup stops arriving, not only when one fails. They carry a token, so they are
secrets: read from a root-only file or a systemd credential, never from argv, the settings or
the environment, and never logged (errors are logged with the event and the host only).

The file holds one `EVENT = URL` line per event (start, success, failure; `#` comments). A
`{message}` in a URL is replaced by the event's one line, URL-quoted (Uptime Kuma's `msg=`);
every request is a POST of that line as text (healthchecks.io keeps it as the ping's body).
A hook that hangs or fails never fails the backup: each request has a timeout, the start
event is sent beside the run, and a failure is one warning in the log.
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from backup.settings import HOOKS_CREDENTIAL
from hubsidecars.commands import CommandError, Tool, run_command
from hubsidecars.config import ConfigError
from hubsidecars.logs import log_event
from hubsidecars.secrets import read_secret

log = logging.getLogger("backup")
EVENTS = ("start", "success", "failure")
HOOK_COMMAND = Tool("failure command", {})
MESSAGE_CHARS = 1000


def parse_urls(text: str, where: str) -> dict[str, str]:
    """{event: URL} from the hooks file's `EVENT = URL` lines. Raises ConfigError naming the
    line number (never the URL)."""
    urls = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        event, sep, url = (part.strip() for part in line.partition("="))
        if not sep or event not in EVENTS:
            raise ConfigError(f"{where} line {number}: give EVENT = URL with EVENT one of "
                              f"{', '.join(EVENTS)}")  # fmt: skip
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ConfigError(f"{where} line {number}: the {event} URL is not an http(s) URL")
        urls[event] = url
    return urls


@dataclass(frozen=True)
class HookOptions:
    """Where a run's hooks come from: the hooks file (the credential HOOKS_CREDENTIAL wins
    over it, as for the passphrase), the failure command and the time each hook may take."""

    hooks_file: str
    failure_command: str
    timeout: float

    @classmethod
    def from_settings(cls, settings) -> HookOptions:
        return cls(settings.hooks_file, settings.failure_command, settings.hook_timeout)

    def read(self) -> Hooks:
        """The hooks; without a file or credential, only the failure command. Raises
        ConfigError for a file that cannot be used."""
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        given = bool(credentials) and os.path.exists(os.path.join(credentials,
                                                                   HOOKS_CREDENTIAL))  # fmt: skip
        path = None if given else (
            self.hooks_file if self.hooks_file and os.path.exists(self.hooks_file) else None)
        text = read_secret(path, HOOKS_CREDENTIAL, min_length=1) if (path or given) else None
        urls = parse_urls(text, path or f"credential {HOOKS_CREDENTIAL}") if text else {}
        return Hooks(urls, self.failure_command, self.timeout)

    def without_urls(self) -> Hooks:
        return Hooks({}, self.failure_command, self.timeout)


class Hooks:
    def __init__(self, urls: dict[str, str], failure_command: str = "",
                 timeout: float = 10.0) -> None:  # fmt: skip
        self.urls = dict(urls)
        self.failure_command = shlex.split(failure_command) if failure_command else []
        self.timeout = timeout
        self._pending: list[threading.Thread] = []

    def __bool__(self) -> bool:
        return bool(self.urls or self.failure_command)

    def started(self, message: str) -> None:
        """The start event, sent from a thread: a slow monitor does not delay the backup."""
        if "start" in self.urls:
            thread = threading.Thread(target=self._push, args=("start", message), daemon=True,
                                      name="hook-start")  # fmt: skip
            thread.start()
            self._pending.append(thread)

    def finished(self, ok: bool, message: str) -> None:
        """The success or failure event (and the failure command), after the start event had
        its chance; each bounded by the timeout."""
        for thread in self._pending:
            thread.join(self.timeout)
        event = "success" if ok else "failure"
        if event in self.urls:
            self._push(event, message)
        if not ok and self.failure_command:
            self._run_command(message)

    def _push(self, event: str, message: str) -> None:
        url = self.urls[event]
        line = " ".join(message.split())[:MESSAGE_CHARS]
        url = url.replace("{message}", quote(line, safe=""))
        request = urllib.request.Request(url, data=line.encode(), method="POST",
                                         headers={"Content-Type": "text/plain; charset=utf-8",
                                                  "User-Agent": "hub-backup"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read(1024)
        except urllib.error.HTTPError as error:
            self._warn(event, url, f"HTTP {error.code}")
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            self._warn(event, url, str(reason).replace(url, "(url)"))
        else:
            log_event(log, "monitoring hook sent", logging.DEBUG, hook_event=event,
                      host=urlsplit(url).hostname)  # fmt: skip

    def _warn(self, event: str, url: str, error: str) -> None:
        log_event(log, "monitoring hook failed; the backup is not affected", logging.WARNING,
                  hook_event=event, host=urlsplit(url).hostname, error=error[:200])  # fmt: skip

    def _run_command(self, message: str) -> None:
        try:
            run_command(self.failure_command, tool=HOOK_COMMAND, timeout=self.timeout,
                        env={"HUB_BACKUP_EVENT": "failure",
                             "HUB_BACKUP_MESSAGE": " ".join(message.split())[:MESSAGE_CHARS]},
                        logger=log)  # fmt: skip
        except CommandError as error:
            log_event(log, "failure command failed; the backup is not affected",
                      logging.WARNING, error=str(error).splitlines()[0][:200])  # fmt: skip
