"""Layered configuration: defaults < TOML file (--config) < environment < command line.

The TOML file is the one --config names, else the one $PREFIX_CONFIG names, else
/etc/hub-sidecars/NAME.toml when it exists (NAME: the prefix without HUB_, lowercase:
restuser, culler, stats, backup). An empty --config or $PREFIX_CONFIG reads no file at all.
$HUB_SIDECARS_CONFIG_DIR moves that directory (the test suite points it away from the host's).

A service declares its settings once, as a frozen dataclass whose fields are made with
`setting(...)`. That one declaration builds the argparse flags, names the environment variables
(PREFIX_NAME), checks the TOML keys, writes `--help` and renders the example config file, so
none of them can drift apart. The field's annotation says how a value is parsed:

    str, int, float, bool, tuple[str, ...]      (a TOML array or a comma-separated string)
    FileMode   an int; TOML 0o660 or the string "0660"
    Duration   float seconds; "7d", "12h", "30m", "300s", "1h30m" or a bare number of seconds
    Literal["kv", "json"]                        one of the choices, matched case-insensitively

Booleans are flags without a value (`--dry-run`, `--no-dry-run`); `--dry-run=false` works too.
Secrets are never settings: only the path of a secret file is (see hubsidecars.secrets).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import re
import sys
import textwrap
import tomllib
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from hubsidecars.cli_main import say
from hubsidecars.errors import EXIT_USAGE, ConfigError  # ConfigError: still importable here

# --- parsers: each takes a TOML value or an env/argv string, raises ValueError with a reason --


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean (true/false, yes/no, 1/0): {value!r}")


def parse_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"not an integer: {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"not an integer: {value!r}") from None


def parse_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"not a number: {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"not a string: {value!r}")
    return value


def parse_list(value: Any) -> tuple[str, ...]:
    """A TOML array of strings; from the environment or argv, the same array as JSON
    (`["ta#x", "@sum(1,2)"]`, for names holding any character) or a comma-separated string in
    which `\\,` is a comma inside a name and `\\\\` a backslash (`a,@sum(1\\,2)`)."""
    if isinstance(value, (list, tuple)):
        if not all(isinstance(item, str) for item in value):
            raise ValueError(f"not a list of strings: {value!r}")
        return tuple(value)
    if not isinstance(value, str):
        raise ValueError(f"not a list of strings: {value!r}")
    if value.lstrip().startswith("["):
        try:
            items = json.loads(value)
        except (ValueError, RecursionError):
            raise ValueError("starts with [ but is not a JSON list of strings; a name that "
                             "starts with [ goes inside one: [\"[name\"]") from None  # fmt: skip
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ValueError("not a JSON list of strings")
        return tuple(items)
    items, current, escaped = [], [], False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    items.append("".join(current))
    return tuple(item.strip() for item in items if item.strip())


def parse_mode(value: Any) -> int:
    """A file mode: an int (TOML 0o660) or an octal string ("0660", "660", "0o660")."""
    if isinstance(value, bool):
        raise ValueError(f"not a file mode: {value!r}")
    try:
        mode = value if isinstance(value, int) else int(str(value).strip().removeprefix("0o"), 8)
    except ValueError:
        raise ValueError(f"not an octal file mode: {value!r}") from None
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"not a file mode: {value!r}")
    return mode


_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_NUMBER = r"\d+(?:\.\d+)?"
_DURATION = re.compile(rf"(?:{_NUMBER}[wdhms])+|{_NUMBER}")
_DURATION_PART = re.compile(rf"({_NUMBER})([wdhms])")


def parse_duration(value: Any) -> float:
    """Seconds from "7d", "12h", "30m", "300s", "1h30m" (units w d h m s, any case) or a bare
    number of seconds (also a TOML number). "m" is minutes: months are not a fixed length."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        if not _DURATION.fullmatch(text):
            raise ValueError(f"not a duration (like 300s, 30m, 12h, 7d, 1h30m): {value!r}")
        if text[-1].isdigit():
            seconds = float(text)
        else:
            seconds = sum(
                float(number) * _UNIT_SECONDS[unit]
                for number, unit in _DURATION_PART.findall(text)
            )
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"not a duration: {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The short form parse_duration reads back: 604800 -> "7d", 5400 -> "1h30m"."""
    if not float(seconds).is_integer():
        return f"{seconds:g}s"
    rest, parts = int(seconds), []
    for unit in "dhms":
        count, rest = divmod(rest, _UNIT_SECONDS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


# --- kinds: how a field's annotation is parsed, shown in --help and written in TOML ---


@dataclass(frozen=True)
class Kind:
    name: str
    parse: Callable[[Any], Any]
    show: Callable[[Any], str]  # the short form for --help and error messages
    toml: Callable[[Any], str]  # a TOML literal for the example file


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


STR = Kind("str", parse_str, lambda v: v or "none", _toml_str)
INT = Kind("int", parse_int, str, str)
FLOAT = Kind("float", parse_float, lambda v: f"{v:g}", repr)
BOOL = Kind("bool", parse_bool, lambda v: str(v).lower(), lambda v: str(v).lower())
LIST = Kind(
    "list",
    parse_list,
    lambda v: ",".join(v) or "none",
    lambda v: "[" + ", ".join(_toml_str(item) for item in v) + "]",
)
MODE = Kind("mode", parse_mode, lambda v: f"{v:04o}", lambda v: f"0o{v:03o}")
DURATION = Kind("duration", parse_duration, format_duration,
                lambda v: _toml_str(format_duration(v)))  # fmt: skip

FileMode = Annotated[int, MODE]
Duration = Annotated[float, DURATION]
_PLAIN_KINDS = {str: STR, int: INT, float: FLOAT, bool: BOOL, tuple[str, ...]: LIST}


def _kind_of(annotation: Any) -> tuple[Kind, tuple[str, ...]]:
    """The Kind, and the choices when the annotation is a Literal."""
    if typing.get_origin(annotation) is Annotated:
        kinds = [extra for extra in annotation.__metadata__ if isinstance(extra, Kind)]
        if kinds:
            return kinds[0], ()
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is Literal:
        return STR, tuple(typing.get_args(annotation))
    if annotation in _PLAIN_KINDS:
        return _PLAIN_KINDS[annotation], ()
    raise TypeError(f"no parser for {annotation!r}: pass parse= to setting()")


# --- declaring settings ---


@dataclass(frozen=True)
class _Meta:
    help: str
    metavar: str | None
    minimum: float | None
    maximum: float | None
    heading: str | None
    in_example: bool
    flag: bool
    kind: Kind | None


_META_KEY = "hubsidecars.config"


def setting(
    default: Any,
    help: str,
    *,
    metavar: str | None = None,
    min: float | None = None,
    max: float | None = None,
    heading: str | None = None,
    in_example: bool = False,
    flag: bool = True,
    kind: Kind | None = None,
) -> Any:
    """A field of a settings dataclass: its default, its `--help` text and how it is checked.

    `min`/`max` bound numbers and durations. `heading` starts a new group of keys in the example
    file. `in_example=True` writes the key uncommented there: what an admin really has to set.
    `flag=False` leaves it out of the command line (file and environment only). `kind` overrides
    the parser inferred from the annotation.
    """
    meta = _Meta(help, metavar, min, max, heading, in_example, flag, kind)
    return dataclasses.field(default=default, metadata={_META_KEY: meta})


@dataclass(frozen=True)
class Option:
    """One setting as the layers see it: TOML key `name`, flag --name-with-dashes, environment
    variable PREFIX_NAME."""

    name: str
    kind: Kind
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    metavar: str | None = None
    heading: str | None = None
    in_example: bool = False
    flag: bool = True

    @property
    def cli_flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def env_var(self, prefix: str) -> str:
        return f"{prefix}_{self.name.upper()}"

    def described(self) -> str:
        """The help text, naming the choices unless it already explains each one."""
        if self.choices and not all(choice in self.help for choice in self.choices):
            return f"{self.help}; one of {', '.join(self.choices)}"
        return self.help

    def convert(self, value: Any, where: str) -> Any:
        """Parse and check one value; `where` (flag, env var or file: key) starts the error."""
        try:
            result = self.kind.parse(value)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}: {error}") from None
        if self.choices:
            matches = [choice for choice in self.choices if choice.lower() == str(result).lower()]
            if not matches:
                choices = ", ".join(self.choices)
                raise ConfigError(f"{where}: must be one of {choices}, got {value!r}")
            result = matches[0]
        show = self.kind.show
        if self.minimum is not None and result < self.minimum:
            raise ConfigError(f"{where}: must be at least {show(self.minimum)}, got {show(result)}")
        if self.maximum is not None and result > self.maximum:
            raise ConfigError(f"{where}: must be at most {show(self.maximum)}, got {show(result)}")
        return result


