"""The exit-code contract: docs/exit-codes.md's table is what hubsidecars.errors declares, and
the one `main` wrapper turns each error into its code and one line (a traceback only when the
command logs at debug level). Each service's tests run its real command into each code."""

from __future__ import annotations

import logging
import re

import pytest

from hubsidecars import errors
from hubsidecars.cli_main import run_main
from hubsidecars.config import SettingsParser
from hubsidecars.logs import setup_logging
from realparts.restuser import REPO

DOC = REPO / "docs/exit-codes.md"


def documented() -> dict[int, str]:
    """code -> the 'raised as' cell of the first table in docs/exit-codes.md"""
    rows = re.findall(r"^\| (\d+) \|[^|]+\|([^|]*)\|", DOC.read_text(), re.MULTILINE)
    return {int(code): raised.strip() for code, raised in rows}


def test_the_documented_table_is_the_contract():
    table = documented()
    assert sorted(table) == [errors.EXIT_OK, errors.EXIT_FAILED, errors.EXIT_USAGE,
                             errors.EXIT_BUSY] == [0, 1, 2, 75]  # fmt: skip
    for kind in (errors.Failed, errors.ConfigError, errors.Busy):
        assert f"`{kind.__name__}`" in table[kind.exit_code], (kind, table)
    assert (REPO / "README.md").read_text().count("docs/exit-codes.md") >= 1


@pytest.fixture(autouse=True)
def _root_logger_kept():
    """The commands here set up logging as a real one does; leave it as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def command(raised: BaseException):
    parser = SettingsParser(prog="hub-test")
    parser.add_argument("--log-level", default="info")

    def dispatch(args: dict) -> int:
        setup_logging("kv", args["log_level"])
        raise raised

    return parser, dispatch


@pytest.mark.parametrize("raised, code, line", [
    (errors.ConfigError("bind must be unix:PATH or HOST:PORT"), 2,
     "hub-test: error: bind must be unix:PATH or HOST:PORT"),
    (errors.Busy("another hub-test runs"), 75, "hub-test: busy: another hub-test runs"),
    (errors.Failed("the source /home does not exist"), 1,
     "hub-test: error: the source /home does not exist"),
    (PermissionError(13, "Permission denied", "/etc/shadow"), 1,
     "hub-test: error: Permission denied: /etc/shadow"),
    (RuntimeError("surprise\nsecond line"), 1, "hub-test: error: RuntimeError: surprise"),
])  # fmt: skip
def test_each_error_is_its_code_and_one_line(capfd, raised, code, line):
    assert run_main(*command(raised), []) == code
    assert capfd.readouterr().err == line + "\n"


def test_an_unforeseen_error_shows_its_traceback_only_at_debug_level(capfd):
    assert run_main(*command(RuntimeError("surprise")), ["--log-level", "debug"]) == 1
    err = capfd.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.endswith("RuntimeError: surprise\nhub-test: error: RuntimeError: surprise\n")


def test_a_usage_error_is_2_and_ctrl_c_130(capfd):
    parser, dispatch = command(KeyboardInterrupt())
    with pytest.raises(SystemExit) as usage:
        run_main(parser, dispatch, ["--no-such-flag"])
    assert usage.value.code == 2
    assert capfd.readouterr().err.count("\n") == 1
    assert run_main(parser, dispatch, []) == 130
    assert capfd.readouterr().err == ""
