"""``python -m eisam.report collect SWEEP_DIR... --out DIR``: copies the files that the reports read from
every finished run (config, item statistics, per-user predictions and NLL, metrics.json) into DIR/<run
folder name>, leaving out adapters, checkpoints and logger files. This is how a results folder commits
its runs so that its tables rebuild without training. Unfinished and superseded runs are left out and
named. metrics.json is copied last, so an interrupted copy never looks like a finished run; collecting
again into DIR first removes a folder's old metrics.json and any file its run no longer has, so a
re-copy never mixes two versions of a run.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd

from eisam.report.runs import config_file, load_runs
from eisam.run_files import ITEM_STATS, METRICS, PREDICTIONS, RESOLVED_CONFIG, VALID_NLL, VALID_PREDICTIONS

# Copied when present, in this order: metrics.json, which marks a run as finished, comes last.
RUN_FILES = (ITEM_STATS, PREDICTIONS, VALID_PREDICTIONS, VALID_NLL, METRICS)


def collect_runs(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Copies each finished, not superseded run of ``runs`` (``load_runs``) into ``out``; returns the new
    folders. Raises before copying anything when two runs would land in one folder."""
    done = [Path(run) for run in runs.loc[runs.status == "ok", "run"]]
    names = [folder.name for folder in done]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise argparse.ArgumentTypeError(f"runs from different folders share the name {clashes[0]}; "
                                         "collect them into separate --out folders")
    copied = []
    for folder in done:
        target = out / folder.name
        target.mkdir(parents=True, exist_ok=True)
        (target / METRICS).unlink(missing_ok=True)
        shutil.copy2(config_file(folder), target / RESOLVED_CONFIG)
        for name in RUN_FILES:
            if (folder / name).exists():
                shutil.copy2(folder / name, target / name)
            else:
                (target / name).unlink(missing_ok=True)
        copied.append(target)
    return copied


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="sweep folders (or run folders, or their parents)")
    parser.add_argument("--out", type=Path, required=True, help="the results folder's runs/ folder")


def run(args: argparse.Namespace) -> list[Path]:
    runs = load_runs(args.paths)
    copied = collect_runs(runs, args.out)
    print(f"collect: {len(copied)} finished runs into {args.out}")
    for row in runs[runs.status != "ok"].itertuples():
        print(f"left out ({row.status}): {row.run}" + (f": {row.reason}" if row.reason else ""))
    return copied