def options(settings_class: type) -> list[Option]:
    """The options a settings dataclass declares, in declaration order."""
    hints = typing.get_type_hints(settings_class, include_extras=True)
    found = []
    for field in dataclasses.fields(settings_class):
        meta = field.metadata.get(_META_KEY)
        if meta is None:
            raise TypeError(f"{settings_class.__name__}.{field.name} is not made with setting()")
        kind, choices = (meta.kind, ()) if meta.kind else _kind_of(hints[field.name])
        found.append(
            Option(field.name, kind, field.default, meta.help, choices, meta.minimum,
                   meta.maximum, meta.metavar, meta.heading, meta.in_example, meta.flag)
        )  # fmt: skip
    return found


# --- the command line ---


class _BoolFlag(argparse.BooleanOptionalAction):
    """--name sets true, --no-name false; SettingsParser also accepts --name=VALUE."""


class SettingsParser(argparse.ArgumentParser):
    """An ArgumentParser that also reads `--flag=true|false` for boolean settings, as
    jupyterhub-idle-culler's users write `--cull-users=True`, and `--flag true|false` (the value
    as the next argument, which idle-culler takes too) when the parser has no positional
    arguments that such a word could belong to. Subcommand parsers made with
    add_subparsers().add_parser() are of the same class, so they accept it as well. Usage
    errors are one line, as every other configuration error.

    `deprecated_commands` maps a command's old name to the arguments that replace it; the old
    name still works, and says so on stderr."""

    deprecated_commands: Mapping[str, str] = {}

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        args = self._replace_deprecated(list(sys.argv[1:] if args is None else args))
        # A word after a boolean flag is its value unless a positional argument could take it
        # (a subcommand named "yes" could; none is).
        takes_words = any(
            not action.option_strings
            and (not isinstance(action, argparse._SubParsersAction)
                 or any(_is_bool_word(name) for name in action.choices))
            for action in self._actions
        )  # fmt: skip
        rewritten = []
        position = 0
        while position < len(args):
            arg = args[position]
            position += 1
            if arg == "--":
                rewritten.extend(args[position - 1 :])
                break
            flag, equals, value = arg.partition("=")
            action = self._option_string_actions.get(flag)
            if not isinstance(action, _BoolFlag) or flag.startswith("--no-"):
                rewritten.append(arg)
                continue
            if not equals and not takes_words and position < len(args):
                following = args[position]
                if _is_bool_word(following):
                    value, equals = following, "="
                    position += 1
            if equals:
                try:
                    arg = flag if parse_bool(value) else "--no-" + flag[2:]
                except ValueError as error:
                    self.error(f"argument {flag}: {error}")
            rewritten.append(arg)
        return super().parse_known_args(rewritten, namespace)

    def error(self, message: str):  # type: ignore[override]
        say(self.prog, "error", f"{message} (see {self.prog} --help)")
        self.exit(EXIT_USAGE)

    def _replace_deprecated(self, args: list[str]) -> list[str]:
        """The first word that is no option nor an option's value is the command: when it is
        a deprecated one, replace it and say so."""
        takes_value = False
        for position, arg in enumerate(args):
            if arg == "--":
                break
            if takes_value or arg.startswith("-"):
                action = self._option_string_actions.get(arg)
                takes_value = (not takes_value and action is not None and action.nargs is None
                               and not isinstance(action, _BoolFlag))  # fmt: skip
                continue
            if arg in self.deprecated_commands:
                new = self.deprecated_commands[arg]
                sys.stderr.write(f"{self.prog}: warning: '{arg}' is deprecated and will go; "
                                 f"use {new}\n")  # fmt: skip
                args[position : position + 1] = new.split()
            break
        return args


