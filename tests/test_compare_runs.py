"""python -m eisam.report compare: a few run folders side by side, each paired by user with the first."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from scipy import stats
from test_report import N_USERS, fake_run

from eisam.report.compare import compare


def test_each_run_is_paired_by_user_with_the_reference(tmp_path):
    reference = fake_run(tmp_path / "a", method="base")
    other = fake_run(tmp_path / "b", method="sam", ranks=np.r_[np.zeros(10, int), np.full(N_USERS - 10, -1)])
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["selection"] = {"best_val_nll": 1.23456}  # a validated checkpoint; the reference has none
    (other / "metrics.json").write_text(json.dumps(metrics))

    half = N_USERS // 2
    for run, lists in ((reference, ["1 2 3 4 5 6 7 8 9 10"] * N_USERS),  # the other run: same lists for half the
                       (other, ["1 2 3 4 5 6 7 8 9 10"] * half + ["5 4 3 2 1 11 12 13 14 15"] * (N_USERS - half))):
        predictions = pd.read_csv(run / "predictions.csv")  # users, half sharing 5 of 10 items in another order
        predictions["recommended"] = lists
        predictions.to_csv(run / "predictions.csv", index=False)

    rows = compare([reference, other], ["all-layers", "top-2"]).splitlines()
    ref_row, other_row = (next(r for r in rows if r.startswith(f"| {label} |")) for label in ("all-layers", "top-2"))
    assert ref_row.split(" | ")[3] == "-" and other_row.split(" | ")[3] == "1.2346"
    assert ref_row.count("(reference)") == 3
    overlap = (half * 1.0 + (N_USERS - half) * 0.5) / N_USERS
    last_cell = other_row.split(" | ")[-1]
    assert last_cell.startswith(f"{overlap:.2f} [") and last_cell.endswith(f"identical {half / N_USERS:.0%} |")

    a, b = (pd.read_csv(run / "predictions.csv") for run in (reference, other))
    nll = stats.ttest_rel(b.nll, a.nll)
    lo, hi = nll.confidence_interval()
    diff = (b.nll - a.nll).mean()
    assert f"{diff:+.3f} [{lo:+.3f}, {hi:+.3f}], p = {nll.pvalue:.2g}" in other_row
    assert f"{N_USERS} test users (paired by user id)" in rows[-1]
