"""The backup units (run, cleanup, drill) and their timers: hardened enough, clean for systemd's
verifier, agreeing with the settings' defaults and the CLI; and the shipped example
configuration exactly what `hub-backup --generate-config` writes."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from backup.cli import build_parser
from backup.settings import ENV_PREFIX, PASSPHRASE_CREDENTIAL, BackupSettings, example_config
from hubsidecars.config import load_settings
from realparts.restuser import REPO
from realparts.units import SYSTEMD_UNIT_DIR, exposure, unit_settings, verify

UNITS = REPO / "units"
RUN = UNITS / "hub-backup.service"
CLEANUP = UNITS / "hub-backup-cleanup.service"
DRILL = UNITS / "hub-backup-drill.service"
SERVICES = [RUN, CLEANUP, DRILL]
TIMERS = [UNITS / "hub-backup.timer", UNITS / "hub-backup-cleanup.timer",
          UNITS / "hub-backup-drill.timer"]  # fmt: skip
EXAMPLE = UNITS / "backup.toml.example"
HUB_BACKUP = REPO / ".venv/bin/hub-backup"
CONFIG = "/etc/hub-sidecars/backup.toml"
# The command each service runs, and the capabilities it keeps (uid 0 without root's powers).
COMMANDS = {RUN: "run", CLEANUP: "cleanup", DRILL: "drill"}
CAPABILITIES = {RUN: {"CAP_DAC_READ_SEARCH"}, CLEANUP: set(),
                DRILL: {"CAP_DAC_READ_SEARCH", "CAP_CHOWN", "CAP_FOWNER"}}  # fmt: skip
CALENDARS = {"hub-backup.timer": "hourly", "hub-backup-cleanup.timer": "daily",
             "hub-backup-drill.timer": "weekly"}  # fmt: skip

by_name = {"ids": lambda path: path.name}


def section(text: str, name: str) -> dict[str, str]:
    """The keys of one [name] section of a unit file (last value wins; no repeats here)."""
    values, current = {}, None
    for line in text.splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        elif current == name and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


@pytest.mark.parametrize("unit", SERVICES, **by_name)
def test_exposure_is_at_most_2_0(unit):
    assert exposure(unit) <= 2.0


@pytest.mark.parametrize("unit", SERVICES, **by_name)
def test_the_same_unit_without_its_sandbox_fails_the_check(unit, tmp_path):
    kept = ("Type=", "ExecStart=", "LoadCredential=", "StateDirectory", "[")
    plain = "\n".join(line for line in unit.read_text().splitlines() if line.startswith(kept))
    (tmp_path / unit.name).write_text(plain + "\n")
    assert exposure(tmp_path / unit.name) > 2.0


@pytest.mark.parametrize("unit", SERVICES, **by_name)
def test_service_runs_its_command_once_with_the_passphrase_as_a_credential(unit):
    service = unit_settings(unit.read_text())
    assert service["Type"] == ["oneshot"]
    (command,) = service["ExecStart"]
    argv = shlex.split(command)
    assert argv[:4] == ["/opt/hub-sidecars/bin/hub-backup", COMMANDS[unit], "--config", CONFIG]
    # What follows parses with the real CLI (a misspelt flag would fail every timer run).
    build_parser().parse_args(argv[1:])
    assert service["LoadCredential"] == [
        f"{PASSPHRASE_CREDENTIAL}:{BackupSettings().passphrase_file}"
    ]


@pytest.mark.parametrize("unit", SERVICES, **by_name)
def test_service_is_uid_0_with_only_the_capabilities_it_needs(unit):
    service = unit_settings(unit.read_text())
    # uid 0: duplicity's os.access() honours capabilities only for uid 0 (the e2e test shows a
    # non-root user with CAP_DAC_READ_SEARCH backing up a 0700 home as empty).
    assert "User" not in service and "DynamicUser" not in service
    (bounding,) = service["CapabilityBoundingSet"]
    assert set(bounding.split()) == CAPABILITIES[unit]
    assert service["AmbientCapabilities"] == [""]
    assert service["ProtectSystem"] == ["strict"] and service["NoNewPrivileges"] == ["yes"]
    # The homes are read, never written (restores into them are the admin's CLI, not a unit).
    assert service["ProtectHome"] == ["read-only"]


@pytest.mark.parametrize("unit", SERVICES, **by_name)
def test_state_archive_and_default_target_are_where_the_unit_may_write(unit):
    service = unit_settings(unit.read_text())
    defaults = BackupSettings()
    state_dir = Path("/var/lib") / service["StateDirectory"][0]
    assert Path(defaults.state_dir) == state_dir
    # The archive (unencrypted file lists of every home) inside it, root-only like it.
    assert Path(defaults.archive_dir).parent == state_dir
    assert service["StateDirectoryMode"] == ["0700"] and service["UMask"] == ["0077"]
    target_root = Path(defaults.target.removeprefix("file://").split("{user}")[0])
    assert service["ReadWritePaths"] == [f"-{target_root.as_posix()}"]


def test_every_service_shares_one_sandbox_but_for_its_capabilities():
    """cleanup and drill are documented as 'the same sandbox as hub-backup.service': keep it so,
    so that the one network drop-in the run unit describes fits all three."""
    ignored = ("Description", "ExecStart", "SuccessExitStatus", "CapabilityBoundingSet",
               "SystemCallFilter", "LoadCredential")  # fmt: skip

    def sandbox(unit):
        return {k: v for k, v in unit_settings(unit.read_text()).items() if k not in ignored}

    assert sandbox(CLEANUP) == sandbox(RUN) == sandbox(DRILL)


def test_a_run_skipped_for_a_busy_lock_is_not_a_failure():
    from hubsidecars.errors import EXIT_BUSY

    assert unit_settings(RUN.read_text())["SuccessExitStatus"] == [str(EXIT_BUSY)]


@pytest.mark.parametrize("timer", TIMERS, **by_name)
def test_timer_fires_on_its_calendar_persistently_with_a_random_delay(timer):
    settings = section(timer.read_text(), "Timer")
    assert settings["OnCalendar"] == CALENDARS[timer.name]
    assert settings["Persistent"] == "true"
    assert settings["RandomizedDelaySec"]
    assert "Unit" not in settings  # activates the service of its own name
    assert (UNITS / timer.name.replace(".timer", ".service")).exists()
    assert section(timer.read_text(), "Install") == {"WantedBy": "timers.target"}


@pytest.fixture
def unit_root(tmp_path):
    """A root with the installed command where the units expect it and systemd's own units, so
    `systemd-analyze verify --root` resolves everything without a running systemd."""
    root = tmp_path / "root"
    (root / "opt/hub-sidecars/bin").mkdir(parents=True)
    (root / "opt/hub-sidecars/bin/hub-backup").write_text("#!/bin/sh\n")
    (root / "opt/hub-sidecars/bin/hub-backup").chmod(0o755)
    shutil.copytree(SYSTEMD_UNIT_DIR, root / SYSTEMD_UNIT_DIR.relative_to("/"), symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    return root


def test_units_and_timers_verify_clean(unit_root):
    names = [unit.name for unit in SERVICES + TIMERS]
    for name in names:
        shutil.copy(UNITS / name, unit_root / "etc/systemd/system" / name)
    result = verify(unit_root, *names)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_verify_catches_a_misspelt_timer(unit_root):
    for unit in SERVICES:
        shutil.copy(unit, unit_root / "etc/systemd/system" / unit.name)
    broken = TIMERS[0].read_text().replace("OnCalendar=hourly", "OnCalendar=hourlyy")
    (unit_root / "etc/systemd/system/hub-backup.timer").write_text(broken)
    assert "hourlyy" in verify(unit_root, "hub-backup.timer").stderr


def test_committed_example_is_generated_from_the_declarations():
    assert EXAMPLE.read_text() == example_config(), (
        "units/backup.toml.example differs from backup/settings.py; regenerate it with "
        ".venv/bin/hub-backup --generate-config > units/backup.toml.example"
    )


def test_generate_config_prints_the_committed_example():
    result = subprocess.run([str(HUB_BACKUP), "--generate-config"], capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXAMPLE.read_text()


def test_example_config_loads_as_the_defaults():
    loaded = load_settings(BackupSettings, ENV_PREFIX, {"config": str(EXAMPLE)}, environ={})
    assert loaded == BackupSettings()
