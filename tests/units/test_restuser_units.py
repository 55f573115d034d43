"""The restuser units: hardened enough, and clean for systemd's own verifier."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from hubsidecars.config import load_settings, options
from realparts.restuser import REPO, restuser_command
from realparts.units import SYSTEMD_UNIT_DIR, exposure, verify
from restuser.settings import RestuserSettings, example_config

UNITS = REPO / "units"


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
    defaults = RestuserSettings()
    assert f"ListenStream={defaults.bind.removeprefix('unix:')}" in socket_unit
    assert f"SocketMode={defaults.socket_mode:04o}" in socket_unit


def load_example(path: Path) -> RestuserSettings:
    return load_settings(RestuserSettings, "HUB_RESTUSER", {"config": str(path)}, environ={})


def uncomment_keys(example: str) -> str:
    """The example with every commented-out key made a setting (arrays may span lines)."""
    keys = {option.name for option in options(RestuserSettings)}
    lines, in_array = [], False
    for line in example.splitlines():
        key = line.removeprefix("# ").split(" = ")[0]
        if line.startswith("# ") and (key in keys or in_array):
            line = line.removeprefix("# ") if not in_array else line.removeprefix("#")
            in_array = line.rstrip().endswith("[") or (in_array and line.strip() != "]")
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_committed_example_is_generated_from_the_declarations():
    assert (UNITS / "restuser.toml.example").read_text() == example_config(), (
        "units/restuser.toml.example differs from restuser/settings.py; regenerate it with "
        ".venv/bin/hub-restuser --generate-config > units/restuser.toml.example"
    )


def test_example_config_loads_as_exactly_the_defaults(tmp_path):
    assert load_example(UNITS / "restuser.toml.example") == RestuserSettings()


def test_every_setting_is_in_the_example_and_its_shown_default_is_the_default(tmp_path):
    every_key = uncomment_keys((UNITS / "restuser.toml.example").read_text())
    written = tomllib.loads(every_key)
    assert sorted(written) == sorted(option.name for option in options(RestuserSettings))
    (tmp_path / "all.toml").write_text(every_key)
    assert load_example(tmp_path / "all.toml") == RestuserSettings()
    assert written["lock_timeout"] == "10s" and written["socket_mode"] == 0o660


def test_a_changed_default_in_the_example_is_noticed(tmp_path):
    # The check above can fail: a shown default that differs from the real one is caught.
    changed = uncomment_keys(example_config()).replace('"10s"', '"11s"')
    (tmp_path / "changed.toml").write_text(changed)
    assert load_example(tmp_path / "changed.toml") != RestuserSettings()
