"""Monitoring hooks of `hub-backup run` through the real command line, real duplicity, and a
push monitor on 127.0.0.1 (realparts/pushrecorder): start, success and failure pushes
in healthchecks.io and Uptime Kuma style, the failure command, a URL kept secret, and hooks
that hang or fail without holding up or failing the backup."""

from __future__ import annotations

from pathlib import Path

from realparts.backupsite import config_file, hub_backup, site_settings
from realparts.gpg import stop_agent
from realparts.homes import make_homes
from realparts.pushrecorder import push_recorder

TOKEN = "f00dfeed-5ecr-e7t0-ken0-1234567890ab"


def configure(work: Path, homes: Path, hooks: str, **extra) -> Path:
    hooks_file = work / "backup.hooks"
    hooks_file.write_text(hooks)
    hooks_file.chmod(0o600)
    settings = site_settings(work, homes, hooks_file=str(hooks_file), retries=0,
                             log_level="debug", **extra)  # fmt: skip
    return config_file(settings, work / "backup.toml")


def test_start_and_success_then_failure_with_its_line_and_the_failure_command(tmp_path,
                                                                             homes_root):  # fmt: skip
    made = make_homes(homes_root, {"ada": 3301, "bob": 3302}, files_per_home=10,
                      megabyte_files=0)  # fmt: skip
    said = tmp_path / "failure-said"
    command = tmp_path / "on-failure.sh"
    command.write_text(f'#!/bin/sh\nprintf %s "$HUB_BACKUP_MESSAGE" > {said}\n')
    command.chmod(0o700)
    with push_recorder() as monitor:
        hooks = (f"# healthchecks.io style\nstart = {monitor.base}/ping/{TOKEN}/start\n"
                 f"success = {monitor.base}/ping/{TOKEN}\n"
                 f"failure = {monitor.base}/api/push/{TOKEN}?status=down&msg={{message}}\n")
        config = configure(tmp_path, homes_root, hooks, failure_command=str(command))
        try:
            good = hub_backup(config, "run")
            assert good.returncode == 0, good.stderr
            assert monitor.paths() == [f"/ping/{TOKEN}/start", f"/ping/{TOKEN}"]
            assert "2 chain(s) ok, 0 failed" in monitor.pushes[-1].body
            assert not said.exists()

            # bob's target breaks
            (tmp_path / "backups/bob").rename(tmp_path / "bob-moved")
            (tmp_path / "backups/bob").write_text("not a directory")
            (made["bob"].path / "new.txt").write_text("a change\n")
            bad = hub_backup(config, "run")
            assert bad.returncode == 1
            assert monitor.paths()[2:] == [f"/ping/{TOKEN}/start", f"/api/push/{TOKEN}"]
            failure = monitor.pushes[-1]
            assert "home-bob: duplicity backup failed" in failure.body, failure.body
            assert "status=down&msg=" in failure.query and "home-bob" in failure.query
            assert "home-bob: duplicity backup failed" in said.read_text()
            # the URLs are secrets: in no output, no log line (debug included)
            for run in (good, bad):
                assert TOKEN not in run.stdout + run.stderr
        finally:
            stop_agent(tmp_path / "cache" / ".gnupg")


def test_hooks_that_hang_or_fail_neither_fail_nor_stall_the_backup(tmp_path, homes_root):
    make_homes(homes_root, {"ada": 3301}, files_per_home=10, megabyte_files=0)
    with push_recorder() as monitor:
        monitor.behaviour[f"/ping/{TOKEN}/start"] = ("hang", 600)
        monitor.behaviour[f"/ping/{TOKEN}"] = ("status", 500)
        hooks = (f"start = {monitor.base}/ping/{TOKEN}/start\n"
                 f"success = {monitor.base}/ping/{TOKEN}\n")
        config = configure(tmp_path, homes_root, hooks, hook_timeout=2)
        try:
            # without the timeouts the hung start push would hold the run for 600 s
            run = hub_backup(config, "run", timeout=240)
            assert run.returncode == 0, run.stderr
            assert run.stderr.count("monitoring hook failed") == 2, run.stderr
            assert TOKEN not in run.stderr
            assert monitor.paths() == [f"/ping/{TOKEN}/start", f"/ping/{TOKEN}"]

            # a failure command that hangs: the failed run still ends, with its own exit code
            config = configure(tmp_path, homes_root, hooks, hook_timeout=2,
                               failure_command="sleep 600", source=str(tmp_path / "nowhere"))
            failed = hub_backup(config, "run", timeout=240)
            assert failed.returncode == 1 and "does not exist" in failed.stderr, failed.stderr
            assert "failure command failed" in failed.stderr
        finally:
            stop_agent(tmp_path / "cache" / ".gnupg")


def test_a_hooks_file_others_can_read_is_refused_and_the_backup_goes_on(tmp_path, homes_root):
    make_homes(homes_root, {"ada": 3301}, files_per_home=5, megabyte_files=0)
    with push_recorder() as monitor:
        config = configure(tmp_path, homes_root, f"success = {monitor.base}/ping/{TOKEN}\n")
        (tmp_path / "backup.hooks").chmod(0o644)
        try:
            run = hub_backup(config, "run")
            assert run.returncode == 0, run.stderr
            assert "monitoring hooks not used" in run.stderr and "readable by every user" in run.stderr
            assert monitor.pushes == [] and TOKEN not in run.stderr
        finally:
            stop_agent(tmp_path / "cache" / ".gnupg")
