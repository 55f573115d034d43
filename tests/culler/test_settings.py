"""hub-culler's command line, environment and TOML file, against jupyterhub-idle-culler 2.0's.

The list of idle-culler's options and their defaults is read from the installed package
(`IdleCuller.aliases`, `.flags` and its traits), and idle-culler's own parser is asked what each
value means: an admin who swaps `python -m jupyterhub_idle_culler` for `hub-culler` keeps the
same arguments and gets the same settings. No hub is started here: `main()` and the real
`.venv/bin/hub-culler` are only run with --help, --generate-config and bad values.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from jupyterhub_idle_culler import IdleCuller

from culler import cli
from culler import settings as culler_settings
from hubsidecars.config import load_settings
from hubsidecars.hubsettings import DEFAULT_URL

REPO = Path(__file__).resolve().parents[2]
HUB_CULLER = Path(sys.executable).parent / "hub-culler"
EXAMPLE = REPO / "units" / "culler.toml.example"

# idle-culler options whose default cannot be the same, and why:
#   config  idle-culler loads a Python file (idle_culler_config.py in the working directory when
#           present); hub-culler reads TOML and only when --config or HUB_CULLER_CONFIG says so.
#   url     None unless $JUPYTERHUB_API_URL (read when the package is imported); hub-culler also
#           takes $JUPYTERHUB_API_URL, else the hub's usual local address.
NOT_THE_SAME_DEFAULT = {"config", "url"}


def idle_culler_options() -> dict[str, tuple[str, object]]:
    """flag name -> (trait name, default) for every option idle-culler 2.0 accepts."""
    app = IdleCuller()
    found = {alias: (target.split(".", 1)[1], None) for alias, target in IdleCuller.aliases.items()}
    found = {alias: (trait, getattr(app, trait)) for alias, (trait, _) in found.items()}
    for flag in IdleCuller.flags:
        found[flag] = (flag.replace("-", "_"), False)
    return found


def idle_culler_parse(argv: list[str]) -> IdleCuller:
    app = IdleCuller()
    app.parse_command_line(argv)
    return app


def settings(argv: list[str], environ: dict[str, str] | None = None):
    """What hub-culler would run with, from argv and an environment (empty by default)."""
    environ = {} if environ is None else environ
    args = vars(cli.build_parser().parse_args(argv))
    args.pop("generate_config", None)
    loaded = load_settings(culler_settings.CullerSettings, culler_settings.ENV_PREFIX, args,
                           environ=environ)  # fmt: skip
    return culler_settings.resolve(loaded, environ=environ)


def test_the_anchor_is_what_the_issue_names():
    """A guard for the derived list below: idle-culler 2.0's options as the issue lists them."""
    names = set(idle_culler_options())
    assert {"url", "timeout", "cull-every", "max-age", "cull-users", "cull-admin-users",
            "remove-named-servers", "cull-default-servers", "cull-named-servers",
            "concurrency", "api-page-size", "ssl-enabled",
            "internal-certs-location"} <= names  # fmt: skip


@pytest.mark.parametrize("flag", sorted(idle_culler_options()))
def test_every_idle_culler_option_is_a_hub_culler_option(flag):
    parser = cli.build_parser()
    assert f"--{flag}" in parser._option_string_actions, f"hub-culler lacks --{flag}"


@pytest.mark.parametrize(
    "flag", sorted(set(idle_culler_options()) - NOT_THE_SAME_DEFAULT - {"generate-config"})
)
def test_every_idle_culler_default_is_hub_cullers(flag):
    trait, default = idle_culler_options()[flag]
    ours = settings([])
    assert getattr(ours, trait) == default, f"--{flag}: idle-culler {default!r}"


def a_value_for(flag: str, trait: str, default: object) -> str:
    """A value idle-culler accepts for `flag`, other than its default."""
    if isinstance(default, bool):
        return str(not default)
    if isinstance(default, int):
        return "7" if flag != "timeout" else "1234"
    if flag == "url":
        return "http://hub.example.org:8081/hub/api"
    return "/etc/jupyterhub/internal-ssl"


