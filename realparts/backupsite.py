"""One hub-backup installation in a scratch directory, as every backup test builds it: homes in
WORK/homes (realparts/homes.py fills them), backups to file://WORK/backups/USER, the
cache and the records in WORK, a 0600 passphrase file; and the real `hub-backup` command run
against it with a TOML file, as an admin would."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from backup.build import build_jobs
from backup.settings import BackupSettings
from realparts.homes import make_homes

PASSPHRASE = "correct horse battery staple 0123"
HUB_BACKUP = Path(sys.executable).parent / "hub-backup"


def passphrase_file(work: Path, passphrase: str = PASSPHRASE) -> Path:
    secret = work / "backup.passphrase"
    secret.write_text(passphrase + "\n")
    secret.chmod(0o600)
    return secret


def site_settings(work: Path, homes: Path | None = None, passphrase: str = PASSPHRASE,
                  **changes) -> BackupSettings:  # fmt: skip
    """Settings for the homes in `homes` (default WORK/homes), everything else in `work`;
    `changes` override any setting."""
    values = dict(
        source=str(homes or work / "homes"), target=f"file://{work}/backups/{{user}}",
        passphrase_file=str(passphrase_file(work, passphrase)), archive_dir=str(work / "cache"),
        state_dir=str(work / "state"),
    )  # fmt: skip
    return BackupSettings(**{**values, **changes})


def config_file(settings: BackupSettings, path: Path) -> Path:
    """`settings` as the TOML file `hub-backup --config` reads."""
    values = dataclasses.asdict(settings)
    path.write_text("".join(f"{key} = {json.dumps(list(v) if isinstance(v, tuple) else v)}\n"
                            for key, v in values.items()))  # fmt: skip
    return path


def clean_env() -> dict[str, str]:
    """This environment without hub-backup's own variables and systemd's credentials."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith("HUB_BACKUP") and key != "CREDENTIALS_DIRECTORY"}  # fmt: skip


def hub_backup(config: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`hub-backup ARGS --config CONFIG`, its output captured."""
    return subprocess.run([str(HUB_BACKUP), *args, "--config", str(config)], env=clean_env(),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@dataclasses.dataclass
class Site:
    """One hub-backup installation in a scratch directory."""

    work: Path
    settings: BackupSettings

    @property
    def source(self) -> Path:
        return Path(self.settings.source)

    def jobs(self, **changes):
        return build_jobs(dataclasses.replace(self.settings, **changes))

    def config(self, name: str = "backup.toml", **changes) -> Path:
        return config_file(dataclasses.replace(self.settings, **changes), self.work / name)

    def cli(self, *args: str, timeout: float = 120, **changes) -> subprocess.CompletedProcess:
        """`hub-backup COMMAND --config FILE ARGS...` with the site's settings and `changes`."""
        return subprocess.run([str(HUB_BACKUP), args[0], "--config", str(self.config(**changes)),
                               *args[1:]], check=False, env=clean_env(), capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip


def make_site(work: Path, users: dict[str, int] | None = None, files: int = 25,
              passphrase: str = PASSPHRASE, **changes) -> Site:  # fmt: skip
    """A site whose homes (`users`: name -> uid) hold `files` small files each."""
    homes = work / "homes"
    homes.mkdir(parents=True)
    if users:
        make_homes(homes, users, files_per_home=files, megabyte_files=0)
    return Site(work, site_settings(work, homes, passphrase, **changes))
