"""How the units read the exit codes of docs/exit-codes.md: a daemon with a bad configuration
(2) stays down instead of restarting every few seconds, one that found another instance
running (75) tries again; a skipped hourly backup run (75) is not a failure, a cleanup or
drill still kept out by the job lock after its three hours' wait is."""

from __future__ import annotations

import pytest

from hubsidecars.errors import EXIT_BUSY, EXIT_USAGE
from realparts.restuser import REPO
from realparts.units import unit_settings

UNITS = REPO / "units"
DAEMONS = ["hub-restuser.service", "hub-culler.service", "hub-stats.service",
           "hub-stats-web.service"]  # fmt: skip


@pytest.mark.parametrize("name", DAEMONS)
def test_a_daemon_is_not_restarted_after_a_bad_configuration_but_after_busy(name):
    service = unit_settings((UNITS / name).read_text())
    assert service["Restart"] == ["on-failure"]
    assert service["RestartPreventExitStatus"] == [str(EXIT_USAGE)]
    assert "SuccessExitStatus" not in service  # busy is retried, never taken for success


def test_only_the_hourly_run_takes_busy_for_a_skipped_run():
    run = unit_settings((UNITS / "hub-backup.service").read_text())
    assert run["SuccessExitStatus"] == [str(EXIT_BUSY)]
    for name in ("hub-backup-cleanup.service", "hub-backup-drill.service"):
        service = unit_settings((UNITS / name).read_text())
        assert "SuccessExitStatus" not in service, name
        assert service["ExecStart"][0].endswith("--lock-wait 3h"), name
