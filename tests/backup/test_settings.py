"""Where hub-backup's passphrase comes from: the systemd credential wins over the file."""

import os

import pytest

from backup.settings import BackupSettings, read_passphrase
from hubsidecars.config import ConfigError


def write(path, text, mode=0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_the_credential_given_by_the_unit_wins_over_the_file(tmp_path, monkeypatch):
    passfile = write(tmp_path / "backup.passphrase", "from-the-file-123")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    write(credentials / "backup-passphrase", "from-the-credential")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    settings = BackupSettings(passphrase_file=str(passfile))
    assert read_passphrase(settings, required=True) == "from-the-credential"


def test_without_a_credential_the_file_is_read(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    passfile = write(tmp_path / "backup.passphrase", "from-the-file-123")
    assert read_passphrase(BackupSettings(passphrase_file=str(passfile)),
                           required=True) == "from-the-file-123"


def test_no_passphrase_anywhere_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    settings = BackupSettings(passphrase_file=str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="no backup passphrase"):
        read_passphrase(settings, required=True)
    assert read_passphrase(settings, required=False) is None


def test_a_world_readable_passphrase_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    passfile = write(tmp_path / "backup.passphrase", "from-the-file-123", 0o644)
    with pytest.raises(ConfigError, match="readable by every user"):
        read_passphrase(BackupSettings(passphrase_file=str(passfile)), required=True)
