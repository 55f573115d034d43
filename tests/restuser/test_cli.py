"""`hub-restuser` as an admin meets it: --help, config layering, refusals with exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hubsidecars.config import load_settings, options
from realparts.net import Endpoint, free_port
from realparts.restuser import REPO, SKEL, restuser_command
from restuser.cli import main
from restuser.settings import RestuserSettings


def run(*args, env=None, timeout=20):
    return subprocess.run(restuser_command()[:1] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


def test_help_lists_every_option_with_its_environment_variable():
    result = run("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option in options(RestuserSettings):
        assert option.cli_flag in text
        assert option.env_var("HUB_RESTUSER") in result.stdout.replace("\n", "").replace(" ", "")
    assert "--allow-remote, --no-allow-remote" in text
    assert "--existing-home {refuse,adopt,move-aside}" in text and "default: 10s)" in text


def test_precedence_default_file_env_cli(tmp_path):
    config = tmp_path / "restuser.toml"
    config.write_text(
        'shell = "/bin/sh"\nuid_min = 5000\nsocket_mode = 0o600\ngroups = ["a", "b"]\n'
        'lock_timeout = "1m"\nexisting_home = "adopt"\naccess_log = true\n'
    )
    env = {"HUB_RESTUSER_CONFIG": str(config), "HUB_RESTUSER_UID_MIN": "6000",
           "HUB_RESTUSER_EXISTING_HOME": "move-aside", "HUB_RESTUSER_ACCESS_LOG": "no"}  # fmt: skip
    cli = {"uid_max": "7000", "lock_timeout": "90"}
    settings = load_settings(RestuserSettings, "HUB_RESTUSER", cli, env)
    assert settings.shell == "/bin/sh"  # file
    assert settings.uid_min == 6000 and settings.existing_home == "move-aside"  # env beats file
    assert settings.access_log is False
    assert settings.uid_max == 7000 and settings.lock_timeout == 90  # command line
    assert settings.socket_mode == 0o600 and settings.groups == ("a", "b")
    assert settings.home_mode == 0o700 and settings.workers == 1  # defaults


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
        (["--log-format", "xml"], "--log-format: must be one of kv, json"),
        (["--existing-home", "delete"], "--existing-home: must be one of refuse, adopt"),
        (["--lock-timeout", "soon"], "--lock-timeout: not a duration"),
        (["--lock-timeout", "0.5"], "--lock-timeout: must be at least 1s"),
        (["--workers", "0"], "--workers: must be at least 1, got 0"),
        (["--threads", "1000"], "--threads: must be at most 64"),
        (["--state-dir", "/proc/no-such-dir"], "cannot create state directory"),
        (["--socket-group", "no-such-group"], "socket_group"),
        (["--log-level", "loud"], "--log-level: must be one of debug, info, warning, error"),
        (["--home-pattern", "/home/{name}/../../etc"], "home_pattern must not hold '.', '..'"),
        (["--home-pattern", "/home/./{name}"], "home_pattern must not hold '.', '..'"),
        (["--home-pattern", "/home//{name}"], "or empty components"),
        (["--home-pattern", "/home/{name}/"], "or empty components"),
        (["--home-pattern", "/home/x{name}y"], "{name} as one whole component"),
        (["--home-pattern", "/home/{name}/{name}"], "{name} as one whole component"),
        (["--name-pattern", "[a-z.]+"], "name_pattern must not accept the names '.' and '..'"),
        (["--socket-mode", "0666"], "socket_mode 0666 gives other users access"),
        (["--socket-mode", "0661"], "socket_mode 0661 gives other users access"),
        (["--socket-mode", "2660"], "socket_mode 2660 gives"),
        (["--home-mode", "0770"], "home_mode 0770 lets others write"),
        (["--home-mode", "0702"], "home_mode 0702 lets others write"),
        (["--home-mode", "4700"], "home_mode 4700 lets others write into the homes or has setuid"),
        (["--state-dir", "var/lib/restuser"], "state_dir must be an absolute path"),
        (["--skel", "skel"], "skel must be an absolute path, got 'skel'"),
        (["--prefix", "scratch/root"], "prefix must be an absolute path"),
        (["--groups", "users,no-such-group"], "groups: no group 'no-such-group' in"),
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


def test_tcp_needs_loopback_unless_allowed(token_file, prefix_root, start_restuser):
    base = ["serve", "--skel", str(SKEL), "--prefix", str(prefix_root),
            "--token-file", str(token_file)]  # fmt: skip
    port = free_port()
    for refused in ([], ["--allow-remote=false"], ["--allow-remote", "--no-allow-remote"]):
        result = run(*base, "--bind", f"0.0.0.0:{port}", *refused)
        assert result.returncode == 2 and "non-loopback" in result.stderr, refused

    # Allowed, it really serves on every address, token still required.
    service = start_restuser(
        endpoint=Endpoint(port=port), bind=f"0.0.0.0:{port}",
        extra_args=["--token-file", str(token_file), "--allow-remote"],
    )  # fmt: skip
    assert service.endpoint.request("GET", "/users/alice").status == 401
    token = token_file.read_text().strip()
    reply = service.endpoint.request("POST", "/users/alice", {"Authorization": f"Bearer {token}"})
    assert reply.status == 201


def test_a_bad_boolean_in_the_environment_is_named(token_file, prefix_root):
    env = {**os.environ, "HUB_RESTUSER_ALLOW_REMOTE": "perhaps"}
    result = run("serve", "--skel", str(SKEL), "--prefix", str(prefix_root),
                 "--token-file", str(token_file), "--bind", "0.0.0.0:8126", env=env)  # fmt: skip
    assert result.returncode == 2 and "HUB_RESTUSER_ALLOW_REMOTE: not a boolean" in result.stderr


def test_a_misspelt_environment_variable_is_refused(prefix_root):
    env = {**os.environ, "HUB_RESTUSER_UID_MN": "5000"}
    result = run("serve", "--skel", str(SKEL), "--prefix", str(prefix_root), env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "HUB_RESTUSER_UID_MN names no setting (did you mean HUB_RESTUSER_UID_MIN?)" in lines[0]


def tcp_with_token(token_file, prefix_root):
    return run("serve", "--skel", str(SKEL), "--prefix", str(prefix_root),
               "--token-file", str(token_file), "--bind", "127.0.0.1:8125")  # fmt: skip


def test_world_readable_token_file_is_refused(token_file, prefix_root):
    token_file.chmod(0o644)
    result = tcp_with_token(token_file, prefix_root)
    assert result.returncode == 2 and "readable by every user" in result.stderr
    assert token_file.read_text().strip() not in result.stderr


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda path: path.chmod(0o620), "is writable by other users (mode 0620)"),
        (lambda path: path.chmod(0o602), "is writable by other users (mode 0602)"),
        (lambda path: os.chown(path, 4321, 4321), "belongs to uid 4321, neither root nor"),
        (lambda path: path.write_text("short-token\n"), "holds a secret of 11 characters"),
    ],
    ids=["group-writable", "world-writable", "foreign-owner", "short"],
)
def test_unsafe_token_file_is_refused_with_one_line(token_file, prefix_root, change, reason):
    change(token_file)
    result = tcp_with_token(token_file, prefix_root)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and reason in lines[0], result.stderr
    assert token_file.read_text().strip() not in result.stderr


@pytest.mark.parametrize(
    "content, reason",
    [
        ("first-line-of-token-1234\nsecond-line-5678\n", "has more than one line"),
        ("crlf-token-0123456789abcdef\r\nmore\r\n", "has more than one line"),
        ("token-with-\u00e9-non-ascii-0123456789\n", "has other characters"),
        ("token-with-a-\x07-control-0123456789\n", "has other characters"),
        ("token with blanks 0123456789\n", "has other characters"),
        ("token=with-inner-equals-0123456789\n", "has other characters"),
    ],
    ids=["two-lines", "crlf", "non-ascii", "control", "space", "inner-equals"],
)
def test_a_token_that_cannot_be_sent_in_a_header_is_refused(token_file, prefix_root, content,
                                                             reason):  # fmt: skip
    token_file.write_text(content, encoding="utf-8")
    result = tcp_with_token(token_file, prefix_root)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert reason in lines[0] and "one line of letters, digits" in lines[0]
    for part in content.split():
        assert part.strip() not in lines[0] or len(part.strip()) < 6, part


def test_a_token68_token_with_padding_is_accepted(token_file, prefix_root, start_restuser):
    token = "AbC.d_e~f+g/h-0123456789=="
    token_file.write_text(token + "\n")
    service = start_restuser(tcp=True, extra_args=["--token-file", str(token_file)])
    reply = service.endpoint.request("POST", "/users/alice", {"Authorization": f"Bearer {token}"})
    assert reply.status == 201


def test_example_config_is_the_committed_example():
    result = run("example-config")
    assert result.returncode == 0, result.stderr
    committed = (REPO / "units/restuser.toml.example").read_text()
    assert result.stdout == committed, (
        "units/restuser.toml.example differs from the declarations in restuser/settings.py; "
        "regenerate it: .venv/bin/hub-restuser --generate-config > units/restuser.toml.example"
    )


def test_generate_config_prints_the_example_as_every_service_does():
    result = run("--generate-config")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout == (REPO / "units/restuser.toml.example").read_text()


def test_example_config_still_works_and_says_it_is_deprecated():
    result = run("example-config")
    assert result.returncode == 0
    assert result.stdout == (REPO / "units/restuser.toml.example").read_text()
    assert result.stderr.strip() == ("hub-restuser: warning: 'example-config' is deprecated "
                                     "and will go; use --generate-config")  # fmt: skip


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


def test_the_default_config_file_is_read(tmp_path):
    """/etc/hub-sidecars/restuser.toml without --config (moved here by the suite's
    HUB_SIDECARS_CONFIG_DIR, so the host's /etc is never read)."""
    (tmp_path / "restuser.toml").write_text("workers = 0\n")
    result = run("serve", "--prefix", "/nonexistent",
                 env={**os.environ, "HUB_SIDECARS_CONFIG_DIR": str(tmp_path)})  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (f"hub-restuser: error: {tmp_path}/restuser.toml: workers: "
                                     "must be at least 1, got 0")  # fmt: skip


def test_exit_codes_as_documented_one_line_each(tmp_path):
    """docs/exit-codes.md: 2 for a bad setting, 1 for a command that ran and failed (here an
    init-prefix whose DIR cannot be made: an OSError no code foresaw), each one line on stderr
    and never a traceback; 0 for success."""
    bad = run("serve", "--uid-min", "abc")
    assert bad.returncode == 2 and bad.stderr.startswith("hub-restuser: error: "), bad.stderr
    (tmp_path / "file").write_text("")
    failed = run("init-prefix", str(tmp_path / "file" / "root"))
    [line] = failed.stderr.splitlines()
    assert failed.returncode == 1, failed.stderr
    assert line.startswith(f"hub-restuser: error: Not a directory: {tmp_path / 'file' / 'root'}")
    assert run("init-prefix", str(tmp_path / "root")).returncode == 0


def in_the_journal(tmp_path, *args: str) -> tuple[int, str]:
    """Run hub-restuser ARGS with stderr as systemd hands it over (JOURNAL_STREAM naming it);
    its exit code and what it wrote there."""
    journal = tmp_path / "journal.txt"
    with journal.open("w") as stream:
        status = os.fstat(stream.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        done = subprocess.run(restuser_command()[:1] + list(args), check=False, env=env,
                              stdout=subprocess.DEVNULL, stderr=stream, timeout=20)  # fmt: skip
    return done.returncode, journal.read_text()


def test_the_error_line_carries_its_priority_in_the_journal(tmp_path):
    """Under systemd (stderr is the journal stream) the one error line starts with <3>, so
    that `journalctl -p err -u hub-restuser` shows why the service did not start."""
    code, written = in_the_journal(tmp_path, "serve", "--uid-min", "abc")
    assert code == 2
    [line] = written.splitlines()
    assert line.startswith("<3>hub-restuser: error: --uid-min: not an integer"), line


def test_config_is_taken_before_or_after_the_command(tmp_path):
    """`hub-restuser --config FILE serve` reads FILE as `hub-restuser serve --config FILE`
    does (here a file with a typo, which both refuse naming it)."""
    config = tmp_path / "restuser.toml"
    config.write_text("shel = '/bin/sh'\n")
    for argv in (["--config", str(config), "serve"], ["serve", "--config", str(config)]):
        result = run(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert result.stderr.strip() == (
            f"hub-restuser: error: {config}: unknown setting 'shel'"), (argv, result.stderr)


def test_a_usage_error_is_one_line_with_its_priority_in_the_journal(tmp_path):
    code, written = in_the_journal(tmp_path, "serve", "--no-such-flag")
    assert code == 2
    assert written == ("<3>hub-restuser: error: unrecognized arguments: --no-such-flag "
                       "(see hub-restuser --help)\n")  # fmt: skip
