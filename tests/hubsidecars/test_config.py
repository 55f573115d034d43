"""The layered configuration as a service and its admin meet it: one declaration per setting
drives flags, environment variables, TOML keys, --help and the example file."""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import FrozenInstanceError, dataclass
from typing import Literal

import pytest

from hubsidecars.config import (
    ConfigError,
    Duration,
    FileMode,
    SettingsParser,
    add_options,
    format_duration,
    load_settings,
    options,
    parse_duration,
    render_example,
    setting,
)

PREFIX = "HUB_DEMO"


@dataclass(frozen=True, kw_only=True)
class DemoSettings:
    url: str = setting("http://127.0.0.1:8081/hub/api", "hub API URL", heading="The hub")
    once: bool = setting(False, "do one pass and exit")
    dry_run: bool = setting(False, "report what would be done, change nothing")
    timeout: Duration = setting(3600.0, "idle time before culling", min=60, max=30 * 86400)
    full_every: Duration = setting(7 * 86400.0, "start a new full chain this often")
    concurrency: int = setting(10, "requests at once", min=1, max=100, heading="Tuning")
    ratio: float = setting(0.5, "a fraction")
    mode: FileMode = setting(0o660, "socket permissions")
    groups: tuple[str, ...] = setting((), "extra groups")
    log_format: Literal["kv", "json"] = setting("kv", "log line format")
    state_dir: str = setting("/var/lib/demo", "state (100% local)", in_example=True)


def parse(*argv: str) -> dict:
    parser = SettingsParser(prog="demo")
    add_options(parser, DemoSettings, PREFIX)
    return vars(parser.parse_args(list(argv)))


def load(*argv: str, env: dict | None = None) -> DemoSettings:
    return load_settings(DemoSettings, PREFIX, parse(*argv), environ=env or {})


def test_defaults_are_typed_attributes_and_frozen():
    settings = load()
    assert settings == DemoSettings()
    assert settings.timeout == 3600.0 and settings.groups == () and settings.once is False
    with pytest.raises(FrozenInstanceError):
        settings.once = True  # type: ignore[misc]


def test_booleans_are_flags_without_a_value():
    assert load("--once", "--dry-run").once is True
    assert load("--once", "--no-once").once is False
    assert load("--once=false").once is False
    assert load("--dry-run=True").dry_run is True  # as jupyterhub-idle-culler users write it
    assert load("--dry-run=yes", "--once=0") == DemoSettings(dry_run=True, once=False)
    for word, expected in [("true", True), ("0", False), ("yes", True), ("no", False)]:
        assert load(env={"HUB_DEMO_ONCE": word}).once is expected


def test_a_boolean_flag_does_not_swallow_the_next_argument():
    parser = SettingsParser(prog="demo")
    add_options(parser, DemoSettings, PREFIX)
    parser.add_argument("target")
    args = vars(parser.parse_args(["--once", "out.sqlite"]))
    assert args["target"] == "out.sqlite" and args["once"] is True


def test_bad_boolean_flag_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse("--once=maybe")
    assert exit_.value.code == 2 and "--once" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="^HUB_DEMO_ONCE: not a boolean"):
        load(env={"HUB_DEMO_ONCE": "maybe"})


@pytest.mark.parametrize(
    "text, seconds",
    [("7D", 604800), ("7d", 604800), ("12h", 43200), ("30m", 1800), ("300s", 300), ("90", 90),
     ("1h30m", 5400), ("2W", 1209600), ("1.5h", 5400), (" 2h ", 7200), (45, 45)],
)  # fmt: skip
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7x", "h", "1h30", "-5s", "5 months", "1e9", True])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0, 1, 59, 90, 3600, 5400, 86400, 604800, 93784, 2.5])
def test_durations_are_shown_in_a_form_that_reads_back(seconds):
    assert parse_duration(format_duration(seconds)) == seconds
    assert format_duration(604800) == "7d" and format_duration(5400) == "1h30m"


def test_every_layer_parses_durations_modes_lists(tmp_path):
    config = tmp_path / "demo.toml"
    config.write_text('timeout = "2h"\nmode = 0o600\ngroups = ["a", "b"]\nfull_every = 86400\n')
    env = {"HUB_DEMO_CONFIG": str(config), "HUB_DEMO_MODE": "0640", "HUB_DEMO_GROUPS": "c, d"}
    settings = load("--timeout", "1h30m", env=env)
    assert settings.timeout == 5400  # flag beats the file
    assert settings.full_every == 86400  # a TOML number is seconds
    assert settings.mode == 0o640  # env beats the file
    assert settings.groups == ("c", "d")


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["--concurrency", "0"], {}, "--concurrency: must be at least 1, got 0"),
        ([], {"HUB_DEMO_CONCURRENCY": "101"}, "HUB_DEMO_CONCURRENCY: must be at most 100, got 101"),
        (["--timeout", "10s"], {}, "--timeout: must be at least 1m, got 10s"),
        (["--timeout", "31d"], {}, "--timeout: must be at most 30d, got 31d"),
        (["--log-format", "xml"], {}, "--log-format: must be one of kv, json, got 'xml'"),
        (["--mode", "999"], {}, "--mode: not an octal file mode"),
        (["--concurrency", "1.5"], {}, "--concurrency: not an integer"),
        ([], {"HUB_DEMO_TIMEOUT": "soon"}, "HUB_DEMO_TIMEOUT: not a duration"),
    ],
)
def test_errors_name_where_the_value_came_from(argv, env, message):
    with pytest.raises(ConfigError) as caught:
        load(*argv, env=env)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_file_errors_name_file_and_key(tmp_path):
    config = tmp_path / "demo.toml"
    config.write_text("concurrency = 2.5\n")
    with pytest.raises(ConfigError, match=f"^{config}: concurrency: not an integer"):
        load("--config", str(config))
    config.write_text("concurency = 2\n")
    with pytest.raises(ConfigError, match="unknown setting 'concurency'"):
        load("--config", str(config))
    config.write_text("groups = [1, 2]\n")
    with pytest.raises(ConfigError, match="groups: not a list of strings"):
        load("--config", str(config))


