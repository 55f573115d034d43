"""What an admin watches: `hub-backup status` (table, --json, exit code) and the Prometheus
textfile written after every command, through the real command line, real duplicity."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from realparts.backupsite import (
    HUB_BACKUP,
    PASSPHRASE,
    config_file,
    hub_backup,
    site_settings,
)
from realparts.homes import make_homes


def configure(work: Path, homes: Path, **extra) -> Path:
    settings = site_settings(work, homes, metrics_file=str(work / "metrics/backup.prom"),
                             drill_files=3, **extra)  # fmt: skip
    return config_file(settings, work / "backup.toml")


def samples(path: Path) -> dict[tuple[str, str], float]:
    """{(metric, user or ""): value} from the textfile, parsed by Prometheus' own parser."""
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found[(sample.name, sample.labels.get("user", ""))] = sample.value
    return found


def test_status_and_metrics_follow_successes_failures_and_drills(tmp_path, homes_root):
    made = make_homes(homes_root, {"ada": 3201, "bob": 3202}, files_per_home=20,
                      megabyte_files=0)  # fmt: skip
    config = configure(tmp_path, homes_root)
    metrics = tmp_path / "metrics/backup.prom"

    never = hub_backup(config, "status")
    assert never.returncode == 1  # never backed up is stale
    assert "STALE" in never.stdout and "never" in never.stdout
    assert samples(metrics)[("hub_backup_stale", "ada")] == 1

    started = time.time()
    assert hub_backup(config, "run").returncode == 0
    fresh = hub_backup(config, "status", "--json")
    assert fresh.returncode == 0, fresh.stdout
    rows = {row["user"]: row for row in json.loads(fresh.stdout)}
    assert set(rows) == {"ada", "bob"} and not any(row["stale"] for row in rows.values())
    assert PASSPHRASE not in fresh.stdout + fresh.stderr
    figures = samples(metrics)
    assert figures[("hub_backup_stale", "ada")] == 0
    assert figures[("hub_backup_last_attempt_success", "ada")] == 1
    assert started - 2 <= figures[("hub_backup_last_success_timestamp_seconds", "ada")] <= time.time()
    assert figures[("hub_backup_last_bytes", "ada")] > 0
    assert figures[("hub_backup_chains", "")] == 2
    assert (metrics.stat().st_mode & 0o777) == 0o644

    # bob's target breaks: his last attempt fails, his last success stays where it was
    last_success = figures[("hub_backup_last_success_timestamp_seconds", "bob")]
    (tmp_path / "backups/bob").rename(tmp_path / "bob-moved")
    (tmp_path / "backups/bob").write_text("not a directory")
    (made["bob"].path / "new-notebook.ipynb").write_text("{}\n")  # a change: duplicity runs
    time.sleep(1.1)
    assert hub_backup(config, "run", "--retries", "0").returncode == 1
    figures = samples(metrics)
    assert figures[("hub_backup_last_attempt_success", "bob")] == 0
    assert figures[("hub_backup_last_attempt_success", "ada")] == 1
    assert figures[("hub_backup_last_success_timestamp_seconds", "bob")] == last_success
    table = hub_backup(config, "status")
    [bob_line] = [line for line in table.stdout.splitlines() if line.startswith("bob ")]
    assert "last error" in bob_line
    # a failed last attempt needs a look at once, not max_age later: status and one metric
    assert table.returncode == 1, table.stdout
    assert samples(metrics)[("hub_backup_problem", "bob")] == 1
    assert samples(metrics)[("hub_backup_problem", "ada")] == 0

    # a drill that finds a damaged file: recorded, shown in status and in the metrics
    an_hour_ago = time.time() - 3600
    for path in made["ada"].path.rglob("*"):
        os.utime(path, (an_hour_ago, an_hour_ago), follow_symlinks=False)
    assert hub_backup(config, "run", "ada").returncode == 0
    assert hub_backup(config, "drill", "ada").returncode == 0
    assert samples(metrics)[("hub_backup_last_drill_success", "ada")] == 1
    for path in made["ada"].path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o600 if path.stat().st_mode & 0o777 != 0o600 else 0o640)
    assert hub_backup(config, "drill", "ada").returncode == 1
    assert samples(metrics)[("hub_backup_last_drill_success", "ada")] == 0
    assert "last drill failed" in hub_backup(config, "status").stdout
    assert samples(metrics)[("hub_backup_problem", "ada")] == 1
    [ada] = [row for row in json.loads(hub_backup(config, "status", "--json").stdout)
             if row["user"] == "ada"]  # fmt: skip
    assert ada["problem"].startswith("last drill failed") and not ada["stale"]


