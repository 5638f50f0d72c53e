"""``python -m eisam.report COMMAND ...`` (or ``eisam-report COMMAND ...``): every report the project
builds from run folders, one command each; ``python -m eisam.report COMMAND --help`` gives its options."""

from __future__ import annotations

import argparse
import importlib
import sys

PROG = "python -m eisam.report"
# command -> (its module, what it does). A module names its options (add_arguments) and runs (run).
# A command's module is imported only when the command runs.
COMMANDS = {
    "tables": ("eisam.report.sweep", "the tables and figures of sweeps, with their statistics"),
    "collect": ("eisam.report.collect", "copies finished runs' report files into a results folder, without weights"),
    "longtail": ("eisam.longtail.report", "the long-tail study's quadrant tables and figures"),
    "prior-check": ("eisam.report.prior_check", "the prior instrument's sanity check on a dataset (base model only)"),
    "base-search": ("eisam.report.base_search", "the search for a base worth regularizing (validation runs)"),
    "compare": ("eisam.report.compare", "a few run folders side by side, each paired by user with the first"),
    "decoders": ("eisam.report.decoders", "a run's beam search against its exact re-evaluation, head and tail"),
    "rerun": ("eisam.report.rerun", "whether a rerun's runs.csv reproduces a committed one"),
    "plan": ("eisam.report.plan", "the paper-scale sweep on a Slurm cluster: jobs, FLOPs, GPU hours"),
}


def main(argv: list[str] | None = None):
    """Runs the command; returns what it returns (the files written, a table...)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog=PROG, description="The reports built from run folders, one command each.",
                                     epilog=f"{PROG} COMMAND --help: the options of a command.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, summary) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    command = parser.parse_args(argv[:1]).command
    module = importlib.import_module(COMMANDS[command][0])
    parser = argparse.ArgumentParser(prog=f"{PROG} {command}", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return module.run(args)
    except argparse.ArgumentTypeError as err:  # an argument that the command found wrong: a usage error
        parser.error(str(err))
