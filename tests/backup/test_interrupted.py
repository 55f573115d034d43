"""Interrupted backups with real duplicity and gpg: hub-backup (and its children) killed with -9
at several points of a multi-volume full and of an incremental, and a target disk that fills
mid-full. Files change before and after the point where the set was cut; every backup that
hub-backup then calls good must restore byte for byte as the home was when it ran (a resumed
set would not: duplicity skips what sorts before its restart point)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from backup.build import build_jobs
from backup.duplicity import lock_holder
from backup.settings import BackupSettings
from realparts.backupsite import HUB_BACKUP, PASSPHRASE, config_file, site_settings
from realparts.gpg import stop_agent
from realparts.homes import compare, snapshot
from realparts.proctree import alive, command_line, descendants, describe
from realparts.tmpfs import grow, small_tmpfs

MEGABYTE = 1024 * 1024
BIG_MB = 48  # incompressible: with VOLSIZE 8 a full has 7 volumes
VOLSIZE = 8
UID = 3021


def settings_in(work: Path, **changes) -> BackupSettings:
    return site_settings(work, parallelism=1, volsize=VOLSIZE, **changes)


def random_file(path: Path, megabytes: int) -> None:
    with open(path, "wb") as handle:
        for _ in range(megabytes):
            handle.write(os.urandom(MEGABYTE))


def make_home(root: Path) -> Path:
    """Small files whose names sort before the big one (duplicity writes them into vol1),
    the big incompressible file, and one small file after it."""
    home = root / "fay"
    home.mkdir(parents=True)
    (home / "0-notes.txt").write_text("notes, first version\n" * 50)
    (home / "0-todo.txt").write_text("todo\n")
    random_file(home / "big.bin", BIG_MB)
    (home / "z-last.txt").write_text("the last file\n")
    for path in [home, *home.iterdir()]:
        os.chown(path, UID, UID)
    return home


@pytest.fixture
def work(tmp_path):
    make_home(tmp_path / "homes")
    settings = settings_in(tmp_path)
    yield settings, tmp_path
    stop_agent(tmp_path / "cache" / ".gnupg")


def volumes(target: Path, kind: str) -> list[Path]:
    return sorted(target.glob(f"duplicity-{kind}.*.vol*.difftar*")) if target.exists() else []


def run_killed(config: Path, target: Path, kind: str, count: int) -> None:
    """`hub-backup run`, killed with -9 (it and every process below it, as systemd kills a
    unit) once `count` volumes of a `kind` ("full" / "inc") set are in the target."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_BACKUP")}
    before = len(volumes(target, kind))
    run = subprocess.Popen([str(HUB_BACKUP), "run", "--config", str(config), "fay"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 120
    while len(volumes(target, kind)) < before + count:
        assert time.monotonic() < deadline and run.poll() is None, run.stdout.read()
        time.sleep(0.02)
    for pid in [run.pid, *descendants(run.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    run.wait()


def good_run(settings, home: Path) -> tuple[str, dict]:
    """A `run` that must succeed: the set time hub-backup recorded and the home as it was."""
    jobs = build_jobs(settings)
    report = jobs.run(["fay"])
    assert report.exit_code == 0, report.outcomes
    record = jobs.state.load("home-fay")
    assert record.succeeded_last and record.last_set_time
    return record.last_set_time, snapshot(home)


def restored_at(settings, work: Path, moment: str | None, name: str) -> dict:
    jobs = build_jobs(settings)
    to = work / name
    assert jobs.restore("fay", None, time=moment, to=str(to), in_place=False) == 0
    return snapshot(to)


def change_before_the_cut(home: Path, text: str) -> None:
    """Changes to files that sort before the volumes already written."""
    (home / "0-new.txt").write_text(f"a new file: {text}\n")
    (home / "0-notes.txt").write_text(f"notes, {text}\n" * 60)
    os.chown(home / "0-new.txt", UID, UID)


@pytest.mark.parametrize("cut_after", [1, 2])
def test_a_full_killed_after_some_volumes_is_made_afresh_and_restores_exactly(work, cut_after):
    settings, tmp = work
    home = tmp / "homes" / "fay"
    target = tmp / "backups" / "fay"
    config = config_file(settings, tmp / "backup.toml")
    run_killed(config, target, "full", cut_after)
    change_before_the_cut(home, "edited after the kill")
    (home / "z-last.txt").write_text("the last file, edited after the kill\n")

    jobs = build_jobs(settings)
    report = jobs.run(["fay"])
    assert report.exit_code == 0, report.outcomes
    assert [outcome.action for outcome in report.outcomes] == ["full"]
    first = jobs.state.load("home-fay").last_set_time
    first_home = snapshot(home)

    (home / "0-notes.txt").write_text("notes, edited once more\n" * 70)
    second, second_home = good_run(settings, home)

    assert compare(second_home, restored_at(settings, tmp, None, "latest")) == []
    assert compare(first_home, restored_at(settings, tmp, first, "first")) == []


def test_an_incremental_killed_midway_is_made_afresh_and_restores_exactly(work):
    settings, tmp = work
    home = tmp / "homes" / "fay"
    target = tmp / "backups" / "fay"
    config = config_file(settings, tmp / "backup.toml")
    first, first_home = good_run(settings, home)
    # a new big file makes the incremental several volumes long
    change_before_the_cut(home, "before the incremental")
    random_file(home / "big.bin", BIG_MB)
    run_killed(config, target, "inc", 2)
    change_before_the_cut(home, "after the killed incremental")

    second, second_home = good_run(settings, home)
    (home / "0-notes.txt").write_text("notes, edited once more\n" * 70)
    third, third_home = good_run(settings, home)

    assert compare(third_home, restored_at(settings, tmp, None, "latest")) == []
    assert compare(second_home, restored_at(settings, tmp, second, "second")) == []
    assert compare(first_home, restored_at(settings, tmp, first, "first")) == []


def test_a_full_cut_by_a_full_target_disk_is_made_afresh_once_the_disk_is_grown(work):
    settings, tmp = work
    home = tmp / "homes" / "fay"
    with small_tmpfs(tmp / "backups", f"{BIG_MB // 2}m") as disk:
        failed = build_jobs(settings).run(["fay"])
        assert failed.exit_code != 0 and "full" in failed.outcomes[0].detail, failed.outcomes
        assert volumes(disk / "fay", "full"), "the failed full wrote no volume"
        change_before_the_cut(home, "edited while the disk was full")
        grow(disk, f"{BIG_MB * 4}m")

        first, first_home = good_run(settings, home)
        (home / "0-notes.txt").write_text("notes, edited once more\n" * 70)
        second, second_home = good_run(settings, home)

        assert compare(second_home, restored_at(settings, tmp, None, "latest")) == []
        assert compare(first_home, restored_at(settings, tmp, first, "first")) == []


def test_duplicity_dies_with_hub_backup_when_only_hub_backup_is_killed(work):
    """kill -9 of hub-backup alone (outside systemd, which would kill the whole unit):
    duplicity, in a session of its own, must not go on writing behind everyone's back."""
    settings, tmp = work
    home = tmp / "homes" / "fay"
    target = tmp / "backups" / "fay"
    config = config_file(settings, tmp / "backup.toml")
    # enough left to write after the first volume that duplicity, left alive, would still be
    # at it when we look
    random_file(home / "big2.bin", 3 * BIG_MB)
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_BACKUP")}
    run = subprocess.Popen([str(HUB_BACKUP), "run", "--config", str(config), "fay"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 120
    while not volumes(target, "full"):
        assert time.monotonic() < deadline and run.poll() is None, run.stdout.read()
        time.sleep(0.02)
    below = descendants(run.pid)
    assert any(b"duplicity" in command_line(pid) for pid in below)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    written = len(volumes(target, "full"))
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in below):
        assert time.monotonic() < deadline, [describe(pid) for pid in below if alive(pid)]
        time.sleep(0.05)
    assert len(volumes(target, "full")) <= written + 1  # the one being copied, at most
    (home / "big2.bin").unlink()

    # and the next run is a good one: no "another duplicity is running" (exit 23)
    change_before_the_cut(home, "after hub-backup was killed")
    first, first_home = good_run(settings, home)
    assert compare(first_home, restored_at(settings, tmp, None, "latest")) == []


def test_a_chain_held_by_a_live_duplicity_is_named_as_such(work):
    """An admin's own duplicity on the chain's archive dir (their GnuPG home, their terminal)
    is running: the run says who holds the chain, not duplicity's "Could not release
    lockfile"."""
    settings, tmp = work
    jobs = build_jobs(settings)
    argv = jobs.duplicity.argv("backup", [f"--volsize={VOLSIZE}"],
                               [str(tmp / "homes" / "fay"), f"file://{tmp}/by-hand"],
                               name="home-fay", encryption=jobs.encryption, log_fd=2)  # fmt: skip
    (tmp / "admin-gnupg").mkdir(mode=0o700)
    by_hand = subprocess.Popen(argv, env={"PATH": os.environ["PATH"], "PASSPHRASE": PASSPHRASE,
                                          "GNUPGHOME": str(tmp / "admin-gnupg"),
                                          "TMPDIR": str(tmp)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    try:
        lockfile = tmp / "cache" / "home-fay" / "lockfile"
        deadline = time.monotonic() + 60
        while lock_holder(str(lockfile)) is None:
            assert time.monotonic() < deadline and by_hand.poll() is None, by_hand.returncode
            time.sleep(0.02)
        report = jobs.run(["fay"])
        [outcome] = report.outcomes
        assert not outcome.ok
        assert f"held by a live duplicity (pid {by_hand.pid}" in outcome.detail, outcome.detail
    finally:
        os.killpg(by_hand.pid, signal.SIGKILL)
        by_hand.wait()
        stop_agent(tmp / "admin-gnupg")
