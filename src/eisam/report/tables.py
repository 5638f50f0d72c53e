"""The report's tables (a frame for CSV, a shown frame for Markdown): accuracy, long-tail
indicators, paired comparisons against reference methods (``base`` and ``sam`` unless told), and
cost per training step."""

from __future__ import annotations

import numpy as np
import pandas as pd

from eisam.report.runs import ACCURACY, GROUPS, IN_HISTORY, K, LONGTAIL, PAIRED, PER_USER, RECIPROCAL, of_group
from eisam.report.stats import ALPHA, POWER, RESAMPLES, bootstrap_ci, holm, min_detectable_difference, paired_t

REFERENCES = ("base", "sam", "mostpop")  # every method is compared with each of these (mostpop: the floor)
COMPARED = (f"ndcg@{K}", "nll", "rr")  # per-user scores of the paired tests (rr where exact ranks exist)
LABELS = {f"hr@{K}": f"HR@{K}", f"ndcg@{K}": f"NDCG@{K}", "nll": "NLL", "rr": "MRR"}


def accuracy_metrics(users: pd.DataFrame) -> list[str]:
    """HR@10 and NDCG@10 per group, and MRR per group where predictions.csv had exact ranks."""
    return ACCURACY + (RECIPROCAL if users.rr.notna().any() else [])


def user_scores(users: pd.DataFrame, runs, metric: str) -> np.ndarray:
    """users x runs matrix of the per-user score behind ``metric`` (e.g. 'tail/ndcg@10'), NaN where
    a user was not evaluated in a run: the input of `bootstrap_ci`."""
    group, name = metric.split("/")
    chosen = of_group(users[users.run.isin(list(runs))], group)
    return chosen.pivot(index="user", columns="run", values=name).to_numpy(dtype=float)


def over_seeds(runs: pd.DataFrame, users: pd.DataFrame, columns: list[str], metrics: list[str]):
    """(group, row) per setting; row: the setting, its number of seeds, the mean and std over seeds
    of each test metric and, for a per-user one, the bootstrap interval over users (_lo, _hi)."""
    for setting, group in runs.groupby(columns, dropna=False, sort=False):
        row = {**dict(zip(columns, setting)), "seeds": len(group)}
        for metric in metrics:
            values = group[f"test/{metric}"].astype(float)
            row[f"{metric}_mean"], row[f"{metric}_std"] = values.mean(), values.std()
            if metric.split("/")[-1] in PER_USER:
                row[f"{metric}_lo"], row[f"{metric}_hi"] = bootstrap_ci(user_scores(users, group.run, metric))
        yield group, row


def tail_gain(group: pd.DataFrame, runs: pd.DataFrame) -> float:
    """Relative tail NDCG@10 change over the base runs with the same dataset, model, subsampling and seeds."""
    base = runs[runs.method == "base"]
    pairs = group[PAIRED + ["run"]].map(str).merge(base[PAIRED + ["run"]].map(str), on=PAIRED, suffixes=("", "_base"))
    if pairs.empty or (group.method == "base").all():
        return np.nan
    tail = f"test/tail/ndcg@{K}"
    base_tail = base.loc[base.run.isin(pairs.run_base), tail].mean()
    return group.loc[group.run.isin(pairs.run), tail].mean() / base_tail - 1 if base_tail > 0 else np.nan