@pytest.mark.parametrize("flag", sorted(set(idle_culler_options()) - {"config", "generate-config"}))
def test_every_idle_culler_argument_means_the_same_to_hub_culler(flag):
    trait, default = idle_culler_options()[flag]
    argv = [f"--{flag}={a_value_for(flag, trait, default)}"]
    expected = getattr(idle_culler_parse(argv), trait)
    assert expected != default  # the case tests something
    assert getattr(settings(argv), trait) == expected


def test_the_config_file_option_is_accepted_but_reads_toml(tmp_path):
    config = tmp_path / "culler.toml"
    config.write_text("timeout = 3600\ncull_users = true\n")
    ours = settings(["--config", str(config)])
    assert (ours.timeout, ours.cull_users, ours.cull_every) == (3600, True, 1800)


# --- cull_every ---------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", ["600", "601", "3600", "7", "2"])
def test_cull_every_defaults_to_half_the_timeout_as_idle_culler(timeout):
    expected = idle_culler_parse([f"--timeout={timeout}"]).cull_every
    assert settings([f"--timeout={timeout}"]).cull_every == expected == int(timeout) // 2


def test_cull_every_never_falls_to_zero():
    # idle-culler computes 1 // 2 == 0 and hands tornado a 0 ms period; one second is the floor
    assert idle_culler_parse(["--timeout=1"]).cull_every == 0
    assert settings(["--timeout=1"]).cull_every == 1


def test_cull_every_given_is_kept_and_durations_are_read():
    assert settings(["--timeout=1h", "--cull-every=90"]).cull_every == 90
    assert settings(["--timeout=1h"]).cull_every == 1800
    assert settings(["--timeout=1h30m"]).timeout == 5400


# --- booleans as idle-culler's users write them ---------------------------------------------


@pytest.mark.parametrize(
    "argv, expected",
    [(["--cull-users=True"], True), (["--cull-users=true"], True), (["--cull-users=False"], False),
     (["--cull-users=1"], True), (["--cull-users"], True), (["--no-cull-users"], False),
     (["--cull-users", "--no-cull-users"], False), ([], False)],
)  # fmt: skip
def test_cull_users_switches(argv, expected):
    assert settings(argv).cull_users is expected


def test_the_equals_forms_match_idle_cullers_reading():
    for value in ("True", "true", "False", "false", "1", "0"):
        argv = [f"--cull-admin-users={value}"]
        assert settings(argv).cull_admin_users is idle_culler_parse(argv).cull_admin_users


def test_a_boolean_value_as_the_next_argument_is_read_as_idle_culler_reads_it():
    argv = ["--cull-users", "True", "--ssl-enabled", "false"]
    expected = idle_culler_parse(argv)
    with_ours = settings(argv)
    assert (with_ours.cull_users, with_ours.ssl_enabled) == (expected.cull_users,
                                                             expected.ssl_enabled)  # fmt: skip


# --- the environment and the file -------------------------------------------------------------


def test_the_hub_sets_the_url_and_request_timeout_for_a_managed_service():
    environ = {"JUPYTERHUB_API_URL": "http://10.0.0.5:8081/hub/api/",
               "JUPYTERHUB_REQUEST_TIMEOUT": "120"}  # fmt: skip
    ours = settings([], environ)
    assert ours.url == "http://10.0.0.5:8081/hub/api" and ours.request_timeout == 120
    given = settings(["--url=http://127.0.0.1:8000/hub/api", "--request-timeout=30"], environ)
    assert given.url == "http://127.0.0.1:8000/hub/api" and given.request_timeout == 30


def test_without_any_url_the_hubs_usual_local_address():
    assert settings([]).url == DEFAULT_URL == "http://127.0.0.1:8081/hub/api"


def test_flags_win_over_the_environment_which_wins_over_the_file(tmp_path):
    config = tmp_path / "culler.toml"
    config.write_text('timeout = "2h"\nmax_age = "7d"\nexclude_users = ["root", "ops"]\n')
    environ = {"HUB_CULLER_CONFIG": str(config), "HUB_CULLER_TIMEOUT": "1h",
               "HUB_CULLER_CONCURRENCY": "4"}  # fmt: skip
    ours = settings(["--concurrency=2"], environ)
    assert (ours.timeout, ours.max_age, ours.concurrency) == (3600, 7 * 86400, 2)
    assert ours.exclude_users == ("root", "ops")
    assert settings(["--exclude-users=ada, bob"]).exclude_users == ("ada", "bob")


