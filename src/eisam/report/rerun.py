"""Does a rerun reproduce a committed table? Compares two ``runs.csv`` files (written by
``python -m eisam.report tables``) on the runs they share: same task, dataset, method, model, seed and
method settings. For each shared run it prints the largest absolute difference over the test
metrics (``test/…``), where it is, and how many metrics differ by more than ``--tol``; the cost columns
(``cost/…``: wall-clock times, memory) are left out, since they measure the machine, not the model.

    python -m eisam.report rerun docs/results/archive/main_first_vm/runs.csv outputs/report/main/runs.csv

Exits 1 when a shared run differs by more than ``--tol`` or when no run is shared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from eisam.report.runs import SETTING as METHOD_SETTING
from eisam.report.tables import markdown

SETTING = ["task", *METHOD_SETTING, "seed"]  # what makes two rows of two runs.csv files the same run
# Setting columns added after runs.csv files were committed, with the value those earlier runs had.
LATER_COLUMNS = {"compute_dtype": "float32",  # the runs.csv files committed before the field: CPU runs in fp32
                 "replay_rng": False}  # and before the dropout replay (eisam.optim.sharpness._Perturbing)


def _finished(path: Path) -> pd.DataFrame:
    runs = pd.read_csv(path)
    runs = runs.assign(**{c: value for c, value in LATER_COLUMNS.items() if c not in runs.columns})
    missing = [column for column in ["run", "status", *SETTING] if column not in runs.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing}; "
                         "expected a runs.csv written by `python -m eisam.report tables`")
    return runs[runs["status"] == "ok"]


def _normal(value) -> str:
    """A setting's value as text that reads the same from either file (5000 and 5000.0; NaN and empty)."""
    if pd.isna(value):
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(number)) if number.is_integer() else repr(number)


def compare(reference: pd.DataFrame, rerun: pd.DataFrame, tol: float) -> tuple[pd.DataFrame, bool]:
    """One row per shared run: its setting, the largest |difference| over the test metrics and the
    metrics beyond ``tol``; and whether every shared run is within ``tol``."""
    metrics = [c for c in reference.columns if c.startswith("test/") and c in rerun.columns]
    keys = [c for c in SETTING if c in reference.columns]
    pairs = reference.assign(**{k: reference[k].map(_normal) for k in keys}).merge(
        rerun.assign(**{k: rerun[k].map(_normal) for k in keys}), on=keys, suffixes=("", "_rerun"))
    rows = []
    for _, pair in pairs.iterrows():
        diff = pd.Series({m: abs(float(pair[m]) - float(pair[f"{m}_rerun"])) for m in metrics}).dropna()
        rows.append({"method": pair["method"], "seed": pair["seed"], "metrics compared": len(diff),
                     f"beyond {tol:g}": int((diff > tol).sum()),
                     "max |difference|": diff.max() if len(diff) else float("nan"),
                     "largest in": diff.idxmax() if len(diff) else ""})
    table = pd.DataFrame(rows)
    return table, bool(len(table)) and (table[f"beyond {tol:g}"] == 0).all()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reference", type=Path, help="the committed runs.csv")
    parser.add_argument("rerun", type=Path, help="the rerun's runs.csv")
    parser.add_argument("--tol", type=float, default=0.0, help="largest absolute difference that counts as equal")


def run(args: argparse.Namespace) -> None:
    try:
        table, same = compare(_finished(args.reference), _finished(args.rerun), args.tol)
    except ValueError as err:
        sys.exit(str(err))
    if table.empty:
        sys.exit(f"{args.reference} and {args.rerun} share no finished run (same task, method, seed and settings)")
    print(markdown(table))
    if not same:
        sys.exit(1)
