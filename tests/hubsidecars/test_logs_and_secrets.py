"""The shared pieces: log lines that read well in journalctl, and secrets from files only."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from hubsidecars.config import ConfigError
from hubsidecars.logs import log_event, setup_logging
from hubsidecars.secrets import read_secret
from realparts.restuser import REPO


def _emit(capsys, log_format, monkeypatch, journal=False):
    if journal:
        monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    else:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    setup_logging(log_format)
    log_event(logging.getLogger("svc"), "account created", name="al ice", uid=7, outcome="created")
    return capsys.readouterr().err.strip().splitlines()


def test_kv_lines_quote_what_needs_it(capsys, monkeypatch):
    (line,) = _emit(capsys, "kv", monkeypatch)
    assert line.startswith("ts=") and line.endswith(
        'level=info logger=svc msg="account created" name="al ice" uid=7 outcome=created'
    )


def test_json_lines_parse(capsys, monkeypatch):
    (line,) = _emit(capsys, "json", monkeypatch)
    event = json.loads(line)
    assert event["name"] == "al ice" and event["uid"] == 7 and event["msg"] == "account created"


def test_no_timestamp_under_journald(capsys, monkeypatch):
    (line,) = _emit(capsys, "kv", monkeypatch, journal=True)
    assert line.startswith("level=info")


def test_newlines_cannot_forge_a_second_log_line(capsys, monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    setup_logging("kv")
    log_event(logging.getLogger("svc"), "refused", name="x\nlevel=error forged=1")
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


TOKEN = "a-token-of-32-characters-0123456"


def write_secret(path, content=TOKEN, mode=0o600):
    path.write_text(content + "\n")
    path.chmod(mode)
    return path


def test_secret_from_file_and_credentials_directory(tmp_path):
    secret = write_secret(tmp_path / "token")
    assert read_secret(str(secret), "x", environ={}) == TOKEN
    assert read_secret(None, "token", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}) == TOKEN
    assert read_secret(None, "other", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}) is None
    assert read_secret(None, "token", environ={}) is None


def test_group_readable_root_owned_secret_is_accepted(tmp_path):
    # The usual layout for a service running as its own user: root:service 0640.
    assert read_secret(str(write_secret(tmp_path / "t", mode=0o640)), "x", environ={}) == TOKEN


@pytest.mark.parametrize(
    "content, mode, reason",
    [(TOKEN, 0o644, "readable by every user"), (TOKEN, 0o660, "writable by other users"),
     (TOKEN, 0o602, "writable by other users"), ("  ", 0o600, "empty"),
     (TOKEN[:15], 0o600, "holds a secret of 15 characters; at least 16 needed")],
)  # fmt: skip
def test_unsafe_short_or_empty_secret_is_refused(tmp_path, content, mode, reason):
    secret = write_secret(tmp_path / "token", content, mode)
    with pytest.raises(ConfigError, match=reason) as caught:
        read_secret(str(secret), "x", environ={})
    assert TOKEN[:15] not in str(caught.value) and "\n" not in str(caught.value)


def test_secret_owned_by_another_user_is_refused(tmp_path):
    secret = write_secret(tmp_path / "token")
    os.chown(secret, 12345, 12345)
    with pytest.raises(ConfigError, match="belongs to uid 12345, neither root nor this service"):
        read_secret(str(secret), "x", environ={})


def test_a_fifo_or_directory_is_refused_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "fifo", 0o600)
    (tmp_path / "dir").mkdir(mode=0o700)
    for name in ("fifo", "dir"):
        with pytest.raises(ConfigError, match="not a regular file"):
            read_secret(str(tmp_path / name), "x", environ={})


def test_environment_is_used_only_when_named_and_last():
    environ = {"JUPYTERHUB_API_TOKEN": TOKEN}
    assert read_secret(None, "x", environ=dict(environ)) is None
    assert read_secret(None, "x", environ=environ, env_var="JUPYTERHUB_API_TOKEN") == TOKEN
    assert environ == {}


def test_a_file_wins_over_the_environment_which_is_dropped_anyway(tmp_path):
    write_secret(tmp_path / "token", "f" * 20)
    environ = {"JUPYTERHUB_API_TOKEN": TOKEN, "CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert read_secret(None, "token", environ=environ, env_var="JUPYTERHUB_API_TOKEN") == "f" * 20
    assert "JUPYTERHUB_API_TOKEN" not in environ


def test_short_environment_secret_is_refused_by_name():
    with pytest.raises(ConfigError, match="^environment variable HUB_X_TOKEN holds a secret of 5"):
        read_secret(None, "x", environ={"HUB_X_TOKEN": "short"}, env_var="HUB_X_TOKEN")


def test_child_processes_do_not_inherit_a_secret_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKEN)
    assert read_secret(None, "x", env_var="JUPYTERHUB_API_TOKEN") == TOKEN
    child_env = subprocess.run(["env"], capture_output=True, text=True, check=True).stdout
    assert TOKEN not in child_env and "JUPYTERHUB_API_TOKEN" not in os.environ


JOURNAL_CHILD = """
import logging, os, sys
from hubsidecars.logs import log_event, setup_logging
status = os.fstat(2)
if sys.argv[1] == "journal":
    os.environ["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}"
elif sys.argv[1] == "elsewhere":
    os.environ["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino + 1}"
setup_logging(sys.argv[2], "debug")
for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
    log_event(logging.getLogger("svc"), "event", level=level)
"""


@pytest.mark.parametrize("log_format", ["kv", "json"])
def test_lines_carry_their_syslog_priority_when_stderr_is_the_journal(tmp_path, log_format):
    """journald reads a leading <N> as the entry's priority (SyslogLevelPrefix= is on by
    default): without it every line is priority 6 and `journalctl -p err` finds nothing."""

    def lines(where: str) -> list[str]:
        stderr = tmp_path / f"{where}.err"
        with open(stderr, "wb") as sink:
            subprocess.run([sys.executable, "-c", JOURNAL_CHILD, where, log_format],
                           stderr=sink, check=True, cwd=REPO)  # fmt: skip
        return stderr.read_text().splitlines()

    assert [line[:3] for line in lines("journal")] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    for where in ("elsewhere", "terminal"):  # the variable inherited, or none at all
        assert not any(line.startswith("<") for line in lines(where)), where
