"""python -m eisam.report: one command per report. --help lists them, an unknown command is refused with
the list of commands, each command has its own options, and a wrong argument is a usage error."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from eisam.report.cli import COMMANDS, main

LISTED = ["tables", "collect", "longtail", "prior-check", "base-search", "compare", "decoders", "rerun", "plan"]


def test_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "eisam.report", "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    listed = re.findall(r"^ {4}(\S+)(?: {2,}\S|$)", done.stdout, flags=re.MULTILINE)  # a long name: help below
    assert set(LISTED) <= set(listed) and set(listed) == set(COMMANDS)


@pytest.mark.parametrize("argv", [["frobnicate"], ["outputs/main/multiruns/reproduce_cpu"], []])
def test_an_unknown_or_missing_command_is_a_usage_error_naming_the_commands(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    error = capsys.readouterr().err
    assert exit.value.code == 2 and "usage: python -m eisam.report" in error
    if argv:
        assert f"invalid choice: '{argv[0]}'" in error and all(command in error for command in LISTED)
    else:
        assert "required: COMMAND" in error


@pytest.mark.parametrize("command", LISTED)
def test_each_command_has_its_own_options(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    usage = capsys.readouterr().out.splitlines()[0]
    assert usage.startswith("usage: python -m eisam.report") and command in usage


def test_an_argument_a_command_refuses_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["compare", "--label", "unfinished", str(tmp_path)])
    error = capsys.readouterr().err
    assert exit.value.code == 2 and f"{tmp_path}: no metrics.json (not a finished run folder)" in error
    with pytest.raises(SystemExit) as exit:
        main(["plan", "--experiments", "main", "--mfu", "1.5"])
    assert exit.value.code == 2 and "1.5 is not a fraction in (0, 1]" in capsys.readouterr().err
