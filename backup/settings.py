"""Every setting of `hub-backup`, declared once (the keys of DESIGN.md and more)."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from hubsidecars import servicesettings as shared
from hubsidecars.config import ConfigError, Duration, render_example, setting
from hubsidecars.secrets import read_secret

ENV_PREFIX = "HUB_BACKUP"
PASSPHRASE_CREDENTIAL = "backup-passphrase"
HOOKS_CREDENTIAL = "backup-hooks"
DEFAULT_EXCLUDES = (
    "**/.cache", "**/.ipynb_checkpoints", "**/.local/share/Trash", "**/__pycache__",
)  # fmt: skip

EXAMPLE_HEADER = f"""\
/etc/hub-sidecars/backup.toml: settings for `hub-backup` (hub-backup.service and its timers).
Written by `hub-backup --generate-config` from backup/settings.py. Keys left commented out show
their defaults. Each key is also a flag (full_every: --full-every) and an environment variable
({ENV_PREFIX}_FULL_EVERY); flags win over the environment, which wins over this file. The
passphrase is never a setting: it comes from passphrase_file or the systemd credential
{PASSPHRASE_CREDENTIAL}. Durations read like 30s, 10m, 2h, 7D or 1h30m."""


@dataclass(frozen=True, kw_only=True)
class BackupSettings:
    source: str = setting(
        "/home", "root whose subdirectories are the user homes", metavar="DIR",
        heading="What is backed up, and where to.", in_example=True,
    )  # fmt: skip
    target: str = setting(
        "file:///srv/backups/{user}",
        "duplicity URL of the backups; {user} expands in the per-user layout (file://, "
        "sftp://user@host/path, or any backend duplicity has)", metavar="URL", in_example=True,
    )  # fmt: skip
    layout: Literal["per-user", "single"] = setting(
        "per-user", "per-user: one duplicity chain per home (one user's files restore alone, "
        "one bad chain hurts nobody else); single: one chain for the whole source",
        in_example=True,
    )  # fmt: skip
    excludes: tuple[str, ...] = setting(
        DEFAULT_EXCLUDES, "duplicity --exclude patterns, relative to each home (comma separated)"
    )
    passphrase_file: str = setting(
        "/etc/hub-sidecars/backup.passphrase",
        "symmetric encryption: file holding the passphrase (mode 0600, root); else the "
        f"systemd credential {PASSPHRASE_CREDENTIAL}. With encrypt_key, the secret key's "
        "passphrase for restores (may be absent for a key without one)", metavar="FILE",
        heading="Encryption.", in_example=True,
    )  # fmt: skip
    encrypt_key: str = setting(
        "", "GPG key id to encrypt to instead of a passphrase (its public key in gnupg_home)",
        metavar="KEYID",
    )  # fmt: skip
    gnupg_home: str = setting(
        "", "GNUPGHOME for duplicity's gpg (default: archive_dir/.gnupg, private to hub-backup)", metavar="DIR"
    )
    full_every: Duration = setting(
        7 * 86400.0, "start a new full chain when the last full is older than this", min=3600,
        heading="Chains.", in_example=True,
    )  # fmt: skip
    keep_full: int = setting(
        2, "full chains kept per user by `hub-backup cleanup`", metavar="N", min=1, max=100,
        in_example=True,
    )  # fmt: skip
    skip_unchanged: bool = setting(
        True, "run: a home with no change since its last backup (no ctime or mtime after it) "
        "counts as backed up, without running duplicity; duplicity still runs when a full is "
        "due and at least every max_age / 2",
    )  # fmt: skip
    max_file_size: int = setting(
        20480, "run: a file larger than this (MB; 0: no limit) is left out of the backup, with a "
        "warning naming it; so is a file over 1 GB with under a tenth of it on disk (a sparse "
        "`truncate -s 1T` would hold a chain for hours)", metavar="MB", min=0,
    )  # fmt: skip
    home_budget: int = setting(
        51200, "run: the most one home may hand duplicity (MB of file sizes, a sparse file "
        "counted whole, as duplicity reads every zero; 0: no limit): past it the home's biggest "
        "files are left out until it fits, its backup is incomplete and a warning names them, "
        "so that one home cannot hold up everyone else's", metavar="MB", min=0,
    )  # fmt: skip
    volsize: int = setting(200, "duplicity volume size in MB", metavar="MB", min=1, max=10000)
    parallelism: int = setting(
        2, "chains backed up at the same time", metavar="N", min=1, max=32,
    )  # fmt: skip
    chain_timeout: Duration = setting(
        6 * 3600.0, "how long one duplicity run may take before it is stopped", min=60
    )
    retries: int = setting(
        2, "duplicity's retries of a failed transfer (its own default, 5 x 30 s, makes an "
        "unreachable target cost minutes per chain)", metavar="N", min=0, max=20,
    )  # fmt: skip
    retry_delay: Duration = setting(5.0, "seconds between those retries", min=1, max=600)
    lock_wait: Duration = setting(
        0.0, "how long a run waits for another one to finish (0: exit at once, saying so)",
        min=0, max=86400,
    )  # fmt: skip
    archive_dir: str = setting(
        "/var/lib/hub-sidecars/backup/cache",
        "duplicity's local archive (unencrypted file lists of every home: kept 0700)",
        metavar="DIR", heading="Local state.",
    )  # fmt: skip
    state_dir: str = setting(
        "/var/lib/hub-sidecars/backup", "locks and the record of every chain", metavar="DIR",
    )  # fmt: skip
    duplicity: str = setting(
        "", "the duplicity command (default: the one beside hub-backup, else on PATH)",
        metavar="PATH",
    )  # fmt: skip
    ssh_key_file: str = setting(
        "", "private key for sftp:// targets", metavar="FILE", heading="sftp:// targets."
    )
    ssh_known_hosts: str = setting(
        "", "known_hosts file for sftp:// targets (host keys are always checked)",
        metavar="FILE",
    )  # fmt: skip
    max_age: Duration = setting(
        26 * 3600.0, "`hub-backup status` exits non-zero when a chain's last success is older",
        min=60, heading="Reporting.",
    )  # fmt: skip
    metrics_file: str = setting(
        "", "Prometheus textfile metrics after each command (empty: none)", metavar="FILE"
    )
    hooks_file: str = setting(
        "/etc/hub-sidecars/backup.hooks", "run: push URLs of monitors (healthchecks.io, Uptime "
        "Kuma), one `start|success|failure = URL` line each (mode 0600, root; a URL is a "
        f"secret); else the systemd credential {HOOKS_CREDENTIAL}; none: no pushes",
        metavar="FILE",
    )  # fmt: skip
    failure_command: str = setting(
        "", "run: a command run when the run fails, with HUB_BACKUP_MESSAGE (the failure's "
        "line) in its environment (empty: none)", metavar="COMMAND",
    )  # fmt: skip
    hook_timeout: Duration = setting(
        10.0, "how long a push or the failure command may take (a hung monitor never holds up "
        "or fails the backup)", min=1, max=300,
    )  # fmt: skip
    drill_files: int = setting(
        20, "files restored and compared per chain by `hub-backup drill`", metavar="N", min=1,
        max=10000,
    )  # fmt: skip
    dry_run: bool = setting(False, "run and cleanup: say what would be done, change nothing")
    log_format: shared.LogFormat = shared.log_format_setting()
    log_level: shared.LogLevel = shared.log_level_setting()


def example_config() -> str:
    return render_example(BackupSettings, EXAMPLE_HEADER)


def resolve(settings: BackupSettings) -> BackupSettings:
    """Check what the declarations cannot; raise ConfigError with a one-line reason."""
    for key in ("source", "passphrase_file", "gnupg_home", "archive_dir", "state_dir",
                "duplicity", "ssh_key_file", "ssh_known_hosts", "metrics_file"):  # fmt: skip
        value = getattr(settings, key)
        if value and not os.path.isabs(value):
            raise ConfigError(f"{key} must be an absolute path, got {value!r}")
    scheme = urlsplit(settings.target).scheme
    if not scheme or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        raise ConfigError(f"target must be a duplicity URL like file:///srv/backups/{{user}}, "
                          f"got {settings.target!r}")  # fmt: skip
    has_user = "{user}" in settings.target
    if settings.layout == "per-user" and not has_user:
        raise ConfigError("with layout per-user the target must hold {user}, so that every "
                          "home gets its own chain")  # fmt: skip
    if settings.layout == "single" and has_user:
        raise ConfigError("with layout single the target must not hold {user}")
    if urlsplit(settings.target).password:
        raise ConfigError("target must hold no password: use ssh_key_file for sftp://")
    return settings


def duplicity_command(settings: BackupSettings) -> str:
    """The duplicity executable: the setting, else the one installed beside this Python (the
    suite's venv), else PATH's."""
    if settings.duplicity:
        return settings.duplicity
    beside = Path(sys.executable).parent / "duplicity"
    return str(beside) if beside.exists() else "duplicity"


def read_passphrase(settings: BackupSettings, *, required: bool) -> str | None:
    """The passphrase from passphrase_file or the credential; None when there is none and
    none is required (a key without a passphrase)."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    given = bool(credentials) and os.path.exists(os.path.join(credentials, PASSPHRASE_CREDENTIAL))
    # The credential the unit hands over wins over the file: under systemd the file is the
    # credential's source, and the service should not need to read /etc for it.
    path = None if given else (
        settings.passphrase_file if os.path.exists(settings.passphrase_file) else None)
    secret = read_secret(path, PASSPHRASE_CREDENTIAL, min_length=8 if required else 1)
    if secret is None and required:
        raise ConfigError(
            f"no backup passphrase: put it in {settings.passphrase_file} (mode 0600) or give "
            f"the systemd credential {PASSPHRASE_CREDENTIAL}, or set encrypt_key"
        )
    return secret
