"""hub-backup's jobs with real duplicity, real gpg and real homes (file:// targets): run (full,
then incrementals), status, restore of one file and of a whole home byte for byte with owners
and modes, cleanup keeping the newest full chains, the job lock, a run killed mid-full."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup.build import build_jobs
from backup.jobs import JobBusy
from backup.settings import BackupSettings
from realparts.backupsite import HUB_BACKUP, PASSPHRASE, config_file, site_settings
from realparts.gpg import stop_agent
from realparts.homes import big_home, compare, is_junk, make_homes, mutate, snapshot
from realparts.proctree import descendants


def settings_in(work: Path, **changes) -> BackupSettings:
    """The shared site's settings (realparts/backupsite.py), two chains side by side."""
    return site_settings(work, parallelism=2, **changes)


@pytest.fixture
def setup(tmp_path):
    made = make_homes(tmp_path / "homes", {"ada": 3001, "bob": 3002, "cyd": 3003},
                      files_per_home=150, megabyte_files=0)  # fmt: skip
    settings = settings_in(tmp_path)
    yield settings, made, tmp_path
    # a test that calls duplicity itself last (collection_status) leaves its gpg-agent
    stop_agent(tmp_path / "cache" / ".gnupg")


def jobs_for(settings, **changes):
    return build_jobs(dataclasses.replace(settings, **changes))


def actions(report) -> dict[str, str]:
    return {outcome.chain: outcome.action for outcome in report.outcomes}


def test_full_then_incremental_then_restores_byte_for_byte(setup):
    settings, made, work = setup
    jobs = jobs_for(settings)
    first = jobs.run()
    assert first.exit_code == 0, first.outcomes
    assert actions(first) == {"home-ada": "full", "home-bob": "full", "home-cyd": "full"}

    changed = mutate(made["ada"].path, 6, seed=1)
    second = jobs.run()
    assert actions(second)["home-ada"] == "incremental"
    rows = {row["user"]: row for row in jobs.status()}
    assert rows["ada"]["incrementals"] == 1 and rows["ada"]["newest_full"]
    assert not any(row["stale"] for row in rows.values())

    # the whole home, as it is now (junk excluded, owners and modes kept)
    whole = work / "restore-whole"
    assert jobs.restore("ada", None, time=None, to=str(whole), in_place=False) == 0
    assert compare(snapshot(made["ada"].path, skip_junk=True), snapshot(whole)) == []
    assert not (whole / ".cache").exists()

    # one file, into a staging directory; the live home is not touched
    one = changed.changed[0] if changed.changed else changed.added[-1]
    staged = work / "restore-one"
    before = snapshot(made["ada"].path)
    jobs.restore("ada", one, time=None, to=str(staged), in_place=False)
    restored = staged / Path(one).name
    assert restored.read_bytes() == (made["ada"].path / one).read_bytes()
    assert restored.stat().st_mode == (made["ada"].path / one).stat().st_mode
    assert restored.stat().st_uid == 3001
    assert snapshot(made["ada"].path) == before


def test_in_place_restore_moves_the_live_file_aside(setup):
    settings, made, work = setup
    jobs = jobs_for(settings)
    jobs.run(["bob"])
    victim = made["bob"].path / "notes" / "readme.md"
    original = victim.read_bytes()
    victim.write_text("ransomware was here")
    jobs.restore("bob", "notes/readme.md", time=None, to=None, in_place=True)
    assert victim.read_bytes() == original
    [aside] = list(victim.parent.glob("readme.md.before-restore-*"))
    assert aside.read_text() == "ransomware was here"