# --- bad values: exit 2, one line ---------------------------------------------------------------


@pytest.fixture
def clean_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("HUB_CULLER_", "JUPYTERHUB_")):
            monkeypatch.delenv(name)
    return monkeypatch


BAD = [
    (["--timeout=abc"], {}, "--timeout: not a duration"),
    (["--timeout=0"], {}, "--timeout: must be at least"),
    (["--concurrency=1000"], {}, "--concurrency: must be at most 256"),
    (["--concurrency=-1"], {}, "--concurrency: must be at least 0"),
    (["--max-age=-5"], {}, "--max-age: not a duration"),
    (["--url=ftp://hub/api"], {}, "url must be an http(s) URL"),
    (["--url=127.0.0.1:8081/hub/api"], {}, "url must be an http(s) URL"),
    (["--max-busy=60"], {}, "max_busy (60 s) must be at least timeout (600 s)"),
    (["--status-file=status.json"], {}, "status_file must be an absolute path"),
    (["--no-hub"], {}, "nothing to cull: --no-hub needs --docker"),
    ([], {"HUB_CULLER_TIMOUT": "60"}, "HUB_CULLER_TIMOUT names no setting"),
    ([], {"HUB_CULLER_CULL_USERS": "maybe"}, "HUB_CULLER_CULL_USERS: not a boolean"),
    ([], {"JUPYTERHUB_REQUEST_TIMEOUT": "soon"}, "JUPYTERHUB_REQUEST_TIMEOUT must be a number"),
    ([], {"JUPYTERHUB_API_URL": "hub:8081"}, "url must be an http(s) URL"),
]  # fmt: skip


@pytest.mark.parametrize("argv, environ, message", BAD, ids=[str(b[0] or b[1]) for b in BAD])
def test_a_bad_value_exits_2_with_one_line(clean_environment, capsys, argv, environ, message):
    for name, value in environ.items():
        clean_environment.setenv(name, value)
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.endswith("\n"), captured.err
    assert captured.err.startswith("hub-culler: error: ") and message in captured.err


