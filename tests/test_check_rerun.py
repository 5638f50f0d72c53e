"""python -m eisam.report rerun: a rerun's runs.csv against the committed one, run by shared setting."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from eisam.report.rerun import compare

COMMAND = [sys.executable, "-m", "eisam.report", "rerun"]


def runs(folder: str, rows: list[tuple[str, int, float, float]]) -> pd.DataFrame:
    """runs.csv rows (method, seed, test NDCG@10, seconds per step), settings as the report writes them."""
    setting = {"task": "main", "dataset": "ml-100k", "model": "smollm2_135m", "variant": None, "weights": "uniform",
               "alpha": 0.5, "rho": 0.05, "lam": 1.0, "adaptive": False, "direction": "current", "groups": None,
               "max_train_samples": 5000, "max_eval_users": None, "status": "ok"}
    return pd.DataFrame([{"run": f"{folder}/{method}-{seed}", **setting, "method": method, "seed": seed,
                          "test/overall/ndcg@10": ndcg, "cost/seconds_per_step": seconds}
                         for method, seed, ndcg, seconds in rows])


def test_shared_runs_are_compared_on_test_metrics_only():
    reference = runs("old", [("base", 0, 0.0087, 0.86), ("sam", 0, 0.0095, 1.84)])
    rerun = runs("new", [("base", 0, 0.0087, 0.97), ("imbsam", 0, 0.0091, 2.10)])
    rerun["max_train_samples"] = rerun.max_train_samples.astype(float)  # 5000.0 where a column holds a NaN
    table, same = compare(reference, rerun, tol=0.0)
    assert same  # the cost column differs (0.86 vs 0.97 s/step), the test metric does not
    assert table[["method", "seed", "metrics compared", "beyond 0"]].values.tolist() == [["base", "0", 1, 0]]

    rerun.loc[0, "test/overall/ndcg@10"] = 0.0088
    table, same = compare(reference, rerun, tol=0.0)
    assert not same and table.loc[0, "beyond 0"] == 1 and table.loc[0, "largest in"] == "test/overall/ndcg@10"
    assert abs(table.loc[0, "max |difference|"] - 0.0001) < 1e-12
    assert compare(reference, rerun, tol=0.001)[1]


def test_no_shared_run_or_a_foreign_csv_is_an_error(tmp_path):
    runs("old", [("base", 0, 0.0087, 0.86)]).to_csv(tmp_path / "old.csv", index=False)
    runs("new", [("base", 1, 0.0087, 0.86)]).to_csv(tmp_path / "new.csv", index=False)
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "foreign.csv", index=False)
    done = subprocess.run([*COMMAND, str(tmp_path / "old.csv"), str(tmp_path / "new.csv")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "share no finished run" in done.stderr
    done = subprocess.run([*COMMAND, str(tmp_path / "old.csv"), str(tmp_path / "foreign.csv")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "foreign.csv: no column(s)" in done.stderr
