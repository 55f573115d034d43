"""The restuser units: hardened enough, and clean for systemd's own verifier."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hubsidecars.config import load_settings
from restuser import settings as restuser_settings
from tests.realparts.restuser import REPO, restuser_command

UNITS = REPO / "units"
SYSTEMD_UNIT_DIR = Path("/usr/lib/systemd/system")


def exposure(unit: Path) -> float:
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                            capture_output=True, text=True, check=True)  # fmt: skip
    return float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout).group(1))


def test_restuser_service_exposure_is_at_most_2_5():
    assert exposure(UNITS / "hub-restuser.service") <= 2.5


def test_the_exposure_check_can_fail(tmp_path):
    plain = tmp_path / "plain.service"
    plain.write_text("[Service]\nExecStart=/bin/true\n")
    assert exposure(plain) > 2.5


@pytest.fixture
def unit_root(tmp_path):
    """A root holding the installed command where the units expect it, plus systemd's own
    units, so `systemd-analyze verify --root` can resolve everything without a running systemd."""
    root = tmp_path / "root"
    (root / "opt/hub-sidecars/bin").mkdir(parents=True)
    shutil.copy(restuser_command()[0], root / "opt/hub-sidecars/bin/hub-restuser")
    shutil.copytree(SYSTEMD_UNIT_DIR, root / SYSTEMD_UNIT_DIR.relative_to("/"), symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    return root


def verify(root: Path, *units: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units],
                          capture_output=True, text=True)  # fmt: skip


def test_units_verify_clean(unit_root):
    for unit in ("hub-restuser.service", "hub-restuser.socket"):
        shutil.copy(UNITS / unit, unit_root / "etc/systemd/system" / unit)
    result = verify(unit_root, "hub-restuser.service", "hub-restuser.socket")
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_verify_catches_a_misspelt_unit(unit_root):
    broken = (UNITS / "hub-restuser.service").read_text().replace("KillMode=mixed", "KillMode=mixd")
    (unit_root / "etc/systemd/system/broken.service").write_text(broken)
    assert "mixd" in verify(unit_root, "broken.service").stderr


def test_socket_unit_matches_the_service_defaults():
    socket_unit = (UNITS / "hub-restuser.socket").read_text()
    defaults = {option.name: option.default for option in restuser_settings.OPTIONS}
    assert f"ListenStream={defaults['bind'].removeprefix('unix:')}" in socket_unit
    assert f"SocketMode={defaults['socket_mode']:04o}" in socket_unit


def test_example_config_loads(tmp_path):
    settings = load_settings(restuser_settings.OPTIONS, "HUB_RESTUSER",
                             {"config": str(UNITS / "restuser.toml.example")}, environ={})  # fmt: skip
    assert settings["skel"] == "/etc/hub-sidecars/skel"