class GenerateConfig(argparse.Action):
    """`--generate-config`: print the example configuration file (`render()`) and exit, as
    --version prints the version."""

    def __init__(self, option_strings, dest, render: Callable[[], str], **kwargs) -> None:
        kwargs.setdefault("help", "print the example configuration file and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.render = render

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        sys.stdout.write(self.render())
        parser.exit(0)


def _is_bool_word(word: str) -> bool:
    try:
        parse_bool(word)
    except ValueError:
        return False
    return True


def add_options(parser: argparse.ArgumentParser, settings_class: type, env_prefix: str) -> None:
    """Add --config and a flag per option; an absent flag leaves no value (default=SUPPRESS),
    so the lower layers show through."""
    _add_config(parser, f"TOML file with any of the settings below (env {env_prefix}_CONFIG)")
    for option in options(settings_class):
        if not option.flag:
            continue
        default = option.kind.show(option.default)
        described = f"{option.described()} (env {option.env_var(env_prefix)}; default: {default})"
        described = described.replace("%", "%%")  # argparse formats help with %
        if option.kind is BOOL:
            parser.add_argument(option.cli_flag, dest=option.name, action=_BoolFlag,
                                default=argparse.SUPPRESS, help=described)  # fmt: skip
            continue
        parser.add_argument(
            option.cli_flag,
            dest=option.name,
            metavar=option.metavar or _metavar(option),
            default=argparse.SUPPRESS,
            help=described,
        )


def _add_config(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=help_text)


def add_commands(parser: argparse.ArgumentParser, settings_class: type, env_prefix: str,
                 required: bool = False) -> Callable[..., argparse.ArgumentParser]:  # fmt: skip
    """Subcommands for `parser`; returns `command(name, help, settings=True)`, which adds one
    (with every setting's flag unless `settings` is false) and returns its parser.

    `--config FILE` is taken before the command as well as after it (`hub-X --config FILE
    COMMAND` and `hub-X COMMAND --config FILE`; given twice, the one after wins): each
    subparser leaves an absent flag unset (SUPPRESS), so the value read before shows through.
    The chosen command is in `command` (None when none was given and none is `required`)."""
    if "--config" not in parser._option_string_actions:
        _add_config(parser, f"TOML file with the settings, before or after COMMAND "
                    f"(env {env_prefix}_CONFIG)")  # fmt: skip
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=required)

    def command(name: str, help: str, description: str | None = None,
                settings: bool = True) -> argparse.ArgumentParser:  # fmt: skip
        sub = commands.add_parser(name, help=help, description=description or help)
        if settings:
            add_options(sub, settings_class, env_prefix)
        return sub

    return command


