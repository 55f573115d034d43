"""In-place restores where the live path cannot simply be renamed, with real duplicity."""

from __future__ import annotations

import subprocess

import pytest

from backup.build import build_jobs
from backup.settings import BackupSettings
from hubsidecars.config import ConfigError
from realparts.homes import compare, make_homes, snapshot


def test_a_home_that_is_a_mount_point_is_refused_in_place_and_nothing_is_left(tmp_path):
    """Found while fixing issue 13 (fixed): a whole home that is a mount point of its own (a
    dataset or an NFS export per user) cannot be renamed aside: the restore died with
    `Device or resource busy` and left the restored copy in a hidden root-only directory of
    the source root, for good."""
    homes = tmp_path / "homes"
    make_homes(homes, {"ada": 3901}, files_per_home=20, megabyte_files=0)
    secret = tmp_path / "backup.passphrase"
    secret.write_text("mounted homes stay put 0123\n")
    secret.chmod(0o600)
    jobs = build_jobs(BackupSettings(
        source=str(homes), target=f"file://{tmp_path}/backups/{{user}}",
        passphrase_file=str(secret), archive_dir=str(tmp_path / "cache"),
        state_dir=str(tmp_path / "state"), retries=0, retry_delay=1.0,
    ))  # fmt: skip
    assert jobs.run().exit_code == 0
    home = homes / "ada"
    subprocess.run(["mount", "--bind", str(home), str(home)], check=True)
    try:
        before = snapshot(home)
        listing = sorted(p.name for p in homes.iterdir())
        with pytest.raises(ConfigError, match="mount point|--to"):
            jobs.restore("ada", None, time=None, to=None, in_place=True)
        assert compare(before, snapshot(home)) == []
        assert sorted(p.name for p in homes.iterdir()) == listing
        # a path inside it still restores in place
        readme = home / "notes" / "readme.md"
        backed_up = readme.read_bytes()
        readme.write_text("changed\n")
        jobs.restore("ada", "notes/readme.md", time=None, to=None, in_place=True)
        assert readme.read_bytes() == backed_up
    finally:
        subprocess.run(["umount", str(home)], check=True)
