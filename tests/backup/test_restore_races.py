"""A home owner's real process racing `hub-backup restore` run by root, with real duplicity.

The owner may rename anything in their own directories, at any moment, and put a symlink to a
root-only directory or file in its place. Whatever they do, root must never write, chown or
chmod through it: the root-only directory and file stay as they were (owner, mode, content).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from backup.build import build_jobs
from backup.settings import BackupSettings
from hubsidecars.commands import CommandError
from hubsidecars.config import ConfigError
from realparts.backupsite import site_settings
from realparts.homes import compare, make_homes, snapshot

BOB = 3301
PASSPHRASE = "race you to the restore, 0123456789"

# Runs as bob (setpriv): swaps every hub-backup work entry it sees in the watched directories
# (once something was written into it, or at once when bob cannot look inside) for a symlink
# to a root-only directory or a root-owned file, until the stop file appears.
ATTACKER = r"""
import os, sys, time
victims, stop, watched = sys.argv[1:3], sys.argv[3], sys.argv[4:]
swaps = 0
while not os.path.exists(stop):
    for directory in watched:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if "hub-backup-restor" not in name or name.startswith(".moved"):
                continue
            path = os.path.join(directory, name)
            try:
                if os.path.islink(path):
                    continue
                try:
                    if not os.listdir(path):
                        continue  # swap once root is busy writing into it, not before
                except PermissionError:
                    pass  # root-only: swap it at once
                os.rename(path, os.path.join(directory, f".moved-{swaps}"))
                os.symlink(victims[swaps % 2], path)
                swaps += 1
            except OSError:
                pass
print(swaps)
"""


@pytest.fixture
def place():
    """A scratch root that bob can walk through (pytest's tmp_path is root-only)."""
    base = Path(tempfile.mkdtemp(prefix="hub-backup-race-", dir="/var/tmp"))
    base.chmod(0o711)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def settings_in(base: Path) -> BackupSettings:
    return site_settings(base, passphrase=PASSPHRASE, parallelism=1, retries=0, retry_delay=1.0)


def root_only(base: Path) -> tuple[Path, Path]:
    """A root-only directory holding a file, and a root-owned file: what bob points links at."""
    directory = base / "root-only"
    directory.mkdir(mode=0o700)
    (directory / "config").write_text("root's configuration\n")
    (directory / "config").chmod(0o600)
    file = base / "root-file"
    file.write_text("root's file\n")
    file.chmod(0o600)
    return directory, file


def as_bob(*argv: str) -> list[str]:
    return ["setpriv", f"--reuid={BOB}", f"--regid={BOB}", "--clear-groups", *argv]


def mkdir_of_bob(path: Path) -> Path:
    path.mkdir()
    os.chown(path, BOB, BOB)
    return path


def without_leftovers(tree: dict) -> dict:
    """The attacker's own entries (renamed work entries and its links) left out."""
    return {path: entry for path, entry in tree.items()
            if not path.split("/")[0].startswith((".moved", ".hub-backup-restor"))}  # fmt: skip


@pytest.fixture
def backed_up(place):
    (place / "homes").mkdir(mode=0o755)
    make_homes(place / "homes", {"bob": BOB}, files_per_home=80, megabyte_files=4)
    jobs = build_jobs(settings_in(place))
    assert jobs.run(["bob"]).exit_code == 0
    return jobs


def test_a_racing_home_owner_never_redirects_a_restore_into_root_only_places(place, backed_up):
    """Found as a defect (fixed): while `restore bob --to ~bob/restore-here` ran, a process
    of bob's renamed the `.hub-backup-restoring` work entry and put a symlink in its place:
    duplicity (root) went on writing through it, and the root-only directory it pointed at
    became bob's (0750) with bob's files in it."""
    jobs = backed_up
    home = place / "homes" / "bob"
    victims = root_only(place)
    before = {victim: snapshot(victim) for victim in victims}
    here = mkdir_of_bob(home / "restore-here")
    stop = place / "stop"
    attacker = subprocess.Popen(
        as_bob("/usr/bin/python3", "-c", ATTACKER, *map(str, victims), str(stop), str(here),
               str(home / "notes")),
        stdout=subprocess.PIPE, text=True)  # fmt: skip
    expected_home = snapshot(home, skip_junk=True)
    outcomes = []
    try:
        for attempt in range(6):
            for name in os.listdir(here):  # the last attempt's restore, and bob's leftovers
                path = here / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            path = None if attempt % 3 else "notes"
            try:
                jobs.restore("bob", path, time=None, to=str(here), in_place=False)
                outcomes.append("restored")
            except (ConfigError, CommandError, OSError) as error:
                outcomes.append(f"refused: {error}")
            if outcomes[-1] == "restored" and path is None:
                restored = without_leftovers(snapshot(here))
                expected = {k: v for k, v in expected_home.items() if k != "restore-here"}
                assert compare(expected, restored) == [], attempt
        # in place, the staging directory beside the live file is swapped the same way
        readme = home / "notes" / "readme.md"
        backed_up_readme = readme.read_bytes()
        readme.write_text("changed since\n")
        jobs.restore("bob", "notes/readme.md", time=None, to=None, in_place=True)
        assert readme.read_bytes() == backed_up_readme
    finally:
        stop.touch()
        swaps = int(attacker.communicate(timeout=30)[0] or 0)
    for victim, snapshot_before in before.items():
        assert compare(snapshot_before, snapshot(victim)) == [], (victim, outcomes)
    assert swaps >= 6, f"the attacker swapped only {swaps} work entries: no race was run"
    # with the attack, restores still succeed: the swap changes nothing for root
    assert outcomes.count("restored") == 6, outcomes


def test_a_symlink_in_the_middle_of_the_to_path_is_not_followed(place, backed_up):
    """Found as a defect (fixed): `--to ~bob/link/new`, with `link` bob's symlink to a
    root-only directory: the staging directory was made with mkdir(parents=True), which
    followed the link: root made `new` inside the root-only directory and restored there."""
    jobs = backed_up
    home = place / "homes" / "bob"
    directory, file = root_only(place)
    before = snapshot(directory)
    (home / "link").symlink_to(directory)
    os.chown(home / "link", BOB, BOB, follow_symlinks=False)
    for path in (None, "notes/readme.md"):
        with pytest.raises(ConfigError, match="symlink"):
            jobs.restore("bob", path, time=None, to=str(home / "link" / "new" / "deeper"),
                         in_place=False)  # fmt: skip
        assert compare(before, snapshot(directory)) == []
    # a link root made in a directory only root can change is followed, as admins expect
    (place / "restores").mkdir(mode=0o755)
    (place / "to-restores").symlink_to(place / "restores")
    place.chmod(0o755)
    jobs.restore("bob", "notes/readme.md", time=None, to=str(place / "to-restores" / "a"),
                 in_place=False)  # fmt: skip
    assert (place / "restores/a/readme.md").read_bytes() == (home / "notes/readme.md").read_bytes()