def test_cleanup_keeps_the_newest_full_chains(setup):
    settings, made, work = setup
    # a full every run: full_every 1 s, a second between runs
    jobs = jobs_for(settings, full_every=1.0)
    for _ in range(3):
        assert actions(jobs.run(["cyd"])) == {"home-cyd": "full"}
        time.sleep(1.2)
    chain = [c for c in jobs.chains() if c.user == "cyd"][0]
    status = jobs.duplicity.collection_status(chain.target, name=chain.name,
                                              encryption=jobs.encryption)  # fmt: skip
    assert len(status.chains) == 3

    dry = jobs_for(settings, dry_run=True).cleanup(["cyd"])
    assert actions(dry) == {"home-cyd": "would-cleanup"}
    assert len(jobs.duplicity.collection_status(
        chain.target, name=chain.name, encryption=jobs.encryption).chains) == 3

    report = jobs.cleanup(["cyd"])
    assert report.exit_code == 0 and actions(report) == {"home-cyd": "cleanup"}
    kept = jobs.duplicity.collection_status(chain.target, name=chain.name,
                                            encryption=jobs.encryption)  # fmt: skip
    assert len(kept.chains) == 2
    assert kept.chains[0].start > status.chains[0].start  # the oldest went


def test_a_second_run_while_one_runs_exits_busy(setup):
    settings, made, work = setup
    jobs = jobs_for(settings)
    with jobs.job_lock().held():
        with pytest.raises(JobBusy, match="another hub-backup run or cleanup is running"):
            jobs_for(settings).run()


def write_config(settings, path: Path, **changes) -> Path:
    return config_file(dataclasses.replace(settings, **changes), path)


