"""Per-group rules from the TOML file's [groups.NAME] tables, read again every pass.

    [groups.gpu]            # members culled after 30 idle minutes, whatever --timeout says
    timeout = "30m"
    [groups.tas]            # never culled
    exempt = true

Only the file holds them (they are tables, not flags). What a table leaves out, the command
line's policy decides; culler/policy.py's `policy_for` combines them for a user.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping

from culler.policy import GroupRule
from hubsidecars.config import ConfigError, parse_bool, parse_duration

SECTION = "groups"
YEAR = 365 * 86400.0
# key: (minimum, what a value means)
_DURATIONS = {"timeout": 1.0, "max_age": 0.0, "max_busy": 1.0}


def parse_group_rules(table: object, where: str) -> dict[str, GroupRule]:
    """The rules of a [groups] table (a mapping of group name to table); ConfigError naming
    the group and key for anything else."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: [{SECTION}] must hold one table per group")
    rules = {}
    for name, entry in table.items():
        here = f"{where}: [{SECTION}.{name!r}]" if not name.isidentifier() else (
            f"{where}: [{SECTION}.{name}]")  # fmt: skip
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{here} must be a table (timeout, max_age, max_busy, exempt)")
        values: dict = {}
        for key, value in entry.items():
            try:
                if key in _DURATIONS:
                    seconds = parse_duration(value)
                    if seconds < _DURATIONS[key] or seconds > 100 * YEAR:
                        raise ValueError(f"out of range: {value!r}")
                    values[key] = seconds
                elif key == "exempt":
                    values[key] = parse_bool(value)
                else:
                    raise ConfigError(f"{here}: unknown key {key!r} (timeout, max_age, "
                                      "max_busy, exempt)")  # fmt: skip
            except (TypeError, ValueError) as error:
                raise ConfigError(f"{here}: {key}: {error}") from None
        rules[name] = GroupRule(**values)
    return rules


def read_group_rules(path: str) -> dict[str, GroupRule]:
    """The rules in the TOML file at `path` (none when it has no [groups]; none without a
    file). Raises ConfigError when the file cannot be read or a rule is wrong."""
    if not path:
        return {}
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return parse_group_rules(document.get(SECTION, {}), path)
