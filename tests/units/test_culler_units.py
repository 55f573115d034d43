"""The culler's unit and example configuration: hardened enough, clean for systemd's verifier,
and the shipped example exactly what `hub-culler --generate-config` writes."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from culler.settings import CullerSettings, example_config
from hubsidecars.config import load_settings, options
from realparts.restuser import REPO
from realparts.units import SYSTEMD_UNIT_DIR, exposure, unit_settings, verify

UNITS = REPO / "units"
UNIT = UNITS / "hub-culler.service"
EXAMPLE = UNITS / "culler.toml.example"
HUB_CULLER = Path(shutil.which("hub-culler") or REPO / ".venv/bin/hub-culler")


def test_culler_service_exposure_is_at_most_2_0():
    assert exposure(UNIT) <= 2.0


def test_an_unhardened_culler_unit_fails_the_exposure_check(tmp_path):
    # The check can fail: the same unit without its sandbox scores far above 2.0.
    kept = ("Type=", "ExecStart=", "LoadCredential=", "Restart", "StateDirectory", "[")
    plain = "\n".join(
        line for line in UNIT.read_text().splitlines() if line.startswith(kept)
    )  # fmt: skip
    (tmp_path / "plain.service").write_text(plain + "\n")
    assert exposure(tmp_path / "plain.service") > 2.0


def test_unit_runs_the_installed_daemon_as_the_issue_asks():
    service = unit_settings(UNIT.read_text())
    assert service["Type"] == ["notify"]
    assert service["ExecStart"] == [
        "/opt/hub-sidecars/bin/hub-culler --config /etc/hub-sidecars/culler.toml"
    ]
    assert service["Restart"] == ["on-failure"]
    assert service["LoadCredential"] == ["hub-api-token:/etc/hub-sidecars/hub-api-token"]
    assert service["DynamicUser"] == ["yes"]
    # Every file the culler writes by default (status, Docker and probe state) is in the state
    # directory, the only place the sandbox lets it write.
    state_dir = Path("/var/lib/" + service["StateDirectory"][0])
    defaults = CullerSettings()
    written = [
        getattr(defaults, o.name) for o in options(CullerSettings) if o.name.endswith("_file")
    ]
    written = [Path(path) for path in written if path]
    assert Path(defaults.status_file) in written and len(written) >= 2, written
    assert all(path.parent == state_dir for path in written), written
    # Hub-only by default: the docker group is documented as a drop-in, not granted here.
    assert "SupplementaryGroups" not in service and "AmbientCapabilities" in service
    assert service["CapabilityBoundingSet"] == [""]


@pytest.fixture
def unit_root(tmp_path):
    """A root with the installed command where the unit expects it and systemd's own units, so
    `systemd-analyze verify --root` resolves everything without a running systemd."""
    root = tmp_path / "root"
    (root / "opt/hub-sidecars/bin").mkdir(parents=True)
    (root / "opt/hub-sidecars/bin/hub-culler").write_text("#!/bin/sh\n")
    (root / "opt/hub-sidecars/bin/hub-culler").chmod(0o755)
    shutil.copytree(SYSTEMD_UNIT_DIR, root / SYSTEMD_UNIT_DIR.relative_to("/"), symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    return root


def test_unit_verifies_clean(unit_root):
    shutil.copy(UNIT, unit_root / "etc/systemd/system/hub-culler.service")
    result = verify(unit_root, "hub-culler.service")
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_verify_catches_a_misspelt_culler_unit(unit_root):
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=strikt")
    (unit_root / "etc/systemd/system/broken.service").write_text(broken)
    assert "strikt" in verify(unit_root, "broken.service").stderr


def uncomment_keys(example: str) -> str:
    """The example with every commented-out key made a setting (arrays may span lines)."""
    keys = {option.name for option in options(CullerSettings)}
    lines, in_array = [], False
    for line in example.splitlines():
        key = line.removeprefix("# ").split(" = ")[0]
        if line.startswith("# ") and (key in keys or in_array):
            line = line.removeprefix("# ") if not in_array else line.removeprefix("#")
            in_array = line.rstrip().endswith("[") or (in_array and line.strip() != "]")
        lines.append(line)
    return "\n".join(lines) + "\n"


def load_example(path: Path) -> CullerSettings:
    return load_settings(CullerSettings, "HUB_CULLER", {"config": str(path)}, environ={})


def test_committed_example_is_generated_from_the_declarations():
    assert EXAMPLE.read_text() == example_config(), (
        "units/culler.toml.example differs from culler/settings.py; regenerate it with "
        ".venv/bin/hub-culler --generate-config > units/culler.toml.example"
    )


def test_generate_config_prints_the_committed_example():
    result = subprocess.run([str(HUB_CULLER), "--generate-config"], capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXAMPLE.read_text()


def test_example_config_loads_as_exactly_the_defaults():
    assert load_example(EXAMPLE) == CullerSettings()


def test_every_setting_is_in_the_example_and_its_shown_default_is_the_default(tmp_path):
    every_key = uncomment_keys(EXAMPLE.read_text())
    written = tomllib.loads(every_key)
    assert sorted(written) == sorted(option.name for option in options(CullerSettings))
    (tmp_path / "all.toml").write_text(every_key)
    assert load_example(tmp_path / "all.toml") == CullerSettings()
    assert written["timeout"] == "10m"


def test_a_changed_default_in_the_culler_example_is_noticed(tmp_path):
    changed = uncomment_keys(example_config()).replace('"10m"', '"11m"', 1)
    (tmp_path / "changed.toml").write_text(changed)
    assert load_example(tmp_path / "changed.toml") != CullerSettings()