def _metavar(option: Option) -> str:
    return "{" + ",".join(option.choices) + "}" if option.choices else option.kind.name.upper()


# --- loading ---

DEFAULT_CONFIG_DIR = "/etc/hub-sidecars"
CONFIG_DIR_ENV = "HUB_SIDECARS_CONFIG_DIR"


def default_config_file(env_prefix: str, environ: Mapping[str, str] | None = None) -> str:
    """/etc/hub-sidecars/NAME.toml for the service whose variables start with `env_prefix`
    (HUB_STATS: stats.toml), in $HUB_SIDECARS_CONFIG_DIR when that is set."""
    environ = os.environ if environ is None else environ
    name = env_prefix.removeprefix("HUB_").lower()
    # where this process looks, also when the caller hands in an environment of its own
    directory = environ.get(CONFIG_DIR_ENV) or os.environ.get(CONFIG_DIR_ENV) or DEFAULT_CONFIG_DIR
    return os.path.join(directory, f"{name}.toml")


def config_file(
    env_prefix: str, cli_values: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> str | None:
    """The TOML file to read: --config, else $PREFIX_CONFIG, else the default file when it
    exists; None for none (an empty --config or $PREFIX_CONFIG says: no file)."""
    environ = os.environ if environ is None else environ
    if cli_values.get("config") is not None:
        return cli_values["config"] or None
    if f"{env_prefix}_CONFIG" in environ:
        return environ[f"{env_prefix}_CONFIG"] or None
    default = default_config_file(env_prefix, environ)
    return default if os.path.isfile(default) else None



def load_settings(
    settings_class: type,
    env_prefix: str,
    cli_values: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    sections: Collection[str] = (),
) -> Any:
    """Merge defaults, the TOML file, the environment and the command line, in that order, into
    an instance of `settings_class`. `cli_values` holds the parsed flags (vars(namespace));
    names that are not options (the subcommand, positionals) are ignored. TOML tables named
    in `sections` are the caller's to read (e.g. the culler's [groups.NAME])."""
    environ = os.environ if environ is None else environ
    declared = options(settings_class)
    by_name = {option.name: option for option in declared}
    values: dict[str, Any] = {}

    config_path = config_file(env_prefix, cli_values, environ)
    if config_path:
        for key, value in _read_toml(config_path).items():
            if key in sections and isinstance(value, dict):
                continue
            if key not in by_name:
                raise ConfigError(f"{config_path}: unknown setting {key!r}")
            values[key] = by_name[key].convert(value, f"{config_path}: {key}")

    _refuse_unknown_env(declared, env_prefix, environ)
    for option in declared:
        env_name = option.env_var(env_prefix)
        if env_name in environ:
            values[option.name] = option.convert(environ[env_name], env_name)

    for name, value in cli_values.items():
        if name in by_name:
            values[name] = by_name[name].convert(value, by_name[name].cli_flag)
    return settings_class(**values)


def _refuse_unknown_env(
    declared: list[Option], env_prefix: str, environ: Mapping[str, str]
) -> None:
    """A variable PREFIX_SOMETHING that names no setting is a typo (HUB_RESTUSER_UID_MN),
    which would otherwise be ignored without a word: refuse it, as an unknown TOML key."""
    known = {option.env_var(env_prefix) for option in declared} | {f"{env_prefix}_CONFIG"}
    unknown = sorted(name for name in environ if name.startswith(env_prefix + "_")
                     and name not in known)  # fmt: skip
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"environment variable {unknown[0]} names no setting{hint}")


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None