def test_killed_mid_full_then_the_next_run_makes_a_fresh_full_and_cleanup_waits(setup):
    settings, made, work = setup
    big_home(Path(settings.source), "dan", 60, uid=3004)
    config = write_config(settings, work / "backup.toml", volsize=5)
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_BACKUP")}
    run = subprocess.Popen([str(HUB_BACKUP), "run", "--config", str(config), "dan"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)  # fmt: skip
    # kill -9 (the whole group: hub-backup and duplicity) once volumes are being written
    target = work / "backups" / "dan"
    deadline = time.monotonic() + 60
    while not (target.exists() and len(list(target.glob("*.vol*"))) >= 2):
        assert time.monotonic() < deadline and run.poll() is None, run.stdout.read()
        time.sleep(0.05)
    # a run going on is no problem of its own (the chain is only stale: never backed up)
    [row] = [row for row in jobs_for(settings).status() if row["user"] == "dan"]
    assert row["in_progress"] and row["problem"] == "stale: never backed up", row
    # as systemd stops a unit: everything it started, duplicity in its own session included
    for pid in [run.pid, *descendants(run.pid)]:
        with contextlib.suppress(ProcessLookupError):  # died with its parent meanwhile
            os.kill(pid, signal.SIGKILL)
    run.wait()
    cut = {path.name.split(".")[1] for path in target.glob("*.vol*")}  # the killed set's time

    jobs = jobs_for(settings)
    [row] = [row for row in jobs.status() if row["user"] == "dan"]
    assert row["in_progress"] and row["stale"]
    assert "last backup interrupted: hub-backup was killed" in row["problem"], row
    # cleanup never touches a chain whose last backup did not complete
    assert actions(jobs.cleanup(["dan"])) == {"home-dan": "skipped"}

    # the next run does not resume the killed set (a resumed set loses what changed before
    # its restart point): it removes it and makes a new full
    again = jobs.run(["dan"])
    assert again.exit_code == 0, again.outcomes
    assert actions(again) == {"home-dan": "full"}
    made_now = {path.name.split(".")[1] for path in target.glob("*.vol*")}
    assert len(cut) == 1 and made_now and not made_now & cut, (cut, made_now)
    [row] = [row for row in jobs.status() if row["user"] == "dan"]
    assert not row["in_progress"] and not row["stale"]
    restored = work / "dan-restored"
    jobs.restore("dan", None, time=None, to=str(restored), in_place=False)
    assert compare(snapshot(Path(settings.source) / "dan"), snapshot(restored)) == []


def test_the_passphrase_never_shows_in_ps_or_the_log(setup):
    settings, made, work = setup
    big_home(Path(settings.source), "eve", 40, uid=3005)
    config = write_config(settings, work / "backup.toml")
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_BACKUP")}
    run = subprocess.Popen([str(HUB_BACKUP), "run", "--config", str(config), "--log-level",
                            "debug"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)  # fmt: skip
    seen = []
    while run.poll() is None:
        seen.append(subprocess.run(["ps", "-e", "-ww", "-o", "args"], capture_output=True,
                                   text=True).stdout)  # fmt: skip
        time.sleep(0.05)
    log = run.stdout.read()
    assert run.returncode == 0, log
    assert any("duplicity" in listing for listing in seen)  # we did look while it ran
    assert not any(PASSPHRASE in listing for listing in seen)
    assert PASSPHRASE not in log


def test_unreachable_target_and_wrong_passphrase_fail_per_chain_in_one_line(setup, capsys):
    settings, made, work = setup
    jobs = jobs_for(settings)
    assert jobs.run(["ada"]).exit_code == 0
    before = sorted(p.name for p in (work / "backups" / "ada").iterdir())

    # a target that cannot be written: one line per failed chain, exit 1, quickly
    blocker = work / "not-a-directory"
    blocker.write_text("")
    config = write_config(settings, work / "unreachable.toml",
                          target=f"file://{blocker}/{{user}}", retry_delay=1.0, retries=0)  # fmt: skip
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_BACKUP")}
    started = time.monotonic()
    done = subprocess.run([str(HUB_BACKUP), "run", "--config", str(config), "ada", "bob"],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1
    failed = [line for line in done.stderr.splitlines() if line.startswith("hub-backup: home-")]
    assert sorted(line.split(":")[1].strip() for line in failed) == ["home-ada", "home-bob"]
    assert time.monotonic() - started < 60

    # the wrong passphrase: gpg cannot read the chain; earlier backups untouched
    wrong = work / "wrong.passphrase"
    wrong.write_text("not the passphrase at all\n")
    wrong.chmod(0o600)
    mutate(made["ada"].path, 3, seed=9)
    report = jobs_for(settings, passphrase_file=str(wrong)).run(["ada"])
    [outcome] = report.outcomes
    assert not outcome.ok and "gpg" in outcome.detail.lower() and "\n" not in outcome.detail
    assert sorted(p.name for p in (work / "backups" / "ada").iterdir()) == before
    assert jobs.run(["ada"]).exit_code == 0  # the right passphrase goes on with the chain


def test_one_failed_chain_gives_one_error_line_also_in_the_journal(setup):
    """A chain whose target cannot be written fails with exactly one line at warning level or
    above, whether read in a terminal or as journald reads it (priority prefixes): the line
    naming the chain and why, not also the command runner's, the job's and the summary's."""
    settings, _, work = setup
    blocker = work / "not-a-directory"
    blocker.write_text("")
    config = write_config(settings, work / "unreachable.toml",
                          target=f"file://{blocker}/{{user}}", retry_delay=1.0, retries=0)  # fmt: skip
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("HUB_BACKUP") and key != "JOURNAL_STREAM"}  # fmt: skip
    done = subprocess.run([str(HUB_BACKUP), "run", "--config", str(config), "ada"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 1
    alarming = [line for line in done.stderr.splitlines()
                if line.startswith("hub-backup: ") or " level=warning " in f" {line} "
                or " level=error " in f" {line} "]  # fmt: skip
    assert len(alarming) == 1, done.stderr
    assert alarming[0].startswith("hub-backup: home-ada: duplicity backup failed")

    # under systemd: stderr is the journal stream, every line carries its priority
    journal = work / "journal.txt"
    with journal.open("w") as stream:
        status = os.fstat(stream.fileno())
        done = subprocess.run([str(HUB_BACKUP), "run", "--config", str(config), "ada"],
                              env={**env, "JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"},
                              stdout=subprocess.DEVNULL, stderr=stream, timeout=300,
                              check=False)  # fmt: skip
    assert done.returncode == 1
    lines = journal.read_text().splitlines()
    assert all(line[:1] == "<" and line[2:3] == ">" for line in lines), lines
    errors = [line for line in lines if int(line[1]) <= 4]  # err, warning and worse
    assert len(errors) == 1, lines
    # (the first run's set is unfinished: this one fails removing it, before backing up)
    assert errors[0].startswith("<3>hub-backup: home-ada: ") and "exit 50" in errors[0]


def test_verify_and_drill_report_per_user_and_catch_a_damaged_backup(setup):
    settings, made, work = setup
    jobs = jobs_for(settings, drill_files=4)
    # the drill samples files not modified since the backup: these were written an hour ago
    an_hour_ago = time.time() - 3600
    for home in (made["ada"].path, made["bob"].path):
        for path in home.rglob("*"):
            os.utime(path, (an_hour_ago, an_hour_ago), follow_symlinks=False)
    assert jobs.run(["ada", "bob"]).exit_code == 0

    verified = jobs.verify(["ada", "bob"])
    assert verified.exit_code == 0, verified.outcomes
    assert all(o.action == "verified" and "compared" in o.detail for o in verified.outcomes)
    drilled = jobs.drill(["ada", "bob"])
    assert drilled.exit_code == 0, drilled.outcomes
    assert {o.chain: o.detail for o in drilled.outcomes} == {
        "home-ada": "4 file(s) restored and identical",
        "home-bob": "4 file(s) restored and identical"}  # fmt: skip

    # a home file changed behind the backup's back (same size and mtime: as bit rot would)
    victim = sorted(p for p in made["bob"].path.rglob("*.txt") if p.stat().st_size > 10
                    and not is_junk(str(p.relative_to(made["bob"].path))))[0]  # fmt: skip
    info = victim.stat()
    data = bytearray(victim.read_bytes())
    data[0] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(info.st_atime_ns, info.st_mtime_ns))
    verified = jobs.verify(["bob"])
    [outcome] = verified.outcomes
    assert not outcome.ok and outcome.action == "differences"
    assert victim.name in outcome.detail


def test_two_runs_at_once_never_run_side_by_side(setup):
    """Two real `hub-backup run` processes: the second exits 75 saying so while the first
    works; one given --lock-wait waits for it, then backs up what is left to do."""
    settings, made, work = setup
    big_home(Path(settings.source), "dan", 30, uid=3004)
    config = write_config(settings, work / "backup.toml", volsize=5)
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_BACKUP")}
    first = subprocess.Popen([str(HUB_BACKUP), "run", "--config", str(config)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    target = work / "backups" / "dan"
    deadline = time.monotonic() + 60
    while not (target.exists() and any(target.glob("*.vol*"))):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    busy = subprocess.run([str(HUB_BACKUP), "run", "--config", str(config)], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert busy.returncode == 75, busy.stderr
    assert "another hub-backup run or cleanup is running" in busy.stderr
    assert first.poll() is None  # it was still running: the refusal was not a race won late

    mutate(made["ada"].path, 3, seed=11)
    waiter = subprocess.run([str(HUB_BACKUP), "run", "--config", str(config), "--lock-wait",
                             "5m"], env=env, capture_output=True, text=True, timeout=400)  # fmt: skip
    assert first.wait(timeout=60) == 0, first.stdout.read()
    assert waiter.returncode == 0, waiter.stderr
    rows = {row["user"]: row for row in jobs_for(settings).status()}
    assert rows["ada"]["incrementals"] == 1 and rows["dan"]["newest_full"]


def test_new_homes_are_picked_up_and_a_removed_home_keeps_its_backups(setup):
    settings, made, work = setup
    jobs = jobs_for(settings)
    assert jobs.run(["ada", "cyd"]).exit_code == 0
    kept = sorted(p.name for p in (work / "backups" / "cyd").iterdir())
    shutil.rmtree(made["cyd"].path)
    make_homes(Path(settings.source), {"dan": 3004}, files_per_home=10, megabyte_files=0)
    report = jobs.run()
    assert actions(report) == {"home-ada": "incremental", "home-bob": "full",
                               "home-cyd": "skipped", "home-dan": "full"}  # fmt: skip
    assert report.exit_code == 0
    rows = {row["user"]: row for row in jobs.status()}
    assert rows["cyd"]["home_present"] is False and rows["cyd"]["newest_full"]
    assert jobs.cleanup().exit_code == 0
    assert sorted(p.name for p in (work / "backups" / "cyd").iterdir()) == kept
    restored = work / "cyd-restored"
    jobs.restore("cyd", None, time=None, to=str(restored), in_place=False)
    assert any(restored.iterdir())


def test_files_duplicity_cannot_read_fail_the_chain_instead_of_passing_silently(setup):
    """duplicity leaves out a file it cannot read and still exits 0. hub-backup running
    without the power to read every home (here: root with its DAC capabilities dropped, as a
    unit missing CAP_DAC_READ_SEARCH would be) must say the backup is incomplete."""
    settings, made, work = setup
    for path in [made["ada"].path, *made["ada"].path.rglob("*")]:  # all readable, but one
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    secret_file = made["ada"].path / "private.txt"
    secret_file.write_text("only ada can read this\n")
    os.chown(secret_file, 3001, 3001)
    secret_file.chmod(0o600)
    config = write_config(settings, work / "backup.toml")
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_BACKUP")}
    powerless = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                 "--inh-caps=-dac_override,-dac_read_search"]  # fmt: skip
    done = subprocess.run([*powerless, str(HUB_BACKUP), "run", "--config", str(config), "ada",
                           "bob"], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = {line.split(":")[1].strip(): line for line in done.stderr.splitlines()
             if line.startswith("hub-backup: home-")}  # fmt: skip
    assert "1 file(s) could not be read" in lines["home-ada"]
    assert lines["home-ada"].endswith("private.txt")
    # bob's home (0700, his) cannot even be listed: duplicity backs it up empty and exits 0
    assert "could not be read" in lines["home-bob"]
    assert lines["home-bob"].endswith(str(made["bob"].path))
    rows = {row["user"]: row for row in jobs_for(settings).status()}
    assert "could not be read" in rows["ada"]["last_error"]
    assert rows["ada"]["last_attempt_ok"] is False

    # with the power to read, the next run is whole again
    done = subprocess.run([str(HUB_BACKUP), "run", "--config", str(config), "ada"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {row["user"]: row for row in jobs_for(settings).status()}
    assert rows["ada"]["last_error"] is None and rows["ada"]["last_attempt_ok"] is True


@pytest.fixture
def small_clock_margin(monkeypatch):
    """Changes up to 2 s (not 5 min) before a backup began count as made after it: the
    tests' file server is this machine."""
    monkeypatch.setattr("backup.selection.CLOCK_MARGIN_S", 2.0)


def test_an_unchanged_home_is_not_backed_up_again_but_any_change_is(setup, small_clock_margin):
    settings, made, work = setup
    jobs = jobs_for(settings)
    # the homes were just made: a change within 2 s before a backup's start (recorded in
    # whole seconds) counts as made after it (file systems with coarse timestamps)
    time.sleep(3.1)
    assert actions(jobs.run(["ada"])) == {"home-ada": "full"}
    target = work / "backups" / "ada"
    files_at_target = sorted(p.name for p in target.iterdir())
    first_success = jobs.status()[0]["last_success"]
    time.sleep(1.1)  # the next check is recorded at a later second

    assert actions(jobs.run(["ada"])) == {"home-ada": "unchanged"}
    assert sorted(p.name for p in target.iterdir()) == files_at_target  # duplicity never ran
    [row] = [row for row in jobs.status() if row["user"] == "ada"]
    assert row["last_success"] > first_success and not row["stale"]

    # junk changing (an excluded cache) is no change
    cache = made["ada"].path / ".cache"
    cache.mkdir(exist_ok=True)
    (cache / "pip.log").write_text("noise")
    assert actions(jobs.run(["ada"])) == {"home-ada": "unchanged"}

    home = made["ada"].path
    some_file = sorted(p for p in home.rglob("*.txt") if not is_junk(str(p.relative_to(home))))
    changes = [
        lambda: some_file[0].chmod(0o600),  # mode only
        lambda: some_file[1].unlink(),  # a deletion
        lambda: os.utime(some_file[2], (0, 0)),  # mtime set far back: ctime still moves
        lambda: some_file[3].rename(some_file[3].with_name("renamed.txt")),
    ]
    for change in changes:  # each one made after the last run began
        change()
        assert actions(jobs.run(["ada"])) == {"home-ada": "incremental"}

    restored = work / "restored"
    jobs.restore("ada", None, time=None, to=str(restored), in_place=False)
    assert compare(snapshot(home, skip_junk=True), snapshot(restored)) == []

    # with skip_unchanged off, duplicity runs every time
    time.sleep(2.1)
    assert actions(jobs_for(settings, skip_unchanged=False).run(["ada"])) == {
        "home-ada": "incremental"}  # fmt: skip


def test_an_unchanged_home_still_reaches_its_target_every_half_max_age(setup,
                                                                        small_clock_margin):
    """A broken target must not hide behind unchanged homes until status turns stale."""
    settings, made, work = setup
    assert jobs_for(settings).run(["bob"]).exit_code == 0
    time.sleep(2.1)
    later = jobs_for(settings, max_age=3600.0)
    later.now = lambda: datetime.now(UTC) + timedelta(minutes=31)
    (work / "backups" / "bob").rename(work / "bob-moved")
    (work / "backups" / "bob").write_text("not a directory")
    [outcome] = later.run(["bob"]).outcomes
    assert not outcome.ok and outcome.action == "failed"


def test_files_over_max_file_size_are_left_out_by_name_and_the_rest_restores(setup, caplog):
    settings, made, work = setup
    home = made["ada"].path
    odd = home / "data [1]*?.bin"  # glob characters: only this very file may be left out
    near = home / "data 1xy.bin"  # what its name matches as a glob, and small enough
    for path, size in ((odd, 3), (near, 1)):
        path.write_bytes(os.urandom(size * 1024 * 1024))
        os.chown(path, made["ada"].uid, made["ada"].gid)
    jobs = jobs_for(settings, max_file_size=2)
    with caplog.at_level("WARNING", logger="backup"):
        assert jobs.run(["ada"]).exit_code == 0
    left_out = [r.hub_fields for r in caplog.records if "left out" in r.getMessage()]
    assert left_out == [{"chain": "home-ada", "path": odd.name, "bytes": 3 * 1024 * 1024}]

    restored = work / "restored"
    jobs.restore("ada", None, time=None, to=str(restored), in_place=False)
    expected = {path: entry for path, entry in snapshot(home, skip_junk=True).items()
                if path != odd.name}  # fmt: skip
    assert compare(expected, snapshot(restored)) == []

    # with no limit, both are backed up; the drill never picks a file left out
    jobs = jobs_for(settings, max_file_size=0)
    mutate(home, 1, seed=4)
    assert jobs.run(["ada"]).exit_code == 0
    again = work / "again"
    jobs.restore("ada", None, time=None, to=str(again), in_place=False)
    assert (again / odd.name).read_bytes() == odd.read_bytes()


def test_a_change_where_only_a_glob_misread_would_look_away_is_seen(setup, small_clock_margin):
    """Found in review: the unchanged check matched an anchored exclude (`tmp`, meaning the
    home's own tmp/) at any depth and let `*` cross `/`, so a new file in work/tmp/, which
    duplicity backs up, left the home "unchanged" and out of the backups for hours."""
    settings, made, work = setup
    home = made["ada"].path
    (home / "work" / "tmp").mkdir(parents=True)
    (home / "tmp").mkdir()
    settings = dataclasses.replace(settings, excludes=("**/.cache", "tmp", "notes/*.md"))
    jobs = jobs_for(settings)
    time.sleep(3.1)
    assert actions(jobs.run(["ada"])) == {"home-ada": "full"}
    time.sleep(1.1)
    (home / "tmp" / "scratch").write_text("excluded: the home's own tmp/")
    (home / ".cache" / "new").write_text("excluded at any depth")
    assert actions(jobs.run(["ada"])) == {"home-ada": "unchanged"}
    for made_now in ("work/tmp/thesis2.tex", "notes/sub/readme.md"):
        path = home / made_now
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("chapter 2")
        assert actions(jobs.run(["ada"])) == {"home-ada": "incremental"}, made_now
    restored = work / "restored"
    jobs.restore("ada", None, time=None, to=str(restored), in_place=False)
    assert (restored / "work/tmp/thesis2.tex").read_text() == "chapter 2"
    assert (restored / "notes/sub/readme.md").exists() and not (restored / "tmp").exists()


def test_other_excludes_or_size_limit_make_the_next_run_a_backup(setup, small_clock_margin):
    """Found in review: after an exclude was removed or max_file_size raised, an untouched
    home still counted as unchanged, so what the admin now wants backed up stayed out."""
    settings, made, work = setup
    home = made["ada"].path
    (home / "data.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    time.sleep(3.1)
    assert actions(jobs_for(settings, max_file_size=2).run(["ada"])) == {"home-ada": "full"}
    time.sleep(1.1)
    assert actions(jobs_for(settings, max_file_size=2).run(["ada"])) == {"home-ada": "unchanged"}
    assert actions(jobs_for(settings, max_file_size=0).run(["ada"])) == {
        "home-ada": "incremental"}  # fmt: skip
    time.sleep(1.1)
    assert actions(jobs_for(settings, max_file_size=0).run(["ada"])) == {"home-ada": "unchanged"}
    fewer = tuple(p for p in settings.excludes if p != "**/.cache")
    assert actions(jobs_for(settings, max_file_size=0, excludes=fewer).run(["ada"])) == {
        "home-ada": "incremental"}  # fmt: skip
    restored = work / "restored"
    jobs_for(settings).restore("ada", None, time=None, to=str(restored), in_place=False)
    assert (restored / "data.bin").read_bytes() == (home / "data.bin").read_bytes()
    assert (restored / ".cache" / "pip" / "wheel.bin").exists()


def test_a_home_whose_name_holds_glob_characters_keeps_its_left_out_files_out(tmp_path):
    """Found in review: the home's own path went into the --exclude of a left-out file
    unescaped: for a home named x[1], duplicity refused every run (exit 14)."""
    made = make_homes(tmp_path / "homes", {"x[1]": 3011}, files_per_home=20, megabyte_files=0)
    big = made["x[1]"].path / "big.bin"
    big.write_bytes(os.urandom(2 * 1024 * 1024))
    jobs = build_jobs(settings_in(tmp_path, max_file_size=1))
    report = jobs.run()
    assert report.exit_code == 0, report.outcomes
    restored = tmp_path / "restored"
    jobs.restore("x[1]", None, time=None, to=str(restored), in_place=False)
    assert (restored / "notes" / "readme.md").exists() and not (restored / "big.bin").exists()


def test_run_full_starts_a_new_full_chain_now(setup):
    settings, made, work = setup
    jobs = jobs_for(settings)
    assert actions(jobs.run(["ada"])) == {"home-ada": "full"}
    time.sleep(1.1)  # a full in another second than the first
    # unchanged home, no full due: a plain run would record "unchanged"; --full makes one
    again = jobs.run(["ada"], full=True)
    assert actions(again) == {"home-ada": "full"}, again.outcomes
    chain = [c for c in jobs.chains() if c.user == "ada"][0]
    status = jobs.duplicity.collection_status(chain.target, name=chain.name,
                                              encryption=jobs.encryption)  # fmt: skip
    assert len(status.chains) == 2 and status.chains[-1].incrementals == 0
    [row] = [row for row in jobs.status() if row["user"] == "ada"]
    assert row["full_chains"] == 2 and row["incrementals"] == 0


def gpg_agent_environments(below: Path) -> list[bytes]:
    """The environment of every gpg-agent running now for a GnuPG home below `below` (other
    workers' tests run agents of their own, an admin's by-hand duplicity among them)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "gpg-agent":
                continue
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(below).encode() in environ + argv:
            found.append(environ)
    return found


def test_the_passphrase_never_reaches_the_gpg_agent(setup):
    """The agent outlives the run (and a plain duplicity of an admin's recovery): it must not
    hold PASSPHRASE in its environment."""
    settings, made, work = setup
    big_home(Path(settings.source), "eve", 40, uid=3005)
    config = write_config(settings, work / "backup.toml")
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_BACKUP")}
    run = subprocess.Popen([str(HUB_BACKUP), "run", "--config", str(config), "eve"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    seen = []
    while run.poll() is None:
        seen.extend(gpg_agent_environments(work))
        time.sleep(0.05)
    assert run.returncode == 0, run.stdout.read()
    assert seen, "no gpg-agent was seen during the run"
    assert not any(PASSPHRASE.encode() in environ for environ in seen)


def test_a_clock_gone_backwards_is_refused_naming_the_clock(setup):
    settings, made, work = setup
    jobs = jobs_for(settings)
    assert actions(jobs.run(["ada"])) == {"home-ada": "full"}
    mutate(made["ada"].path, 3, seed=5)
    behind = jobs_for(settings)
    behind.now = lambda: datetime.now(UTC) - timedelta(hours=2)  # the host clock, set back
    report = behind.run(["ada"])
    [outcome] = report.outcomes
    assert not outcome.ok and "host clock" in outcome.detail, outcome.detail
    chain = [c for c in jobs.chains() if c.user == "ada"][0]
    sets = jobs.duplicity.collection_status(chain.target, name=chain.name,
                                            encryption=jobs.encryption).chains[-1].sets  # fmt: skip
    assert len(sets) == 1  # no set written
    [row] = [row for row in jobs.status() if row["user"] == "ada"]
    assert "host clock" in row["problem"]
    # the clock put right: the next run backs up and clears it
    assert actions(jobs.run(["ada"])) == {"home-ada": "incremental"}
    [row] = [row for row in jobs.status() if row["user"] == "ada"]
    assert row["problem"] is None


def test_a_home_over_its_budget_is_left_incomplete_and_the_others_are_backed_up(setup):
    """Sparse files of exactly 1 GiB pass the per-file guard, yet duplicity reads every zero
    of each: past the home's budget its biggest files are left out, named, and the home is
    incomplete, while the other homes are backed up as usual."""
    settings, made, work = setup
    gus = Path(settings.source) / "gus"
    gus.mkdir()
    (gus / "notes.txt").write_text("gus's notes\n")
    for index in range(3):
        os.truncate(os.open(gus / f"zeros-{index}.bin", os.O_CREAT | os.O_WRONLY, 0o644),
                    1 << 30)  # fmt: skip
    for path in [gus, *gus.iterdir()]:
        os.chown(path, 3009, 3009)
    jobs = jobs_for(settings, home_budget=100)
    report = jobs.run()
    outcomes = {outcome.chain: outcome for outcome in report.outcomes}
    assert report.exit_code == 1
    assert {chain: o.action for chain, o in outcomes.items()} == {
        "home-ada": "full", "home-bob": "full", "home-cyd": "full", "home-gus": "incomplete"}
    detail = outcomes["home-gus"].detail
    assert "over its budget" in detail and "3 of the biggest left out" in detail, detail
    assert all(f"zeros-{index}.bin" in detail for index in range(3)), detail
    rows = {row["user"]: row for row in jobs.status()}
    assert rows["gus"]["incomplete"] and "incomplete: over its budget" in rows["gus"]["problem"]
    assert rows["ada"]["problem"] is None
    # what fits is in the backup: gus's own small files
    restored = work / "gus-restored"
    jobs.restore("gus", None, time="now", to=str(restored), in_place=False)
    assert (restored / "notes.txt").read_text() == "gus's notes\n"
    assert not list(restored.glob("zeros-*"))
