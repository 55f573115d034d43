"""`hub-restuser` as an admin meets it: --help, config layering, refusals with exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hubsidecars.config import load_settings
from restuser import settings as restuser_settings
from restuser.cli import main
from tests.realparts.restuser import SKEL, restuser_command


def run(*args, env=None, timeout=20):
    return subprocess.run(restuser_command()[:1] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


def test_help_lists_every_option_with_its_environment_variable():
    result = run("serve", "--help")
    assert result.returncode == 0
    for option in restuser_settings.OPTIONS:
        assert option.cli_flag in result.stdout
        assert option.env_var("HUB_RESTUSER") in result.stdout.replace("\n", "").replace(" ", "")


def test_precedence_default_file_env_cli(tmp_path):
    config = tmp_path / "restuser.toml"
    config.write_text(
        'shell = "/bin/sh"\nuid_min = 5000\nsocket_mode = 0o600\ngroups = ["a", "b"]\n'
    )
    env = {"HUB_RESTUSER_CONFIG": str(config), "HUB_RESTUSER_UID_MIN": "6000"}
    settings = load_settings(restuser_settings.OPTIONS, "HUB_RESTUSER", {"uid_max": "7000"}, env)
    assert settings["shell"] == "/bin/sh"  # file
    assert settings["uid_min"] == 6000  # env beats file
    assert settings["uid_max"] == 7000  # command line
    assert settings["socket_mode"] == 0o600 and settings["groups"] == ["a", "b"]
    assert settings["home_mode"] == 0o700  # default


@pytest.mark.parametrize(
    "args, reason",
    [
        (["--uid-min", "abc"], "--uid-min"),
        (["--uid-min", "9", "--uid-max", "5"], "uid_min"),
        (["--home-pattern", "/home/user"], "home_pattern"),
        (["--skel", "/nonexistent"], "skeleton"),
        (["--prefix", "/nonexistent"], "etc/passwd"),
        (["--bind", "localhost"], "bind must be"),
        (["--bind", "127.0.0.1:8123"], "without a token"),
        (["--config", "/nonexistent.toml"], "cannot read config"),
        (["--log-format", "xml"], "log_format"),
        (["--state-dir", "/proc/no-such-dir"], "cannot create state directory"),
        (["--socket-group", "no-such-group"], "socket_group"),
        (["--log-level", "loud"], "log_level"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(args, reason, prefix_root):
    result = run("serve", "--skel", str(SKEL), "--prefix", str(prefix_root), *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hub-restuser: error:") and reason in lines[0]


def test_unknown_key_in_config_file(tmp_path, prefix_root):
    config = tmp_path / "bad.toml"
    config.write_text("shel = '/bin/sh'\n")
    result = run(
        "serve", "--config", str(config), "--skel", str(SKEL), "--prefix", str(prefix_root)
    )
    assert result.returncode == 2 and "unknown setting 'shel'" in result.stderr


def test_tcp_needs_loopback_unless_allowed(token_file, prefix_root):
    base = [
        "serve",
        "--skel",
        str(SKEL),
        "--prefix",
        str(prefix_root),
        "--token-file",
        str(token_file),
    ]
    result = run(*base, "--bind", "0.0.0.0:8124")
    assert result.returncode == 2 and "non-loopback" in result.stderr


def test_world_readable_token_file_is_refused(token_file, prefix_root):
    token_file.chmod(0o644)
    result = run("serve", "--skel", str(SKEL), "--prefix", str(prefix_root),
                 "--token-file", str(token_file), "--bind", "127.0.0.1:8125")  # fmt: skip
    assert result.returncode == 2 and "readable by every user" in result.stderr
    assert token_file.read_text().strip() not in result.stderr


def test_init_prefix_copies_only_system_accounts(tmp_path):
    assert main(["init-prefix", str(tmp_path / "r")]) == 0
    passwd = (tmp_path / "r/etc/passwd").read_text().splitlines()
    assert passwd[0].startswith("root:x:0:")
    assert all(int(line.split(":")[2]) < 1000 or line.startswith("nobody:") for line in passwd)
    assert (tmp_path / "r/etc/shadow").stat().st_mode & 0o777 == 0o640
    assert main(["init-prefix", str(tmp_path / "r")]) == 2


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "restuser.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "serve" in result.stdout


def test_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("hub-restuser 0.")