# --- the example file ---

_WIDTH = 100


def render_example(settings_class: type, header: str) -> str:
    """The example TOML file: `header` as a comment, then every option under its heading with
    its help as a comment and its default as a commented-out key, except `in_example` keys,
    which are written as settings (the admin must look at them)."""
    lines = [f"# {line}".rstrip() for line in header.strip().splitlines()]
    for option in options(settings_class):
        if option.heading:
            lines += ["", *("#" + line for line in _comment(option.heading))]
        described = option.described()
        lines += ["", *_comment(described[:1].upper() + described[1:] + ".")]
        lines += _key_lines(option)
    return "\n".join(lines) + "\n"


def _comment(text: str) -> list[str]:
    return ["# " + line for line in textwrap.wrap(text, _WIDTH - 2, break_on_hyphens=False)]


def _key_lines(option: Option) -> list[str]:
    marker = "" if option.in_example else "# "
    line = f"{marker}{option.name} = {option.kind.toml(option.default)}"
    if len(line) <= _WIDTH or option.kind is not LIST:
        return [line]
    # A long array goes one line per few items, every line commented like the key.
    items = [_toml_str(item) + "," for item in option.default]
    body = textwrap.wrap(" ".join(items), _WIDTH - len(marker) - 4,
                         break_on_hyphens=False, break_long_words=False)  # fmt: skip
    return [f"{marker}{option.name} = ["] + [f"{marker}    {row}" for row in body] + [f"{marker}]"]


__all__ = [
    "ConfigError",
    "GenerateConfig",
    "Duration",
    "FileMode",
    "Kind",
    "Option",
    "SettingsParser",
    "add_commands",
    "add_options",
    "config_file",
    "default_config_file",
    "format_duration",
    "load_settings",
    "options",
    "parse_bool",
    "parse_duration",
    "parse_float",
    "parse_int",
    "parse_list",
    "parse_mode",
    "parse_str",
    "render_example",
    "setting",
]

