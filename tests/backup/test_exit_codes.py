"""hub-backup's exit codes as docs/exit-codes.md has them, each with one line on stderr: 75
(busy) while another job holds the job lock or a backup holds the chain a restore needs (real
flocks, held here as another hub-backup holds them), 1 for a run that cannot back up because
the source root is not mounted, 2 for a bad setting, with --config before or after COMMAND."""

from __future__ import annotations

import subprocess

import pytest

from realparts.backupsite import HUB_BACKUP, clean_env, make_site

BUSY = 75


@pytest.fixture
def site(tmp_path):
    return make_site(tmp_path, {"ada": 3701}, files=5)


def test_every_job_exits_busy_while_another_holds_the_job_lock(site):
    jobs = site.jobs()
    with jobs.job_lock().held():
        for command in ("run", "cleanup", "verify", "drill"):
            done = site.cli(command)
            assert done.returncode == BUSY, (command, done.stderr)
            [line] = done.stderr.splitlines()
            assert line.startswith("hub-backup: busy: another hub-backup run or cleanup is "
                                   "running"), (command, line)  # fmt: skip
    assert site.cli("run").returncode == 0  # the lock released, the run goes ahead


def test_a_restore_exits_busy_when_a_backup_keeps_its_chain_locked(site, tmp_path):
    """Before, exit 2 (bad usage) for what is a wait that ran out: try again later."""
    assert site.cli("run").returncode == 0
    jobs = site.jobs()
    chain = next(chain for chain in jobs.chains() if chain.user == "ada")
    into = tmp_path / "restored"
    with jobs.chain_lock(chain).held():  # as a running backup holds it
        done = site.cli("restore", "ada", "--to", str(into))  # waits 60 s, the minimum
    assert done.returncode == BUSY, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"hub-backup: busy: {chain.name} stayed locked for 60 s"), line
    assert not into.exists() or not any(into.iterdir())


def test_a_source_root_that_is_not_mounted_is_a_failed_run_not_a_bad_config(site):
    """The admin's configuration is right; the mount is missing: the run failed (1) and says
    so in one line, as a bare mountpoint already did, and status fails the same way."""
    site.source.rename(site.work / "homes.elsewhere")
    for command in ("run", "status"):
        done = site.cli(command)
        assert done.returncode == 1, (command, done.stderr)
        [line] = done.stderr.splitlines()
        assert line == f"hub-backup: error: the source {site.source} does not exist (not mounted?)"


def test_a_bad_setting_exits_2_with_config_before_or_after_the_command(site):
    config = site.config()
    config.write_text(config.read_text() + "keep_fulll = 3\n")
    for argv in (["--config", str(config), "status"], ["status", "--config", str(config)]):
        done = subprocess.run([str(HUB_BACKUP), *argv], check=False, env=clean_env(),
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stderr == f"hub-backup: error: {config}: unknown setting 'keep_fulll'\n"
