"""The hyperparameter selection table (``experiment=selection``): validation target NLL per setting.

Runs of ``test=false`` leave valid_nll.csv (each validation user's target NLL) instead of test
predictions. Per method, the setting with the lowest mean validation NLL is chosen; every other
setting gets its paired difference to the chosen one (users matched by id, averaged over seeds), so
a reader sees whether the choice is clear or a coin toss. Test data never enters this table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from eisam.report.runs import GROUPS, of_group
from eisam.report.stats import bootstrap_ci, paired_t
from eisam.report.tables import REFERENCES, interval
from eisam.run_files import VALID_NLL

BASE = REFERENCES[0]  # method=base: training without any perturbation


def valid_users(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per validation user of each run: run, user, group (the target's head/tail) and nll."""
    frames = []
    for run in runs.run:
        scores = pd.read_csv(Path(run) / VALID_NLL, dtype={"user": str})
        missing = {"user", "target_group", "nll"} - set(scores.columns)
        if missing:
            raise KeyError(f"{Path(run) / VALID_NLL}: no column(s) {sorted(missing)} (expected user, target_group, nll)")
        frames.append(scores.assign(run=run).rename(columns={"target_group": "group"}))
    return pd.concat(frames, ignore_index=True)


def _matrix(users: pd.DataFrame, runs) -> pd.DataFrame:
    """users x seeds of the runs' validation NLL (a setting's seeds are its columns)."""
    chosen = users[users.run.isin(list(runs.run))].merge(runs[["run", "seed"]], on="run")
    return chosen.pivot(index="user", columns="seed", values="nll")


def selection_table(runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per setting and user group (overall, head, tail): seeds, mean validation NLL with its
    95 % bootstrap interval, ``chosen`` (the method's lowest overall mean) and the paired differences
    to the chosen setting (diff_vs_chosen, its t interval _lo/_hi, p_vs_chosen; empty for the chosen one)
    and to method=base (the same, _vs_base; where a base run is among ``runs``)."""
    users = valid_users(runs)
    settings = dict(list(runs.sort_values(columns, kind="stable").groupby(columns, dropna=False, sort=False)))
    means = {setting: _matrix(users, group).mean().mean() for setting, group in settings.items()}
    method_at = columns.index("method")
    best = {}
    for setting, mean in means.items():
        method = setting[method_at]
        if method not in best or mean < means[best[method]]:
            best[method] = setting
    base = next((setting for setting in settings if setting[method_at] == BASE), None)
    rows = []
    for setting, group in settings.items():
        chosen = best[setting[method_at]]
        for who in GROUPS:
            members = of_group(users, who)
            own = _matrix(members, group)
            row = {**dict(zip(columns, setting)), "users": who, "seeds": len(group), "n_users": len(own),
                   "valid_nll": own.mean().mean(), "chosen": setting == chosen}
            row["lo"], row["hi"] = bootstrap_ci(own.to_numpy(dtype=float))
            if setting != chosen:
                row.update(_paired(own, _matrix(members, settings[chosen]), "vs_chosen"))
            if base and setting != base:
                row.update(_paired(own, _matrix(members, settings[base]), "vs_base"))
            rows.append(row)
    return pd.DataFrame(rows)


def _paired(own: pd.DataFrame, other: pd.DataFrame, name: str) -> dict:
    """diff_<name>, its 95 % t interval and p: per user, own minus other (users matched by id)."""
    test = paired_t(own.sub(other).to_numpy(dtype=float))
    return {f"diff_{name}": test["diff"], f"diff_{name}_lo": test["lo"], f"diff_{name}_hi": test["hi"],
            f"p_{name}": test["p"]}


def show_selection(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per setting: validation NLL [interval], and Δ [interval] (p) to the chosen setting and
    to base, per group."""
    settings = table.drop_duplicates(columns).reset_index(drop=True)
    shown = settings[columns + ["seeds", "n_users"]].astype({column: object for column in columns})
    shown.loc[shown.method == BASE, columns[2:]] = ""  # base perturbs nothing: its rho and lam mean nothing
    shown["chosen"] = [("reference" if method == BASE else "**chosen**") if chosen else ""
                       for method, chosen in zip(settings.method, settings.chosen)]
    for who in GROUPS:
        one = table[table.users == who].reset_index(drop=True)
        shown[f"{who} val NLL"] = [interval(m, lo, hi) for m, lo, hi in zip(one.valid_nll, one.lo, one.hi)]
        for name, label in (("vs_chosen", "Δ vs chosen"), ("vs_base", "Δ vs base")):
            if f"diff_{name}" in one:
                shown[f"{who} {label} (p)"] = [
                    f"{interval(d, lo, hi)} ({p:.3g})" if pd.notna(d) else ""
                    for d, lo, hi, p in zip(one[f"diff_{name}"], one[f"diff_{name}_lo"], one[f"diff_{name}_hi"],
                                            one[f"p_{name}"])]
    return shown.rename(columns={"n_users": "users"})


SELECTION_NOTES = ("Validation users only (test=false: the test split is not read). Each cell: mean target NLL "
                   "(teacher forced; lower is better) [95 % percentile bootstrap interval over users]. Per method the "
                   "setting with the lowest overall mean is chosen; Δ: a setting minus the chosen one, per user "
                   "(averaged over seeds) [95 % t interval] and the two-sided paired t-test's p; Δ vs base: the same "
                   "against method=base (where a base run is in the table: is any setting better than no "
                   "perturbation at all?). The main sweep uses the chosen values.")
