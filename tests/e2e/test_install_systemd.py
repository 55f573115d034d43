"""scripts/install on a host booted with systemd (PID 1 in a container): the first install
(made once per run, realparts/systemd.build_installed_image) says what to enable next and
lays out the example configuration; installing again keeps everything the admin changed, the
skeleton home included, and still works."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.realsystemd

SERVICES = ("restuser", "culler", "stats", "backup")
NEXT_STEPS = (
    "systemctl enable --now hub-restuser.socket",
    "systemctl enable --now hub-culler.service",
    "systemctl enable --now hub-stats.service hub-stats-web.socket",
    "systemctl enable --now hub-backup.timer hub-backup-cleanup.timer hub-backup-drill.timer",
)


def test_the_first_install_lays_out_the_examples_and_says_what_to_enable(installed_image,
                                                                        systemd_container):  # fmt: skip
    _, printed = installed_image
    c = systemd_container
    for step in NEXT_STEPS:
        assert step in printed, printed
    for service in SERVICES:
        example = c.run("cat", f"/src/units/{service}.toml.example").stdout
        assert c.run("cat", f"/etc/hub-sidecars/{service}.toml").stdout == example
    assert c.run("/opt/hub-sidecars/bin/hub-backup", "--help").returncode == 0
    assert c.run("/opt/hub-sidecars/bin/duplicity", "--version").returncode == 0
    for unit in ("hub-restuser.socket", "hub-culler.service", "hub-stats.service",
                 "hub-backup.timer"):  # fmt: skip
        state = c.run("systemctl", "is-enabled", unit, check=False).stdout.strip()
        assert state == "disabled", (unit, state)  # nothing enabled without --enable


def test_installing_again_keeps_what_the_admin_changed(systemd_container):
    c = systemd_container
    changed = {}
    for service in SERVICES:
        path = f"/etc/hub-sidecars/{service}.toml"
        changed[path] = c.run("cat", path).stdout + f"# {service}: changed by the admin\n"
        c.write_file(path, changed[path])
    changed["/etc/hub-sidecars/skel/.admin-note"] = "kept\n"
    c.write_file("/etc/hub-sidecars/skel/.admin-note", "kept\n")
    again = c.run("/src/scripts/install", "--wheels", "/wheels", check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    for path, text in changed.items():
        assert c.run("cat", path).stdout == text, path
    assert c.run("/opt/hub-sidecars/bin/hub-culler", "--help").returncode == 0


def test_packages_the_scripts_install_do_not_start_their_services(systemd_container):
    """openssh-server (for the sftp tests) starts sshd on port 22 when it installs on a host
    booted with systemd; the scripts install what they need and start nothing."""
    c = systemd_container
    result = c.run("bash", "-c", "source /src/scripts/lib.sh && install_apt_packages "
                   "sshd:openssh-server", check=False, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert c.run("test", "-x", "/usr/sbin/sshd", check=False).returncode == 0
    assert c.run("systemctl", "is-active", "ssh.service", check=False).stdout.strip() != "active"
    # no sshd in the container (its network is the host's: port 22 may be the host's sshd)
    assert c.run("pgrep", "-x", "sshd", check=False).returncode == 1
    assert c.run("test", "-e", "/usr/sbin/policy-rc.d", check=False).returncode != 0
