"""The shared pieces: log lines that read well in journalctl, and secrets from files only."""

from __future__ import annotations

import json
import logging

import pytest

from hubsidecars.config import ConfigError
from hubsidecars.logs import log_event, setup_logging
from hubsidecars.secrets import read_secret


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


def test_secret_from_file_and_credentials_directory(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("abc\n")
    secret.chmod(0o600)
    assert read_secret(str(secret), "x", environ={}) == "abc"
    assert read_secret(None, "token", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "abc"
    assert read_secret(None, "other", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}) is None
    assert read_secret(None, "token", environ={}) is None


@pytest.mark.parametrize("content, mode, reason", [("abc", 0o644, "readable by every user"),
                                                    ("  \n", 0o600, "empty")])  # fmt: skip
def test_unsafe_or_empty_secret_is_refused(tmp_path, content, mode, reason):
    secret = tmp_path / "token"
    secret.write_text(content)
    secret.chmod(mode)
    with pytest.raises(ConfigError, match=reason) as caught:
        read_secret(str(secret), "x", environ={})
    assert "abc" not in str(caught.value)
