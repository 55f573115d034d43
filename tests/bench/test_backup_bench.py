"""The backup benchmark's parts: its bare duplicity commands are the ones hub-backup runs (real
hub-backup, real duplicity, real gpg on two small homes), they build chains hub-backup carries
on, and the split of hub-backup's wall time adds up."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.backup import (
    PASSPHRASE,
    argv_check,
    backup_argv,
    load_jobs,
    run_bare,
    run_hub_backup,
    stop_agents,
    time_split,
    write_config,
)
from realparts.homes import make_homes


@pytest.fixture
def two_homes(tmp_path: Path):
    source = tmp_path / "homes"
    make_homes(source, {"ada": 21001, "bob": 21002}, files_per_home=20, megabyte_files=0)
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o600)
    yield source, secret, tmp_path
    stop_agents(tmp_path)


def config_in(tmp_path: Path, name: str, source: Path, secret: Path, parallelism: int) -> Path:
    work = tmp_path / name
    work.mkdir()
    return write_config(work / "backup.toml", source=source, target_root=work / "targets",
                        passphrase_file=secret, work=work, parallelism=parallelism)  # fmt: skip


def test_the_bare_commands_are_those_hub_backup_runs(two_homes):
    """What the benchmark compares only means something if (a) runs hub-backup's very
    command lines: checked against the ones hub-backup logs for the same config."""
    source, secret, tmp_path = two_homes
    config = config_in(tmp_path, "b", source, secret, 1)
    measured, events = run_hub_backup("b", config, tmp_path / "b" / "run.log")
    assert measured.chains == 2 and measured.kinds == {"full": 2}
    assert argv_check(load_jobs(config), events) == (2, 2, [])
    assert measured.peak_rss_mib > 5 and measured.own_cpu_s > 0  # the process was watched
    split = measured.split
    # hub-backup's own time and duplicity's add up to the wall time
    assert split["startup_s"] + split["duplicity_busy_s"] + split["idle_between_s"] + split[
        "end_s"] == pytest.approx(measured.wall_s, abs=0.05)  # fmt: skip
    assert 0 < split["startup_s"] < measured.wall_s


def test_a_bare_run_leaves_chains_hub_backup_goes_on_with(two_homes):
    """The bare commands do a backup's whole work: hub-backup, given the same archive dir and
    targets afterwards, finds full chains there and adds incrementals."""
    source, secret, tmp_path = two_homes
    config = config_in(tmp_path, "a", source, secret, 2)
    jobs = load_jobs(config)
    bare = run_bare("a", jobs, jobs.chains())
    assert bare.chains == 2 and bare.wall_s > 0 and bare.cpu_s > 0
    for user in ("ada", "bob"):
        assert list((tmp_path / "a" / "targets" / user).glob("duplicity-full.*.manifest.gpg"))
    again, _ = run_hub_backup("a", config, tmp_path / "a" / "run.log")
    assert again.kinds == {"incremental": 2}


def test_argv_check_reports_a_command_line_that_differs(two_homes):
    source, secret, tmp_path = two_homes
    jobs = load_jobs(config_in(tmp_path, "x", source, secret, 1))
    chain = jobs.chains()[0]
    argv = backup_argv(jobs, chain, 7)
    changed = [arg.replace("--volsize=200", "--volsize=50") for arg in argv]
    events = [duplicity_event(argv, 1.0, 0.5), duplicity_event(changed, 2.0, 0.5)]
    equal, compared, first = argv_check(jobs, events)
    assert (equal, compared) == (1, 2)
    assert "--volsize=50" in first[0] and "--volsize=200" in first[1]


def duplicity_event(argv, end: float, seconds: float) -> dict:
    ts = datetime.fromtimestamp(end, UTC).isoformat(timespec="milliseconds")
    return {"tool": "duplicity", "msg": "command finished", "ts": ts,
            "duration_ms": seconds * 1000, "argv": shlex.join(argv)}  # fmt: skip


def test_time_split_counts_overlapping_commands_once():
    """Two chains side by side (parallelism 2) then one alone: duplicity was busy for the
    union of the three intervals, not their sum."""
    events = [
        duplicity_event(["duplicity", "--name=a"], 105.0, 4.0),  # 101-105
        duplicity_event(["duplicity", "--name=b"], 104.0, 2.0),  # 102-104
        duplicity_event(["duplicity", "--name=c"], 108.0, 2.0),  # 106-108
        {"tool": "gpgconf", "ts": datetime.fromtimestamp(100.5, UTC).isoformat(),
         "duration_ms": 20.0},  # fmt: skip
        json.loads('{"msg": "backed up"}'),
    ]
    split = time_split(events, started=100.0, ended=109.0)
    assert split["duplicity_sum_s"] == pytest.approx(8.0)
    assert split["duplicity_busy_s"] == pytest.approx(6.0)
    assert split["startup_s"] == pytest.approx(1.0)
    assert split["end_s"] == pytest.approx(1.0)
    assert split["idle_between_s"] == pytest.approx(1.0)
    assert split["gpgconf_s"] == pytest.approx(0.02)
