"""hub-backup attacked, as a home owner and as bad luck would, against real duplicity and gpg.

A home owner controls everything inside their home: symlinks, FIFOs, sockets, odd names, and
when they change them. Bad luck brings full disks, deleted targets and caches, an unmounted
/home, a SIGTERM, a state file turned to garbage. Each test states what the admin must be able
to rely on. Tests of defects found and fixed say in their docstring what was wrong; the rest
guard what held up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import stat
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hubsidecars.clock import utcnow
from hubsidecars.config import ConfigError
from realparts import backupsite
from realparts.backupsite import HUB_BACKUP, Site, clean_env
from realparts.homes import big_home, compare, make_homes, mutate, snapshot
from realparts.proctree import (
    alive,
    descendants,
    describe,
    parent,
    process_group,
    program,
)
from realparts.tmpfs import fill, small_tmpfs

PASSPHRASE = "attack at dawn, 0123456789 passphrase"
NOBODY = 65534


def make_site(work: Path, users: dict[str, int] | None = None, files: int = 25) -> Site:
    return backupsite.make_site(work, users, files, passphrase=PASSPHRASE, parallelism=2,
                                retries=0, retry_delay=1.0)  # fmt: skip


@pytest.fixture
def site(tmp_path) -> Site:
    return make_site(tmp_path, {"ada": 3101, "bob": 3102})


def actions(report) -> dict[str, str]:
    return {outcome.chain: outcome.action for outcome in report.outcomes}


def tree(path: Path) -> dict:
    return snapshot(path) if path.exists() else {}


# -- a home owner's symlinks against restores run by root ---------------------------------------


def test_in_place_restore_never_writes_through_a_planted_symlink(site):
    """Found as a defect (fixed): restore --in-place follows a symlink the home
    owner put in place of a directory of the PATH: root stages, moves aside and renames the
    restored file inside the link's target (another user's home, /etc)."""
    jobs = site.jobs()
    assert jobs.run(["ada"]).exit_code == 0
    ada, bob = site.source / "ada", site.source / "bob"
    before_bob = snapshot(bob)
    # ada swaps her notes directory for a link to bob's, then asks the admin for her file back
    subprocess.run(["rm", "-rf", str(ada / "notes")], check=True)
    (ada / "notes").symlink_to(bob / "notes")
    with contextlib.suppress(ConfigError):  # refusing is fine; writing into bob's home is not
        jobs.restore("ada", "notes/readme.md", time=None, to=None, in_place=True)
    assert compare(before_bob, snapshot(bob)) == []


def test_in_place_restore_of_a_file_turned_symlink_moves_the_link_aside(site, tmp_path):
    jobs = site.jobs()
    assert jobs.run(["ada"]).exit_code == 0
    precious = tmp_path / "root-file"
    precious.write_text("root's file\n")
    live = site.source / "ada" / "notes" / "readme.md"
    backed_up = live.read_bytes()
    live.unlink()
    live.symlink_to(precious)
    jobs.restore("ada", "notes/readme.md", time=None, to=None, in_place=True)
    assert precious.read_text() == "root's file\n" and not precious.is_symlink()
    assert not live.is_symlink() and live.read_bytes() == backed_up
    [aside] = live.parent.glob("readme.md.before-restore-*")
    assert os.readlink(aside) == str(precious)


def test_restore_to_a_symlink_is_refused(site):
    """Found as a defect (fixed): restore --to DIR follows DIR when it is a
    symlink (e.g. one a user planted in their home where the admin restores for them): root
    writes the restored files into the link's target; for a whole home it dies with a
    NotADirectoryError traceback."""
    jobs = site.jobs()
    assert jobs.run(["ada"]).exit_code == 0
    elsewhere = site.work / "elsewhere"
    elsewhere.mkdir()
    planted = site.source / "ada" / "restored"
    planted.symlink_to(elsewhere)
    for path in ("notes/readme.md", None):
        with contextlib.suppress(ConfigError):
            jobs.restore("ada", path, time=None, to=str(planted), in_place=False)
        assert list(elsewhere.iterdir()) == []
        assert planted.is_symlink()


def test_whole_home_in_place_restore_creates_no_new_user(site):
    """Found as a defect (fixed): an in-place restore of a whole home moves the
    live home aside to SOURCE/USER.before-restore-STAMP, a visible directory of the source
    root, so the next run backs it up as a new user (a new chain, a new target, a status
    row, forever)."""
    jobs = site.jobs()
    assert jobs.run(["ada"]).exit_code == 0
    expected = snapshot(site.source / "ada", skip_junk=True)
    mutate(site.source / "ada", 3, seed=4)
    jobs.restore("ada", None, time=None, to=None, in_place=True)
    assert compare(expected, snapshot(site.source / "ada", skip_junk=True)) == []
    assert any("before-restore" in name for name in os.listdir(site.source))  # kept, somewhere
    assert sorted(chain.user for chain in jobs.chains()) == ["ada", "bob"]


def test_planted_links_fifos_and_sockets_are_backed_up_as_what_they_are(site, tmp_path):
    """A home owner's symlink to a root-only file gives back the link, never the file's
    content; a FIFO and a socket neither hang a run nor a verify."""
    secret = tmp_path / "root-only-secret"
    secret.write_text("root's secret\n")
    secret.chmod(0o600)
    ada = site.source / "ada"
    (ada / "shadow").symlink_to(secret)
    (ada / "up").symlink_to("..")
    os.mkfifo(ada / "pipe")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(ada / "sock"))
    for name in ("shadow", "up", "pipe", "sock"):
        os.chown(ada / name, 3101, 3101, follow_symlinks=False)
    jobs = site.jobs()
    started = time.monotonic()
    report = jobs.run(["ada"])
    assert report.exit_code == 0, report.outcomes
    verified = jobs.verify(["ada"])
    assert verified.exit_code == 0, verified.outcomes
    assert time.monotonic() - started < 90
    listener.close()
    out = tmp_path / "out"
    jobs.restore("ada", None, time=None, to=str(out), in_place=False)
    assert os.readlink(out / "shadow") == str(secret)
    assert os.readlink(out / "up") == ".."
    assert stat.S_ISFIFO((out / "pipe").lstat().st_mode)
    assert "root's secret" not in "".join(p.read_text(errors="replace") for p in
                                          out.rglob("*") if p.is_file() and not p.is_symlink())  # fmt: skip


def test_restore_refuses_paths_leaving_the_home(site):
    jobs = site.jobs()
    for path in ("../bob/notes/readme.md", "notes/../../bob", "./x"):
        with pytest.raises(ConfigError, match="inside the home"):
            jobs.restore("ada", path, time=None, to=str(site.work / "out"), in_place=False)
    with pytest.raises(ConfigError):
        jobs.restore("ada/../bob", None, time=None, to=str(site.work / "out"), in_place=False)
    assert not (site.work / "out").exists() or not any((site.work / "out").iterdir())


# -- names ---------------------------------------------------------------------------------------


def test_odd_home_names_get_distinct_chains_and_restore_exactly(tmp_path):
    names = {"a b": 3201, "a%20b": 3202, "-rf": 3204, "new\nline été": 3206}
    site = make_site(tmp_path, names, files=20)
    jobs = site.jobs(parallelism=3)
    report = jobs.run()
    assert report.exit_code == 0, report.outcomes
    chains = jobs.chains()
    assert sorted(c.user for c in chains) == sorted(names)
    assert len({c.name for c in chains}) == len({c.target for c in chains}) == len(names)
    assert len(list((tmp_path / "backups").iterdir())) == len(names)
    for number, name in enumerate(("a b", "a%20b")):  # the pair a URL could confuse
        out = tmp_path / f"out{number}"
        jobs.restore(name, None, time=None, to=str(out), in_place=False)
        assert compare(snapshot(site.source / name, skip_junk=True), snapshot(out)) == []
    rows = {row["user"]: row for row in jobs.status()}
    assert set(rows) == set(names) and not any(row["stale"] for row in rows.values())


# -- the passphrase --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "world-readable", "empty", "foreign-owner", "symlink"])
def test_an_unsafe_passphrase_file_is_one_line_exit_2(site, kind):
    bad = site.work / "bad.passphrase"
    if kind == "fifo":
        os.mkfifo(bad, 0o600)
    elif kind == "symlink":  # to a file a user owns and can rewrite
        mine = site.work / "users-file"
        mine.write_text(PASSPHRASE)
        mine.chmod(0o600)
        os.chown(mine, NOBODY, NOBODY)
        bad.symlink_to(mine)
    else:
        bad.write_text("" if kind == "empty" else PASSPHRASE)
        bad.chmod(0o644 if kind == "world-readable" else 0o600)
        if kind == "foreign-owner":
            os.chown(bad, NOBODY, NOBODY)
    done = site.cli("run", timeout=30, passphrase_file=str(bad))
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("hub-backup: error: ") and str(bad) in line
    assert not (site.work / "backups").exists()


def test_the_passphrase_is_in_nobody_elses_reach(site):
    """duplicity gets the passphrase in its environment: only root may read that; it is in
    no argv, no record, no status, no log."""
    big_home(site.source, "dan", 40, uid=3103)
    run = subprocess.Popen([str(HUB_BACKUP), "run", "--config", str(site.config()),
                            "--log-level", "debug", "dan"], env=clean_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    checked = 0
    try:
        while run.poll() is None:
            for pid in descendants(run.pid):
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    environ = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    continue
                assert PASSPHRASE.encode() not in cmdline
                if b"duplicity" in cmdline and PASSPHRASE.encode() in environ:
                    denied = subprocess.run(
                        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                         "cat", f"/proc/{pid}/environ"], check=False, capture_output=True)  # fmt: skip
                    if alive(pid):
                        assert denied.returncode != 0 and PASSPHRASE.encode() not in denied.stdout
                        checked += 1
            time.sleep(0.05)
    finally:
        log = run.communicate(timeout=120)[0]
    assert run.returncode == 0, log
    assert checked, "never saw duplicity with the passphrase while it ran"
    assert PASSPHRASE not in log
    status = site.cli("status", "--json")
    assert PASSPHRASE not in status.stdout + status.stderr
    for record in (site.work / "state").rglob("*"):
        if record.is_file():
            assert PASSPHRASE not in record.read_text(errors="replace")


# -- local state: records, cache, state disk ------------------------------------------------------


def test_an_existing_archive_dir_is_made_private(site):
    """Found as a defect (fixed): an archive dir that already exists (an admin's
    mkdir -p of an archive_dir outside the 0700 state dir, e.g. /var/cache/hub-backup) is
    used as it is: from a root shell (umask 022) duplicity's unencrypted file lists and
    signatures of every home land there 0644 in 0755 directories, readable by every local
    user (the units' StateDirectoryMode=0700 and UMask=0077 protect only the default path)."""
    archive = Path(site.settings.archive_dir)
    archive.mkdir(mode=0o755)
    archive.chmod(0o755)
    assert site.jobs().run().exit_code == 0
    assert list(archive.glob("home-ada/*.manifest"))
    assert stat.S_IMODE(archive.stat().st_mode) & 0o077 == 0


def test_a_record_with_a_malformed_timestamp_is_not_a_traceback(site):
    chains = Path(site.settings.state_dir) / "chains"
    chains.mkdir(parents=True)
    for user, moment in (("ada", "yesterday"), ("bob", "2026-01-01T00:00:00")):
        (chains / f"home-{user}.json").write_text(json.dumps({
            "chain": f"home-{user}", "user": user, "target": "file:///x", "in_progress": False,
            "last_attempt": moment, "last_success": moment, "newest_full": moment,
            "exit_code": 0}))  # fmt: skip
    """Found as a defect: a record that is JSON but holds a malformed value (a timestamp
    without offset or not a timestamp: an older version, a hand edit) crashed `status` and
    `run --dry-run` with a traceback. Such a record now counts as unreadable: never backed
    up, with a warning naming its file."""
    for command in (("status", "--json"), ("run",)):
        done = site.cli(*command, dry_run=True)
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode in (0, 1), done.stderr
        for user in ("ada", "bob"):
            assert f"home-{user}.json" in done.stderr and "unreadable" in done.stderr
    rows = {row["user"]: row for row in json.loads(site.cli("status", "--json").stdout)}
    assert all(row["stale"] and row["last_success"] is None for row in rows.values())


def test_status_counts_a_never_backed_up_home_as_stale(site):
    done = site.cli("status", "--json")
    assert done.returncode == 1, done.stderr
    rows = {row["user"]: row for row in json.loads(done.stdout)}
    assert set(rows) == {"ada", "bob"}
    assert all(row["stale"] and row["last_success"] is None for row in rows.values())


def test_five_hundred_homes_list_and_report_quickly(tmp_path):
    site = make_site(tmp_path)
    for number in range(500):
        (site.source / f"u{number:03}").mkdir()
    started = time.monotonic()
    dry = site.cli("run", dry_run=True)
    status = site.cli("status", "--json")
    assert time.monotonic() - started < 30
    assert dry.returncode == 0 and dry.stderr.count("would back up") == 500
    assert status.returncode == 1 and len(json.loads(status.stdout)) == 500


def test_garbage_records_are_rewritten_and_keep_cleanup_away(site):
    jobs = site.jobs()
    assert jobs.run().exit_code == 0
    chains = Path(site.settings.state_dir) / "chains"
    (chains / "home-ada.json").write_bytes(b"\x00{garbage" * 1000)
    (chains / "home-bob.json").write_text("[1, 2, 3]")
    # an unreadable record is as if never backed up: cleanup keeps away from the chain
    assert actions(jobs.cleanup()) == {"home-ada": "skipped", "home-bob": "skipped"}
    mutate(site.source / "ada", 2, seed=3)
    report = jobs.run()
    assert report.exit_code == 0, report.outcomes
    rows = {row["user"]: row for row in jobs.status()}
    assert all(rows[user]["last_success"] and not rows[user]["stale"] for user in ("ada", "bob"))
    assert json.loads((chains / "home-ada.json").read_text())["chain"] == "home-ada"


def test_a_full_state_disk_fails_each_chain_in_one_line(site):
    """Found as a defect (fixed): when the disk of state_dir is full (a cache that
    grew, /var full), saving a chain's record raises OSError(ENOSPC) out of the worker
    thread: the run dies with a Python traceback, no line per chain, the other chains'
    outcomes lost."""
    with small_tmpfs(site.work / "var", "3m") as var:
        changes = {"state_dir": str(var / "state"), "archive_dir": str(var / "cache")}
        assert site.cli("run", **changes).returncode == 0
        mutate(site.source / "ada", 2, seed=5)
        fill(var)
        done = site.cli("run", **changes)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    failed = [line for line in done.stderr.splitlines() if line.startswith("hub-backup: home-")]
    assert sorted(line.split(":")[1].strip() for line in failed) == ["home-ada", "home-bob"]


def test_a_full_cache_disk_says_so(tmp_path):
    """Found as a defect (fixed): with the disk of archive_dir (duplicity's cache, and the
    default GnuPG home) full, each chain failed with gpg's 'GnuPG agent does not allow
    loopback pinentry...': the admin was sent to edit gpg's configuration."""
    site = make_site(tmp_path, {"ada": 3401}, files=20)
    with small_tmpfs(tmp_path / "var", "2m") as var:
        site.settings = dataclasses.replace(site.settings, archive_dir=str(var / "cache"))
        assert site.cli("run").returncode == 0
        mutate(site.source / "ada", 3, seed=6)
        fill(var)
        done = site.cli("run")
    assert done.returncode == 1
    [line] = [line for line in done.stderr.splitlines() if line.startswith("hub-backup: ")]
    assert "space" in line.lower(), line


# -- the source root -------------------------------------------------------------------------------


def test_an_unmounted_home_root_fails_the_run(site):
    """Found as a defect (fixed): a source root that is an empty directory (an NFS
    /home not mounted) after backups were made: `run` counts every chain as ok ('home gone',
    skipped) and exits 0, so the unit succeeds while nothing is backed up."""
    assert site.cli("run").returncode == 0
    site.source.rename(site.work / "homes.mounted")
    site.source.mkdir()  # the bare mountpoint
    done = site.cli("run")
    assert done.returncode != 0, done.stderr
    assert str(site.source) in done.stderr


def test_a_missing_source_root_is_one_line(site):
    """Found as a defect (fixed): a missing source root makes run and status die
    with a FileNotFoundError traceback (os.scandir in backup/chains.py list_homes)."""
    assert site.cli("run", "ada").returncode == 0
    site.source.rename(site.work / "homes.gone")
    for command in ("run", "status"):
        done = site.cli(command)
        assert done.returncode != 0
        assert "Traceback" not in done.stderr, done.stderr
        assert str(site.source) in done.stderr


def test_a_deleted_users_chain_does_not_keep_status_red(site):
    """Found as a defect (fixed): a deleted user's chain (kept, as the issue
    wants) turns stale once max_age passes, and since cleanup never removes it, `hub-backup
    status` exits 1 forever after the first user is deleted: monitoring stays red and gets
    ignored."""
    assert site.jobs().run().exit_code == 0
    subprocess.run(["rm", "-rf", str(site.source / "bob")], check=True)
    later = site.jobs()
    later.now = lambda: utcnow() + timedelta(days=3)
    assert later.run().exit_code == 0
    rows = {row["user"]: row for row in later.status()}
    assert not rows["bob"]["home_present"] and rows["bob"]["last_success"]
    assert not rows["ada"]["stale"]
    assert not any(row["stale"] for row in rows.values())


# -- dry runs ---------------------------------------------------------------------------------------


def test_dry_runs_change_no_file(site):
    jobs = site.jobs(full_every=3600.0)
    assert jobs.run(["ada"]).exit_code == 0  # bob: never backed up
    mutate(site.source / "ada", 2, seed=7)
    places = [site.work / "backups", site.work / "state", site.work / "cache"]
    before = [tree(place) for place in places]
    for command in ("run", "cleanup"):
        done = site.cli(command, dry_run=True)  # bob: would-full, cleanup skipped
        assert done.returncode == 0, done.stderr
        assert "would" in done.stderr
    after = [tree(place) for place in places]
    # the gpg-agent's random seed and sockets come and go; everything else stays as it was
    for old, new in zip(before, after, strict=True):
        assert [line for line in compare(old, new) if ".gnupg" not in line] == []


# -- targets and caches that vanish or fill up ------------------------------------------------------


def test_deleted_target_and_deleted_cache_are_survived(site):
    jobs = site.jobs()
    assert jobs.run().exit_code == 0
    # the target of ada is gone (someone cleaned /srv): the next run starts a new full chain
    subprocess.run(["rm", "-rf", str(site.work / "backups" / "ada")], check=True)
    # the local cache is gone (a reinstall): bob's chain goes on from the target's own record
    subprocess.run(["rm", "-rf", site.settings.archive_dir], check=True)
    mutate(site.source / "bob", 2, seed=8)
    report = jobs.run()
    assert report.exit_code == 0, report.outcomes
    assert actions(report) == {"home-ada": "full", "home-bob": "incremental"}
    out = site.work / "out-bob"  # the chain whose cache went: rebuilt from the target
    jobs.restore("bob", None, time=None, to=str(out), in_place=False)
    assert compare(snapshot(site.source / "bob", skip_junk=True), snapshot(out)) == []


def fill_the_target(tmp_path: Path, target: Path) -> tuple[Site, object, dict]:
    """A site whose target is the tmpfs `target` (4 MB): a first backup of ada fits, then
    ada adds 8 MB of random data, which does not."""
    site = make_site(tmp_path, {"ada": 3301}, files=20)
    site.settings = dataclasses.replace(site.settings, target=f"file://{target}/{{user}}",
                                        volsize=1)  # fmt: skip
    jobs = site.jobs()
    assert jobs.run().exit_code == 0
    first = snapshot(site.source / "ada", skip_junk=True)
    big = site.source / "ada" / "data"
    big.mkdir()
    (big / "random.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    os.chown(big, 3301, 3301)
    os.chown(big / "random.bin", 3301, 3301)
    return site, jobs, first


def test_a_restore_after_a_failed_incremental_gives_the_last_complete_backup(tmp_path):
    """Found as a defect (fixed): after an incremental that failed (target disk
    full; the same after a kill), a restore of the latest state silently (exit 0) includes
    the half-written set: a 3 MB truncated copy of an 8 MB file that was never backed up
    whole."""
    with small_tmpfs(tmp_path / "target", "4m") as target:
        _, jobs, first = fill_the_target(tmp_path, target)
        assert jobs.run().exit_code == 1
        early = tmp_path / "early"
        jobs.restore("ada", None, time=None, to=str(early), in_place=False)
        assert compare(first, snapshot(early)) == []


def test_a_restore_after_a_failed_run_is_not_fooled_by_a_set_in_the_same_second(tmp_path):
    """Found in CI: the restore used the wall-clock end of the last complete backup, and the
    failed incremental that followed can be stamped by duplicity within that same second, so
    the half-written set was restored after all. The record keeps duplicity's own time of the
    last complete set (the name of its manifest); here the clock is made to collide."""
    with small_tmpfs(tmp_path / "target", "4m") as target:
        _, jobs, first = fill_the_target(tmp_path, target)
        [record] = jobs.state.all()
        [manifest] = [p.name for p in (target / "ada").glob("duplicity-full.*.manifest*")]
        set_stamp = manifest.split(".")[1]  # duplicity-full.20261123T101500Z.manifest.gpg
        assert record.last_set_time == datetime.strptime(
            set_stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).isoformat()  # fmt: skip
        assert jobs.run().exit_code == 1
        partial = sorted(p.name for p in (target / "ada").glob("duplicity-inc.*"))
        assert partial, "the failed incremental left nothing on the target"
        failed_stamp = partial[0].split(".")[3]  # duplicity-inc.T0.to.T1.*: T1
        record = jobs.state.load(record.chain)
        record.last_success_end = datetime.strptime(
            failed_stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).isoformat()  # fmt: skip
        jobs.state.save(record)
        early = tmp_path / "early"
        jobs.restore("ada", None, time=None, to=str(early), in_place=False)
        assert compare(first, snapshot(early)) == []


def test_a_full_target_disk_fails_cleanly_and_the_chain_recovers(tmp_path):
    with small_tmpfs(tmp_path / "target", "4m") as target:
        site, jobs, _ = fill_the_target(tmp_path, target)
        done = site.cli("run")
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        [line] = [line for line in done.stderr.splitlines() if line.startswith("hub-backup: ")]
        assert line.startswith("hub-backup: home-ada: duplicity")
        [row] = jobs.status()
        assert row["last_error"] and row["last_success"] != row["last_attempt"]
        assert actions(jobs.cleanup()) == {"home-ada": "skipped"}  # not after a failed backup
        # space comes back: the next run completes the chain
        subprocess.run(["mount", "-o", "remount,size=64m", str(target)], check=True)
        report = jobs.run()
        assert report.exit_code == 0, report.outcomes
        out = tmp_path / "out"
        jobs.restore("ada", None, time=None, to=str(out), in_place=False)
        assert compare(snapshot(site.source / "ada", skip_junk=True), snapshot(out)) == []


# -- signals and concurrency ------------------------------------------------------------------------


def start_big_run(site: Site, user: str, mb: int, uid: int) -> tuple[subprocess.Popen, list]:
    big_home(site.source, user, mb, uid=uid)
    run = subprocess.Popen([str(HUB_BACKUP), "run", "--config", str(site.config(volsize=5)),
                            user], env=clean_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)  # fmt: skip
    target = site.work / "backups" / user
    deadline = time.monotonic() + 60
    while not (target.exists() and list(target.glob("*.vol*"))):
        assert time.monotonic() < deadline and run.poll() is None, run.stdout.read()
        time.sleep(0.05)
    return run, descendants(run.pid)


def duplicity_group(run: subprocess.Popen, children: list[int]) -> tuple[int, list[int]]:
    """The process group hub-backup started duplicity in, and the processes in it (gpg
    among them). A gpg-agent that gpg launched is in a session of its own: it is not
    duplicity and outlives a run by design (the next run stops it)."""
    groups = {process_group(pid) for pid in children if parent(pid) == run.pid}
    assert len(groups) == 1 and None not in groups, {pid: describe(pid) for pid in children}
    [group] = groups
    return group, [pid for pid in children
                   if process_group(pid) == group and program(pid) != "gpg-agent"]


@pytest.mark.parametrize("frozen", ["gpg", "duplicity and gpg"])
def test_sigterm_to_hub_backup_stops_its_duplicity(site, frozen):
    """Found as defects (fixed): SIGTERM to hub-backup (kill PID, a timeout wrapper, systemd
    with KillMode=mixed/process) ended Python at once; duplicity, in its own session, ran on
    orphaned with the job and chain locks released, so the next run started a second
    duplicity on the same chain and overwrote the record. Then, found in CI: a gpg that
    does not end on SIGTERM (stuck on a hung disk; gpg handles the signal) outlived
    hub-backup, whose SIGKILL after the grace died with it."""
    run, children = start_big_run(site, "dan", 30, 3103)
    in_group = []
    try:
        group, in_group = duplicity_group(run, children)
        # caught while gpg encrypts a volume
        deadline = time.monotonic() + 30
        while not any(program(pid) == "gpg" for pid in in_group):
            assert time.monotonic() < deadline and run.poll() is None, "no gpg seen"
            time.sleep(0.02)
            group, in_group = duplicity_group(run, descendants(run.pid))
        for pid in in_group:
            if frozen != "gpg" or program(pid) == "gpg":
                with contextlib.suppress(ProcessLookupError):  # a gpg done with its volume
                    os.kill(pid, signal.SIGSTOP)
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in in_group) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {pid: describe(pid) for pid in in_group
                if alive(pid) and process_group(pid) == group}  # fmt: skip
        assert left == {}, "duplicity outlived hub-backup"
        [row] = [row for row in site.jobs().status() if row["user"] == "dan"]
        # the record says the chain did not complete (interrupted, or its duplicity killed)
        assert row["last_success"] is None and (row["in_progress"] or row["last_error"])
    finally:
        for pid in {*children, *in_group}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            run.communicate(timeout=10)
        site.jobs().duplicity.stop_agent()


def test_a_run_while_a_restore_holds_the_chain_never_runs_beside_it(site):
    jobs = site.jobs()
    mutate(site.source / "ada", 2, seed=11)
    with jobs.chain_lock(next(c for c in jobs.chains() if c.user == "ada")).held():
        done = site.cli("run", "ada")
    assert done.returncode == 1
    failed = [line for line in done.stderr.splitlines() if line.startswith("hub-backup: home-")]
    assert len(failed) == 1 and failed[0].startswith("hub-backup: home-ada:")
    assert "locked" in failed[0]
    assert site.cli("run", "ada").returncode == 0  # and the next run catches up


def test_a_sparse_giant_in_one_home_does_not_stall_the_others(tmp_path):
    """Found as a defect (fixed): one home owner stalled every backup of the hub with one
    command, `truncate -s 1T file`: a sparse file costs no space or quota, duplicity reads
    its zeros at 25-40 MB/s, so the chain ran until chain_timeout (6 h) holding a worker and
    the job lock; the other homes waited. Such a file is now left out, with a warning."""
    site = make_site(tmp_path, {"ada": 3501, "bob": 3502}, files=20)
    giant = site.source / "ada" / "giant.bin"
    with open(giant, "wb") as handle:
        handle.truncate(1 << 40)  # 1 TiB, no block allocated
    os.chown(giant, 3501, 3501)
    run = subprocess.Popen([str(HUB_BACKUP), "run", "--config",
                            str(site.config(parallelism=1, chain_timeout=3600.0))],
                           env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)  # fmt: skip
    try:
        run.wait(timeout=120)  # stalled, ada's 1 TiB alone is 7 hours
    except subprocess.TimeoutExpired:
        pass
    finally:
        if run.poll() is None:
            # duplicity runs in a session of its own: find it before its parent goes
            left = descendants(run.pid)
            os.killpg(run.pid, signal.SIGKILL)
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        output = run.communicate(timeout=30)[0]
        site.jobs().duplicity.stop_agent()
    rows = {row["user"]: row for row in site.jobs().status()}
    assert rows["bob"]["last_success"], "bob's home waited behind ada's sparse file"
    assert rows["ada"]["last_success"] and not rows["ada"]["last_error"], output
    [warning] = [line for line in output.splitlines() if "left out of the backup" in line]
    assert "giant.bin" in warning and str(1 << 40) in warning


# -- restore's own failures -------------------------------------------------------------------------


@pytest.fixture
def backed_up(tmp_path) -> Site:
    site = make_site(tmp_path, {"ada": 3601}, files=20)
    assert site.cli("run").returncode == 0
    return site


def test_a_refused_restore_is_one_line(backed_up):
    """Found as a defect (fixed): a restore that duplicity refuses (a PATH not in
    the backup: exit 19; a --time it cannot parse: exit 23; a wrong passphrase, a target
    gone) ends `hub-backup restore` with a Python traceback of DuplicityFailed, the reason
    buried at its end."""
    out = backed_up.work / "out"
    done = backed_up.cli("restore", "ada", "no/such/file", "--to", str(out))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("hub-backup:")]
    assert "not found" in line
    assert not out.exists()  # the staging directory it made is gone with the failure
    # a --time that is no time (or out of every calendar) is refused before duplicity runs
    for moment in ("garbage", "999999999999", "99999999Y", "\u00b2", "2026/11/20"):
        done = backed_up.cli("restore", "ada", "notes/readme.md", "--time", moment, "--to",
                             str(out))  # fmt: skip
        assert done.returncode == 2, (moment, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        [line] = [line for line in done.stderr.splitlines() if line.startswith("hub-backup:")]
        assert "--time" in line and "ISO 8601" in line
    assert not out.exists()


def test_a_restore_older_than_every_backup_is_not_silent(backed_up):
    """Found as a defect (fixed): `restore --time T` with T before the oldest backup kept
    restored the oldest one instead and said 'restored', exit 0: files handed back as of
    another day than asked."""
    out = backed_up.work / "out"
    done = backed_up.cli("restore", "ada", "--time", "1999-01-01", "--to", str(out))
    assert done.returncode == 2, done.stderr
    assert "no backup of ada as old as 1999-01-01" in done.stderr
    assert "the oldest kept is 20" in done.stderr and not out.exists()
    # a time after the first backup still restores
    done = backed_up.cli("restore", "ada", "--time", "now", "--to", str(out))
    assert done.returncode == 0, done.stderr


def test_a_reused_user_name_starts_a_new_chain(tmp_path):
    """Found as a defect (fixed): a user name reused by another person (class hubs reuse
    student1 every term) was backed up as an incremental on the previous owner's chain, so
    a restore --time before the switch handed the previous person's files out under the new
    person's name, and nothing said the chain had changed hands."""
    site = make_site(tmp_path, {"ada": 3701}, files=20)
    jobs = site.jobs()
    assert jobs.run().exit_code == 0
    [previous] = jobs.state.all()
    subprocess.run(["rm", "-rf", str(site.source / "ada")], check=True)
    make_homes(site.source, {"ada": 3799}, files_per_home=20, megabyte_files=0, seed=1)
    time.sleep(1.1)  # the hand-over is seen a second after the first backup's set
    report = jobs.run()
    assert report.exit_code == 0, report.outcomes
    assert actions(report) == {"home-ada": "full"}
    [row] = jobs.status()
    assert row["owner_uid"] == 3799 and row["full_chains"] == 2
    # the next run, same owner: back to incrementals on the new person's chain
    mutate(site.source / "ada", 2, seed=3)
    assert actions(jobs.run()) == {"home-ada": "incremental"}

    # the previous person's files are not one --time away under the new person's name
    out = tmp_path / "out"
    done = site.cli("restore", "ada", "--time", previous.last_set_time, "--to", str(out))
    assert done.returncode == 2 and "--previous-owner" in done.stderr, done.stderr
    assert not out.exists()
    done = site.cli("restore", "ada", "--time", previous.last_set_time, "--to", str(out),
                    "--previous-owner")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {path.stat().st_uid for path in out.rglob("*")} == {3701}
    latest = tmp_path / "latest"
    assert site.cli("restore", "ada", "--to", str(latest)).returncode == 0
    assert {path.stat().st_uid for path in latest.rglob("*")} == {3799}


def test_a_previous_owners_files_come_back_with_their_uid_when_the_name_moved(tmp_path):
    """Found as a defect (fixed): duplicity maps owners by name, so `restore --previous-owner`
    handed the previous person's files to whoever holds their account name now."""
    name = f"i13q{os.getpid() % 100000}"
    subprocess.run(["useradd", "--no-create-home", "--uid", "3711", name], check=True,
                   capture_output=True)  # fmt: skip
    try:
        site = make_site(tmp_path, {"ada": 3711}, files=5)
        jobs = site.jobs()
        assert jobs.run().exit_code == 0
        [previous] = jobs.state.all()
        # the account name now belongs to uid 3712, who also got the home
        subprocess.run(["usermod", "--uid", "3712", name], check=True, capture_output=True)
        subprocess.run(["chown", "-R", "3712:3712", str(site.source / "ada")], check=True)
        time.sleep(1.1)  # the hand-over is seen a second after the first backup's set
        assert actions(jobs.run()) == {"home-ada": "full"}
        out = tmp_path / "out"
        done = site.cli("restore", "ada", "--time", previous.last_set_time, "--to", str(out),
                        "--previous-owner")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert {path.stat().st_uid for path in out.rglob("*")} == {3711}
    finally:
        subprocess.run(["userdel", name], capture_output=True)
