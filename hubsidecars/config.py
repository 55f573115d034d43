"""Layered configuration: defaults < TOML file (--config) < environment < command line.

Each service declares its options once as a list of `Option`; the same list builds the
argparse flags, names the environment variables and validates the TOML keys, so the
three ways of setting an option cannot drift apart.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence


class ConfigError(Exception):
    """Bad usage or configuration; the message is one line for the admin. Exit code 2."""


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def parse_mode(value: Any) -> int:
    """A file mode: an int (TOML 0o660) or an octal string ("0660", "660")."""
    if isinstance(value, bool):
        raise ValueError(f"not a file mode: {value!r}")
    mode = value if isinstance(value, int) else int(str(value), 8)
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"not a file mode: {value!r}")
    return mode


def parse_list(value: Any) -> list[str]:
    """A list: a TOML array, or a comma-separated string from the environment."""
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    return [item.strip() for item in str(value).split(",") if item.strip()]


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"not an integer: {value!r}")
    return int(value)


def parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"not a string: {value!r}")
    return value


@dataclass(frozen=True)
class Option:
    """One setting: `name` is the TOML key; the flag is --name-with-dashes; the env var is
    PREFIX_NAME. `parse` turns a TOML value or an env/argv string into the setting."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str | None = None
    flag: bool = True

    @property
    def cli_flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def env_var(self, prefix: str) -> str:
        return f"{prefix}_{self.name.upper()}"


def add_options(
    parser: argparse.ArgumentParser, options: Sequence[Option], env_prefix: str
) -> None:
    """Add every option as a flag whose absence is visible (default=SUPPRESS)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"TOML file with any of the settings below (env {env_prefix}_CONFIG)",
    )
    for option in options:
        if not option.flag:
            continue
        default = option.default
        if option.parse is parse_mode and isinstance(default, int):
            default = f"{default:04o}"
        elif isinstance(default, list):
            default = ",".join(default) or "none"
        elif default == "":
            default = "none"
        parser.add_argument(
            option.cli_flag,
            dest=option.name,
            metavar=option.metavar or option.name.upper(),
            default=argparse.SUPPRESS,
            help=f"{option.help} (env {option.env_var(env_prefix)}; default: {default})",
        )


def load_settings(
    options: Sequence[Option],
    env_prefix: str,
    cli_values: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Merge defaults, the TOML file, the environment and the command line, in that order."""
    environ = os.environ if environ is None else environ
    by_name = {option.name: option for option in options}
    settings = {option.name: option.default for option in options}

    config_path = cli_values.get("config") or environ.get(f"{env_prefix}_CONFIG")
    if config_path:
        for key, value in _read_toml(config_path).items():
            if key not in by_name:
                raise ConfigError(f"{config_path}: unknown setting {key!r}")
            settings[key] = _convert(by_name[key], value, f"{config_path}: {key}")

    for option in options:
        env_name = option.env_var(env_prefix)
        if env_name in environ:
            settings[option.name] = _convert(option, environ[env_name], env_name)

    for name, value in cli_values.items():
        if name in by_name:
            settings[name] = _convert(by_name[name], value, by_name[name].cli_flag)
    return settings


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None


def _convert(option: Option, value: Any, where: str) -> Any:
    try:
        return option.parse(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None