def test_metrics_stay_unwritten_on_a_dry_run_and_status_is_stale_past_max_age(tmp_path,
                                                                              homes_root):  # fmt: skip
    make_homes(homes_root, {"ada": 3201}, files_per_home=5, megabyte_files=0)
    config = configure(tmp_path, homes_root, max_age=60)
    assert hub_backup(config, "run", "--dry-run").returncode == 0
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "backups").exists()
    assert hub_backup(config, "run").returncode == 0
    assert hub_backup(config, "status").returncode == 0
    # 61 s later the same backup is too old for max_age 60: as a stopped timer would leave it
    record = tmp_path / "state/chains/home-ada.json"
    data = json.loads(record.read_text())
    moved_back = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 61))
    data["last_success"] = data["last_attempt"] = moved_back
    record.write_text(json.dumps(data))
    stale = hub_backup(config, "status")
    assert stale.returncode == 1 and "STALE" in stale.stdout


def test_a_run_that_could_not_read_the_home_is_incomplete_and_loud(tmp_path, homes_root):
    """Root without its read powers (as on an NFS home with root_squash): the set duplicity
    writes is an empty home. It is no success: status and the metrics say so, cleanup leaves
    the chain alone, and a default restore brings back the last complete backup."""
    made = make_homes(homes_root, {"ada": 3201}, files_per_home=20, megabyte_files=0)
    config = configure(tmp_path, homes_root, keep_full=1)
    metrics = tmp_path / "metrics/backup.prom"
    assert hub_backup(config, "run").returncode == 0
    good = samples(metrics)[("hub_backup_last_success_timestamp_seconds", "ada")]
    assert hub_backup(config, "status").returncode == 0
    assert samples(metrics)[("hub_backup_problem", "ada")] == 0
    time.sleep(1.1)  # a new full's time differs from the first one's

    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_BACKUP")}
    blind = subprocess.run(["setpriv", "--bounding-set=-all", "--", str(HUB_BACKUP), "run",
                            "--full", "--config", str(config)], env=env, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert blind.returncode == 1, blind.stderr
    assert "could not be read" in blind.stderr

    status = hub_backup(config, "status", "--json")
    assert status.returncode == 1, status.stdout
    [row] = json.loads(status.stdout)
    assert row["incomplete"] and not row["last_attempt_ok"]
    assert "could not be read" in row["problem"]
    figures = samples(metrics)
    assert figures[("hub_backup_last_success_timestamp_seconds", "ada")] == good
    assert figures[("hub_backup_problem", "ada")] == 1
    assert "INCOMPLETE" in hub_backup(config, "status").stdout

    # cleanup (keep_full 1) must not age out the complete full for the empty one
    assert hub_backup(config, "cleanup").returncode == 0
    restored = tmp_path / "restored"
    done = hub_backup(config, "restore", "ada", "--to", str(restored))
    assert done.returncode == 0, done.stderr
    assert (restored / "notes" / "readme.md").read_bytes() == \
        (made["ada"].path / "notes" / "readme.md").read_bytes()  # fmt: skip

    # read powers back: the next run is a success again, and nothing is flagged
    good = hub_backup(config, "run")
    assert good.returncode == 0, good.stderr
    assert hub_backup(config, "status").returncode == 0
    assert samples(metrics)[("hub_backup_problem", "ada")] == 0


def test_config_before_the_command_works_as_after_it(tmp_path, homes_root):
    make_homes(homes_root, {"ada": 3201}, files_per_home=5, megabyte_files=0)
    config = configure(tmp_path, homes_root)
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_BACKUP")}
    before = subprocess.run([str(HUB_BACKUP), "--config", str(config), "run"], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert before.returncode == 0, before.stderr
    after = hub_backup(config, "status", "--json")
    first = subprocess.run([str(HUB_BACKUP), f"--config={config}", "status", "--json"], env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert first.returncode == after.returncode == 0, first.stderr
    assert json.loads(first.stdout)[0]["last_success"] == json.loads(after.stdout)[0]["last_success"]
