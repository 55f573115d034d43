"""hub-stats's exit codes as docs/exit-codes.md has them, each with one line: 1 for a poll that
failed (no hub answers), 2 for a bad setting, and --config read before or after the command.
(75, a second collector on one database, is in test_attacks: two real collectors.)"""

from __future__ import annotations

import sqlite3

from realparts.stats import HUB_STATS, argv, run_command, stats_env

NOWHERE = "http://127.0.0.1:9/hub/api"
TOKEN = "a-token-of-enough-length-0123456789"


def test_a_failed_poll_exits_1_and_a_bad_setting_2(tmp_path):
    db = tmp_path / "activity.sqlite"
    failed = run_command(argv(NOWHERE, db, "--once", "--request-timeout", "1"), stats_env(TOKEN))
    assert failed.returncode == 1, failed.log
    assert "Traceback" not in failed.log
    bad = run_command(argv(NOWHERE, db, "--once", "--interval", "soon"), stats_env(TOKEN))
    assert bad.returncode == 2, bad.log
    [line] = bad.log.splitlines()
    assert line.startswith("hub-stats: error: --interval: not a duration"), line


def test_config_is_read_before_or_after_the_command(tmp_path):
    db = tmp_path / "activity.sqlite"
    run_command(argv(NOWHERE, db, "--once", "--request-timeout", "1"), stats_env(TOKEN))
    config = tmp_path / "stats.toml"
    config.write_text(f'db = "{db}"\n')
    for name, order in (("before", ["--config", str(config), "export"]),
                        ("after", ["export", "--config", str(config)])):  # fmt: skip
        out = tmp_path / f"{name}.sqlite"
        done = run_command([str(HUB_STATS), *order, str(out)], stats_env(TOKEN))
        assert done.returncode == 0, (name, done.log)
        with sqlite3.connect(out) as conn:  # the snapshot of the file the config names
            assert conn.execute("SELECT count(*) FROM polls").fetchone() == (1,)