@pytest.mark.parametrize("content, message", [
    ("timeout = \n", "not valid TOML"),
    ("timout = 60\n", "unknown setting 'timout'"),
    ('timeout = "often"\n', "timeout: not a duration"),
    ("cull_users = 1\n", None),  # TOML 1 is accepted as true, as in the environment
])  # fmt: skip
def test_a_bad_config_file_exits_2_with_one_line(clean_environment, capsys, tmp_path, content,
                                                 message):  # fmt: skip
    config = tmp_path / "culler.toml"
    config.write_text(content)
    if message is None:
        assert settings(["--config", str(config)]).cull_users is True
        return
    assert cli.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_missing_config_file_exits_2_with_one_line(clean_environment, capsys, tmp_path):
    assert cli.main(["--config", str(tmp_path / "absent.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read config file" in err


def test_a_bad_boolean_on_the_command_line_exits_2_naming_it():
    result = subprocess.run([str(HUB_CULLER), "--cull-users=maybe"], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        "hub-culler: error: argument --cull-users: not a boolean (true/false, yes/no, 1/0): "
        "'maybe' (see hub-culler --help)"
    )


def test_a_bad_boolean_on_the_command_line_is_one_line_too():
    result = subprocess.run([str(HUB_CULLER), "--cull-users=maybe"], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr


# --- --help and --generate-config, from the real command -------------------------------------


def test_help_names_every_idle_culler_option_and_exits_0():
    result = subprocess.run([str(HUB_CULLER), "--help"], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for flag in idle_culler_options():
        assert f"--{flag}" in result.stdout
    assert "JUPYTERHUB_API_TOKEN" in result.stdout


def test_generate_config_is_the_shipped_example_and_loads_as_the_defaults(tmp_path):
    result = subprocess.run([str(HUB_CULLER), "--generate-config"], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0 and result.stderr == ""
    assert EXAMPLE.exists(), "units/culler.toml.example is missing"
    assert result.stdout == EXAMPLE.read_text(), (
        "regenerate: .venv/bin/hub-culler --generate-config > units/culler.toml.example"
    )
    # every key in it, commented or not, is a setting at its default
    keys = {}
    for line in result.stdout.splitlines():
        text = line.removeprefix("# ")
        if " = " in text and not text.startswith(("#", " ")) and "[" not in text.split(" = ")[1]:
            try:
                keys.update(tomllib.loads(text))
            except tomllib.TOMLDecodeError:
                continue
    assert {"timeout", "cull_every", "max_age", "concurrency", "cull_users"} <= set(keys)
    config = tmp_path / "culler.toml"
    config.write_text(result.stdout)
    assert settings(["--config", str(config)]) == settings([])
    # what is left uncommented is what an admin has to look at, and nothing else
    assert set(tomllib.loads(result.stdout)) <= {"url", "timeout"}


def test_group_rules_are_read_from_their_tables_and_wrong_ones_are_one_line(tmp_path):
    from culler.group_rules import read_group_rules
    from culler.policy import GroupRule
    from hubsidecars.config import ConfigError

    path = tmp_path / "culler.toml"
    path.write_text('timeout = "1h"\n[groups.gpu]\ntimeout = "30m"\nmax_age = 0\n'
                    '[groups."ta#x"]\nexempt = true\n')  # fmt: skip
    assert read_group_rules(str(path)) == {"gpu": GroupRule(timeout=1800.0, max_age=0.0),
                                           "ta#x": GroupRule(exempt=True)}  # fmt: skip
    for wrong, words in [('[groups.gpu]\ntimeout = "soon"\n', "timeout"),
                         ('[groups.gpu]\ntimeout = 0\n', "out of range"),
                         ('[groups.gpu]\nexempt = "maybe"\n', "exempt"),
                         ('[groups.gpu]\ncolour = "red"\n', "unknown key 'colour'"),
                         ('groups = ["gpu"]\n', "one table per group")]:  # fmt: skip
        path.write_text(wrong)
        with pytest.raises(ConfigError, match=words):
            read_group_rules(str(path))


def test_the_example_config_s_group_rules_are_valid_once_uncommented(tmp_path):
    from culler.group_rules import read_group_rules
    from culler.settings import GROUPS_EXAMPLE

    text = "\n".join(line.removeprefix("#").split("#")[0].strip()
                     for line in GROUPS_EXAMPLE.splitlines()
                     if line.startswith(("# [", "#   ")))  # fmt: skip
    (tmp_path / "g.toml").write_text(text + "\n")
    rules = read_group_rules(str(tmp_path / "g.toml"))
    assert set(rules) == {"gpu", "course-tas", "research"} and rules["course-tas"].exempt


@pytest.mark.parametrize("value, expected", [
    ("ada, bob", ("ada", "bob")),
    (r"ta#x,@sum(1\,2)", ("ta#x", "@sum(1,2)")),
    (r"back\\slash", ("back\\slash",)),
    ('["@sum(1,2)", " spaced "]', ("@sum(1,2)", " spaced ")),
    ("", ()),
])  # fmt: skip
def test_lists_from_flags_and_environment_split_like_toml_arrays(value, expected):
    from hubsidecars.config import parse_list

    assert parse_list(value) == expected


def test_group_rules_are_read_from_the_default_file_too(tmp_path):
    """/etc/hub-sidecars/culler.toml without --config (here moved by HUB_SIDECARS_CONFIG_DIR):
    its [groups] tables count as its settings do, so a wrong rule stops the culler at start."""
    (tmp_path / "culler.toml").write_text('timeout = "1h"\n[groups.gpu]\ntimeout = "soon"\n')
    env = {key: value for key, value in os.environ.items() if not key.startswith("HUB_CULLER_")}
    env.update(HUB_SIDECARS_CONFIG_DIR=str(tmp_path),
               JUPYTERHUB_API_TOKEN="a-token-of-enough-length-0123456789")  # fmt: skip
    result = subprocess.run([str(HUB_CULLER), "--once", "--url", "http://127.0.0.1:9/hub/api",
                             "--status-file", "", "--probe-state-file", ""],
                            env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert "groups.gpu" in line and "timeout" in line, line
