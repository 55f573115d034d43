"""The stats units (collector, web socket and service): hardened enough, clean for systemd's
verifier, agreeing with the settings' defaults; and the shipped example configuration exactly
what `hub-stats --generate-config` writes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hubsidecars.config import load_settings
from realparts.restuser import REPO
from realparts.units import SYSTEMD_UNIT_DIR, exposure, unit_settings, verify
from stats.settings import ENV_PREFIX, SERVE_TOKEN_CREDENTIAL, StatsSettings, example_config

UNITS = REPO / "units"
COLLECTOR = UNITS / "hub-stats.service"
WEB = UNITS / "hub-stats-web.service"
WEB_SOCKET = UNITS / "hub-stats-web.socket"
EXAMPLE = UNITS / "stats.toml.example"
HUB_STATS = REPO / ".venv/bin/hub-stats"


@pytest.mark.parametrize("unit", [COLLECTOR, WEB], ids=lambda path: path.name)
def test_exposure_is_at_most_2_0(unit):
    assert exposure(unit) <= 2.0


@pytest.mark.parametrize("unit", [COLLECTOR, WEB], ids=lambda path: path.name)
def test_the_same_unit_without_its_sandbox_fails_the_check(unit, tmp_path):
    kept = ("Type=", "ExecStart=", "LoadCredential=", "Restart", "StateDirectory", "[")
    plain = "\n".join(line for line in unit.read_text().splitlines() if line.startswith(kept))
    (tmp_path / unit.name).write_text(plain + "\n")
    assert exposure(tmp_path / unit.name) > 2.0


def test_collector_runs_the_installed_daemon_with_its_token_as_a_credential():
    service = unit_settings(COLLECTOR.read_text())
    assert service["Type"] == ["notify"]
    assert service["ExecStart"] == [
        "/opt/hub-sidecars/bin/hub-stats --config /etc/hub-sidecars/stats.toml"
    ]
    assert service["LoadCredential"] == ["hub-api-token:/etc/hub-sidecars/hub-api-token"]
    assert service["Restart"] == ["on-failure"] and service["RestartPreventExitStatus"] == ["2"]
    assert "SupplementaryGroups" not in service  # docker: a documented drop-in, not default


def test_both_services_share_one_identity_and_the_directory_holding_the_database():
    collector = unit_settings(COLLECTOR.read_text())
    web = unit_settings(WEB.read_text())
    for service in (collector, web):
        assert service["DynamicUser"] == ["yes"] and service["User"] == ["hub-stats"]
        assert service["StateDirectory"] == ["hub-sidecars/stats"]
    # The default database (the example sets it too) is in that directory, and nothing of
    # the other services' state is: /var/lib/hub-sidecars itself is not handed to this user.
    state_dir = Path("/var/lib") / collector["StateDirectory"][0]
    assert Path(StatsSettings().db).parent == state_dir


def test_web_service_takes_its_socket_and_matches_the_serve_defaults():
    web = unit_settings(WEB.read_text())
    assert web["ExecStart"] == [
        "/opt/hub-sidecars/bin/hub-stats serve --config /etc/hub-sidecars/stats.toml"
    ]
    assert web["Type"] == ["notify"] and web["PrivateNetwork"] == ["yes"]
    socket_unit = WEB_SOCKET.read_text()
    defaults = StatsSettings()
    assert f"ListenStream={defaults.bind.removeprefix('unix:')}" in socket_unit
    assert f"SocketMode={defaults.socket_mode:04o}" in socket_unit
    assert f"#LoadCredential={SERVE_TOKEN_CREDENTIAL}:" in WEB.read_text()


@pytest.fixture
def unit_root(tmp_path):
    """A root with the installed command where the units expect it and systemd's own units, so
    `systemd-analyze verify --root` resolves everything without a running systemd."""
    root = tmp_path / "root"
    (root / "opt/hub-sidecars/bin").mkdir(parents=True)
    (root / "opt/hub-sidecars/bin/hub-stats").write_text("#!/bin/sh\n")
    (root / "opt/hub-sidecars/bin/hub-stats").chmod(0o755)
    shutil.copytree(SYSTEMD_UNIT_DIR, root / SYSTEMD_UNIT_DIR.relative_to("/"), symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    return root


def test_units_verify_clean(unit_root):
    names = [COLLECTOR.name, WEB.name, WEB_SOCKET.name]
    for name in names:
        shutil.copy(UNITS / name, unit_root / "etc/systemd/system" / name)
    result = verify(unit_root, *names)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_verify_catches_a_misspelt_stats_unit(unit_root):
    broken = WEB.read_text().replace("PrivateNetwork=yes", "PrivateNetwork=yess")
    (unit_root / "etc/systemd/system/broken.service").write_text(broken)
    assert "yess" in verify(unit_root, "broken.service").stderr


def test_committed_example_is_generated_from_the_declarations():
    assert EXAMPLE.read_text() == example_config(), (
        "units/stats.toml.example differs from stats/settings.py; regenerate it with "
        ".venv/bin/hub-stats --generate-config > units/stats.toml.example"
    )


def test_generate_config_prints_the_committed_example():
    result = subprocess.run([str(HUB_STATS), "--generate-config"], capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXAMPLE.read_text()


def test_example_config_loads_as_the_defaults():
    loaded = load_settings(StatsSettings, ENV_PREFIX, {"config": str(EXAMPLE)}, environ={})
    assert loaded == StatsSettings()