def test_an_unknown_variable_with_the_prefix_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(env={"HUB_DEMO_CONCURENCY": "2", "HUB_DEMO_ONCE": "yes"})
    assert str(caught.value) == (
        "environment variable HUB_DEMO_CONCURENCY names no setting "
        "(did you mean HUB_DEMO_CONCURRENCY?)"
    )
    config = tmp_path / "demo.toml"
    config.write_text("concurrency = 3\n")
    # PREFIX_CONFIG, other services' variables and the bare prefix are not settings typos.
    settings = load(env={"HUB_DEMO_CONFIG": str(config), "HUB_DEMOTWO_X": "1", "HUB_DEMO": "1",
                         "HUB_OTHER_CONCURRENCY": "0"})  # fmt: skip
    assert settings.concurrency == 3


def test_choices_match_case_insensitively_and_store_the_declared_spelling():
    assert load("--log-format", "JSON").log_format == "json"


def test_help_names_each_flag_env_var_choice_and_default():
    parser = SettingsParser(prog="demo", formatter_class=argparse.RawTextHelpFormatter)
    add_options(parser, DemoSettings, PREFIX)
    text = " ".join(parser.format_help().split())
    for option in options(DemoSettings):
        assert option.cli_flag in text and option.env_var(PREFIX) in text
    assert "--once, --no-once" in text
    assert "default: 1h)" in text and "default: 7d)" in text and "default: 0660)" in text
    assert "--log-format {kv,json}" in text and "one of kv, json" in text and "(100% local)" in text


def test_example_lists_every_key_with_its_default_and_loads_as_the_defaults(tmp_path):
    example = render_example(DemoSettings, "demo.toml: an example")
    assert example.startswith("# demo.toml: an example\n")
    assert "\n## Tuning\n" in example and '\nstate_dir = "/var/lib/demo"\n' in example
    uncommented = "\n".join(
        line[2:] if line.startswith("# ") and " = " in line else line
        for line in example.splitlines()
    )
    values = tomllib.loads(uncommented)
    assert sorted(values) == sorted(option.name for option in options(DemoSettings))
    config = tmp_path / "all.toml"
    config.write_text(uncommented)
    assert load("--config", str(config)) == DemoSettings()
    assert values["timeout"] == "1h" and values["mode"] == 0o660


def test_a_field_without_setting_is_a_declaration_error():
    @dataclass(frozen=True)
    class Broken:
        plain: int = 3

    with pytest.raises(TypeError, match="not made with setting"):
        options(Broken)


def test_a_long_list_wraps_without_splitting_a_name(tmp_path):
    long_names = tuple(f"pk-helper-{'x' * (number % 9)}-{number}" for number in range(24))

    @dataclass(frozen=True, kw_only=True)
    class Listing:
        names: tuple[str, ...] = setting(long_names, "a long list")

    example = render_example(Listing, "header")
    assert all(len(line) <= 100 for line in example.splitlines())
    lines = example.splitlines()
    start = lines.index("# names = [")
    array = "\n".join(line.removeprefix("#") for line in lines[start:])
    assert lines[-1] == "# ]" and tomllib.loads(array)["names"] == list(long_names)


def test_the_default_file_is_read_when_it_exists(tmp_path):
    """/etc/hub-sidecars/NAME.toml (here in HUB_SIDECARS_CONFIG_DIR): read with no --config;
    --config or $PREFIX_CONFIG name another file instead; an empty one reads none."""
    (tmp_path / "demo.toml").write_text('concurrency = 7\nratio = 0.25\n')
    other = tmp_path / "other.toml"
    other.write_text("concurrency = 3\n")
    env = {"HUB_SIDECARS_CONFIG_DIR": str(tmp_path)}
    assert load(env=env).concurrency == 7 and load(env=env).ratio == 0.25
    assert load(env={**env, "HUB_DEMO_CONCURRENCY": "8"}).concurrency == 8
    assert load("--config", str(other), env=env) == DemoSettings(concurrency=3)
    assert load(env={**env, "HUB_DEMO_CONFIG": str(other)}) == DemoSettings(concurrency=3)
    assert load(env={**env, "HUB_DEMO_CONFIG": ""}) == DemoSettings()
    assert load("--config", "", env=env) == DemoSettings()
    assert load(env={"HUB_SIDECARS_CONFIG_DIR": str(tmp_path / "none")}) == DemoSettings()


def test_a_wrong_default_file_names_itself(tmp_path):
    (tmp_path / "demo.toml").write_text("concurrency = 0\n")
    with pytest.raises(ConfigError) as raised:
        load(env={"HUB_SIDECARS_CONFIG_DIR": str(tmp_path)})
    assert str(raised.value) == f"{tmp_path}/demo.toml: concurrency: must be at least 1, got 0"
