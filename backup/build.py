"""The one step that turns hub-backup's settings into its objects: the duplicity adapter, the
encryption, the typed options of the jobs and what the command does around them."""

from __future__ import annotations

import logging

from backup import settings as backup_settings
from backup.context import JobOptions
from backup.duplicity import Duplicity, Encryption
from backup.hooks import HookOptions
from backup.jobs import BackupJobs, Reporting
from backup.settings import BackupSettings


def build_jobs(settings: BackupSettings) -> BackupJobs:
    return BackupJobs(JobOptions.from_settings(settings), build_duplicity(settings),
                      build_encryption(settings),
                      reporting=Reporting(settings.metrics_file,
                                          HookOptions.from_settings(settings)))  # fmt: skip


def build_encryption(settings: BackupSettings) -> Encryption:
    """A key to encrypt to (its passphrase, if any, for restores), else the passphrase."""
    if settings.encrypt_key:
        return Encryption(key_id=settings.encrypt_key,
                          passphrase=backup_settings.read_passphrase(settings, required=False))
    return Encryption(passphrase=backup_settings.read_passphrase(settings, required=True))


def build_duplicity(settings: BackupSettings) -> Duplicity:
    ssh = []
    if settings.ssh_key_file:
        ssh.append(f"-oIdentityFile={settings.ssh_key_file}")
    if settings.ssh_known_hosts:
        ssh.append(f"-oUserKnownHostsFile={settings.ssh_known_hosts}")
    return Duplicity(
        backup_settings.duplicity_command(settings), archive_dir=settings.archive_dir,
        gnupg_home=settings.gnupg_home or None, volsize_mb=settings.volsize,
        timeout=settings.chain_timeout, ssh_options=" ".join(ssh),
        # duplicity counts attempts, the first included: retries=0 is one attempt
        num_retries=settings.retries + 1, retry_delay=int(settings.retry_delay),
        logger=logging.getLogger("backup.duplicity"),
    )  # fmt: skip