def accuracy_table(runs: pd.DataFrame, users: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per setting: seeds, test HR@10, NDCG@10 (and MRR) overall, head and tail (mean, std over
    seeds, 95 % interval), the tail gain over base, and the largest count of test targets that sat in
    the prompt history."""
    return pd.DataFrame([{**row, "tail_gain_vs_base": tail_gain(group, runs),
                          "test_targets_in_history": group[IN_HISTORY].max()}
                         for group, row in over_seeds(runs, users, columns, accuracy_metrics(users))])


def longtail_table(runs: pd.DataFrame, users: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per setting: seeds and the LONGTAIL indicators (mean, std over seeds; interval for NLL)."""
    return pd.DataFrame([row for _, row in over_seeds(runs, users, columns, LONGTAIL)])


def comparison_table(runs: pd.DataFrame, users: pd.DataFrame, columns: list[str],
                     references=REFERENCES) -> pd.DataFrame:
    """One row per setting, reference (default base, sam), users (overall, head, tail) and per-user score:
    the paired difference (setting minus reference; users matched by id within dataset and seed,
    averaged over seeds), its t interval, p, Holm's p over the table's settings, the minimum
    detectable difference at 80 % power, the number of users and of paired seeds, and the mean
    difference within each seed (``by_seed``, {seed: difference}): the t interval holds the trained
    models fixed, so whether the seeds agree is the only view of run-to-run variation it leaves."""
    scores = users.set_index(["run", "user"])
    compared = [m for m in COMPARED if users[m].notna().any()]
    rows = []
    for reference in references:
        ref = runs[runs.method == reference]
        for setting, group in runs.groupby(columns, dropna=False, sort=False):
            pairs = group[PAIRED + ["run"]].map(str).merge(ref[PAIRED + ["run"]].map(str), on=PAIRED,
                                                           suffixes=("", "_ref"))
            if pairs.empty or (group.method == reference).all():
                continue
            joined = [scores.loc[run].join(scores.loc[run_ref], how="inner", rsuffix="_ref")
                      for run, run_ref in zip(pairs.run, pairs.run_ref)]
            for who in GROUPS:
                for metric in compared:
                    diff = pd.concat([j[metric] - j[f"{metric}_ref"] for j in (of_group(j, who) for j in joined)], axis=1)
                    test = paired_t(diff.to_numpy(dtype=float))
                    by_seed = dict(sorted((int(seed), round(float(d), 6)) for seed, d in zip(pairs.seed, diff.mean(axis=0))))
                    rows.append({**dict(zip(columns, setting)), "vs": reference, "users": who, "metric": metric,
                                 "seeds": len(pairs), **test, "by_seed": by_seed,
                                 "mdd": min_detectable_difference(test["sd"], test["n_users"])})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_holm"] = table.groupby(["vs", "users", "metric"]).p.transform(holm)
    return table


def efficiency_table(runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per setting: seconds per training step (mean, std over runs), forward and backward passes per
    step, and peak memory (CUDA allocator peak on GPU, resident set on CPU)."""
    steps = runs["cost/train_steps"].astype(float).where(lambda s: s > 0)
    per_step = runs.assign(forward=runs["cost/forward_passes"] / steps, backward=runs["cost/backward_passes"] / steps)
    return per_step.groupby(columns, dropna=False, sort=False).agg(
        runs=("run", "size"), seconds_per_step_mean=("cost/seconds_per_step", "mean"),
        seconds_per_step_std=("cost/seconds_per_step", "std"), forward_per_step=("forward", "mean"),
        backward_per_step=("backward", "mean"), peak_memory_mb=("cost/peak_memory_mb", "mean"),
    ).reset_index()


def _number(value, fmt: str = "{:.4f}") -> str:
    return "" if value is None or pd.isna(value) else fmt.format(value)


def _mean_std(mean, std) -> str:
    return _number(mean) + ("" if pd.isna(std) else f" ± {std:.4f}")


def interval(mean, lo, hi, digits: int = 4) -> str:
    """mean [lo, hi] to ``digits`` decimals: the mean alone where there is no interval, '' without a mean."""
    return _number(mean, f"{{:.{digits}f}}") + ("" if pd.isna(lo) else f" [{lo:.{digits}f}, {hi:.{digits}f}]")


def difference(test: dict, digits: int = 4) -> str:
    """A paired difference (`paired_t`'s result) signed, with its t interval and p."""
    return f"{test['diff']:+.{digits}f} [{test['lo']:+.{digits}f}, {test['hi']:+.{digits}f}], p = {test['p']:.2g}"


def markdown(table: pd.DataFrame, align_right=()) -> str:
    """The table in Markdown, empty cells for NaN; the columns named in ``align_right`` right-aligned."""
    cells = table.astype(object).where(table.notna(), "").astype(str)
    lines = ["| " + " | ".join(cells.columns) + " |",
             "|" + "".join(" ---: |" if column in align_right else " --- |" for column in cells.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]) + "\n"


def label(metric: str) -> str:
    group, _, name = metric.rpartition("/")
    return " ".join(filter(None, (group, LABELS.get(name, name))))


def show_over_seeds(table: pd.DataFrame, columns: list[str], metrics: list[str]) -> pd.DataFrame:
    """Per metric one cell: mean [95 % interval] where users give one, else mean ± std over seeds."""
    shown = table[columns + ["seeds"]].copy()
    missing = pd.Series(np.nan, index=table.index)
    for metric in metrics:
        lo, hi = table.get(f"{metric}_lo", missing), table.get(f"{metric}_hi", missing)
        shown[label(metric)] = [interval(m, low, high) if pd.notna(low) else _mean_std(m, s) for m, s, low, high
                                in zip(table[f"{metric}_mean"], table[f"{metric}_std"], lo, hi)]
    return shown


def show_accuracy(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    metrics = [m for m in ACCURACY + RECIPROCAL if f"{m}_mean" in table]
    shown = show_over_seeds(table, columns, metrics)
    in_history = table.test_targets_in_history.fillna(0)
    shown["dataset"] = [f"{d} ({n:.0f} test targets in history)" if n else d for d, n in zip(shown.dataset, in_history)]
    shown["tail gain vs base"] = table.tail_gain_vs_base.map(lambda g: _number(g, "{:+.1%}"))
    return shown


def show_comparisons(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per setting, reference and users; per score: difference [interval], p (Holm's p), and
    where a comparison paired more than one seed, the difference within each seed."""
    keys = columns + ["vs", "users"]
    per_seed = [", ".join(f"s{seed} {d:+.4f}" for seed, d in by_seed.items() if pd.notna(d))  # mostpop: no NLL
                for by_seed in table.by_seed]
    wide = table.assign(cell=[interval(d, lo, hi) for d, lo, hi in zip(table["diff"], table.lo, table.hi)],
                        per_seed=per_seed,
                        test=[f"{_number(p, '{:.3g}')} ({_number(q, '{:.3g}')})" if pd.notna(p) else ""
                              for p, q in zip(table.p, table.p_holm)])
    shown = wide.drop_duplicates(keys)[keys + ["n_users", "seeds"]].reset_index(drop=True)
    for metric in dict.fromkeys(table.metric):
        one = wide[wide.metric == metric].set_index(keys)
        index = pd.MultiIndex.from_frame(shown[keys].astype(object))
        shown[f"Δ {LABELS[metric]}"] = one.cell.reindex(index).to_numpy()
        shown[f"p {LABELS[metric]} (Holm)"] = one.test.reindex(index).to_numpy()
        if (one.seeds > 1).any():
            shown[f"Δ {LABELS[metric]} per seed"] = one.per_seed.reindex(index).to_numpy()
    return shown.rename(columns={"n_users": "users paired"})


def detectable_note(table: pd.DataFrame, columns: list[str]) -> str:
    """The minimum detectable differences of tail NDCG@10 and tail NLL, one line per reference."""
    if table.empty:
        return ""
    lines = []
    for reference in table.vs.unique():
        for metric in (f"ndcg@{K}", "nll"):
            rows = table[(table.vs == reference) & (table.users == "tail") & (table.metric == metric)
                         & table.mdd.notna()]
            if len(rows):
                who = [" ".join(str(r[c]) for c in columns if c != "dataset" and pd.notna(r[c]))
                       + (f" ({r['dataset']})" if table.dataset.nunique() > 1 else "") for _, r in rows.iterrows()]
                lines.append(f"- tail {LABELS[metric]} vs `{reference}`: " + ", ".join(
                    f"{w} {m:.4f} (n = {n})" if m > 0 else f"{w} not estimable: every user's difference is 0 (n = {n})"
                    for w, m, n in zip(who, rows.mdd, rows.n_users)))
    if not lines:
        return ""
    return (f"Minimum detectable difference at {POWER:.0%} power (paired t-test, two-sided α = {ALPHA}), from the "
            "observed std of the per-user differences on tail-target users; a true difference smaller than "
            "this would usually go unseen:\n\n" + "\n".join(lines) + "\n")


def show_efficiency(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    shown = table[columns + ["runs"]].copy()
    shown["s / step"] = [_mean_std(m, s) for m, s in zip(table.seconds_per_step_mean, table.seconds_per_step_std)]
    shown["forward / step"] = table.forward_per_step.map(lambda v: _number(v, "{:.2f}"))
    shown["backward / step"] = table.backward_per_step.map(lambda v: _number(v, "{:.2f}"))
    shown["peak memory (MiB)"] = table.peak_memory_mb.map(lambda v: _number(v, "{:.0f}"))
    return shown


def numerics_note(runs: pd.DataFrame) -> str:
    """Whether the runs that the comparisons pair share their arithmetic (torch, device kernels,
    threads; metrics.json ``run.numerics``, absent in older runs). Runs paired across numerics differ by
    more than their method, if only slightly: on these CPUs another instruction set moved a rerun by
    about 1e-5 nats of test NLL (docs/reliability.md, "Across machines")."""
    numerics = runs.numerics if "numerics" in runs else pd.Series(np.nan, runs.index, dtype=object)
    known = numerics.dropna()
    if known.empty:
        return "Numerics not recorded (runs older than the field).\n"
    unrecorded = f" Not recorded for {numerics.isna().sum()} run(s) (older than the field)." if numerics.isna().any() else ""
    if known.nunique() == 1:
        return f"Numerics of every run that records them: {known.iloc[0]}.{unrecorded}\n"
    mixed = [f"- {', '.join(f'{c} {v}' for c, v in zip(PAIRED, key) if v != 'None')}: "
             + "; ".join(f"{row.method}: {numerics[row.Index]}" for row in group.itertuples() if pd.notna(numerics[row.Index]))
             for key, group in runs.groupby(runs[PAIRED].map(str).apply(tuple, axis=1), sort=True)
             if known.reindex(group.index).nunique() > 1]
    if not mixed:
        return "Numerics: paired runs share theirs; unpaired runs differ (runs.csv)." + unrecorded + "\n"
    return ("**Paired runs with different numerics** (torch, device kernels, threads): their differences mix the "
            "method with the machine." + unrecorded + "\n\n" + "\n".join(mixed) + "\n")


def missing_section(runs: pd.DataFrame) -> str:
    missing = runs[runs.status == "missing"]
    lines = [f"- `{row.run}` ({row.method}, {row.dataset}, seed {row.seed}): {row.reason}" for row in missing.itertuples()]
    return "## Missing runs\n\n" + ("\n".join(lines) if lines else "None: every run finished.") + "\n"


CELLS = (f"Test users. Each cell: mean over seeds and, in brackets, its 95 % percentile bootstrap interval "
         f"over users ({RESAMPLES} resamples; a user's seeds are resampled together); `mean ± std over seeds` for "
         f"tail share and coverage, which pool the recommended lists instead of averaging users.")
NOTES = (f"head/tail: users whose target is a head/tail item (top 20 % of items by training-target count). "
         f"MRR (where predictions.csv has the exact rank): mean reciprocal rank of the target, 0 beyond the "
         f"search's cap. Tail gain: relative change of tail NDCG@{K} over `base` with the same dataset, model, "
         f"subsampling and seeds. A dataset shows how many test targets sat in the prompt history when any did. "
         f"Paired tests: next section.")
COMPARISON_NOTES = (f"Each setting minus each reference method (same dataset, model, subsampling and seed; "
                    f"users matched by id), per-user NDCG@{K}, target NLL (lower is better) and reciprocal rank "
                    f"where exact ranks exist; each user's difference is averaged over the paired seeds. Δ: mean "
                    f"difference [95 % t interval]; p: two-sided paired t-test; Holm: adjusted over the table's "
                    f"settings for one reference, user group and score. Per seed: the mean difference within each paired "
                    f"seed; the interval holds each trained model fixed, so only the seeds' agreement shows how far a "
                    f"retrained model moves the difference.")
LONGTAIL_NOTES = (f"NLL: mean token negative log-likelihood of the target item's title given the prompt (teacher "
                  f"forced; lower is better; `mostpop` has no model, so none). tail_share@{K}: fraction of "
                  f"recommended items (top {K}) that are tail items. coverage@{K}: fraction of the catalogue "
                  f"recommended to at least one user.")
