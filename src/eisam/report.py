"""The paper's tables and figures from run folders: ``python -m eisam.report SWEEP_DIR... [--out DIR]``.

Reads only the files that runs leave behind (metrics.json, predictions.csv, item_stats.csv,
config.yaml or .hydra/config.yaml), so a report can be rebuilt from copied folders. A run folder
without metrics.json did not finish: it is named under "Missing runs", never dropped silently.
When reruns give one setting and seed twice, the newest finished run counts (the other is
"superseded" in runs.csv).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from eisam.metrics.ranking import case_hit_ndcg
from eisam.run_files import ERROR, ITEM_STATS, METRICS, PREDICTIONS, RESOLVED_CONFIG

K = 10
ACCURACY = [f"{group}/{metric}@{K}" for group in ("overall", "head", "tail") for metric in ("hr", "ndcg")]
# Popularity-bias indicators steadier than hit rates on few users: the teacher-forced NLL of the
# target title per group, the tail share of the top-K lists and their catalogue coverage.
LONGTAIL = [f"{group}/nll" for group in ("overall", "head", "tail")] + [f"tail_share@{K}", f"coverage@{K}"]
COST = ["cost/seconds_per_step", "cost/train_steps", "cost/forward_passes", "cost/backward_passes",
        "cost/peak_memory_mb"]
# What tells two runs apart besides the seed. Tables show dataset and method, then each other
# column that varies and is not implied by those before it (the ablation's variant, sensitivity's
# rho and lam, GroupSAM's G), so the weights that a method implies do not clutter the main table.
SETTING = ["dataset", "method", "model", "variant", "weights", "alpha", "rho", "lam", "adaptive", "direction",
           "groups", "max_train_samples", "max_eval_users"]
PAIRED = ["dataset", "model", "max_train_samples", "max_eval_users", "seed"]  # shared by a run and its base run


def find_run_folders(paths) -> list[Path]:
    """Every run folder under ``paths``: it has Hydra's .hydra/config.yaml or a metrics.json."""
    found = set()
    for root in map(Path, paths):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder")
        found |= {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
        found |= {p.parent for p in root.rglob(METRICS)}
    return sorted(found, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))])  # job 2 < 10


def read_run(folder: Path) -> dict | None:
    """One row: the run's setting (from its config), its status and, if it finished, its metrics.
    None for a folder that is not a training run (e.g. a re-evaluation)."""
    config = next((folder / name for name in (RESOLVED_CONFIG, ".hydra/config.yaml") if (folder / name).exists()), None)
    cfg = yaml.safe_load(config.read_text()) if config else {}
    if "method" not in cfg:
        return None
    method, data = cfg["method"], cfg["data"]
    row = {"run": str(folder), "task": cfg.get("task_name"), "dataset": data["name"], "method": method["name"],
           "model": cfg["model"]["name"], "variant": cfg.get("variant"), "seed": cfg["seed"],
           **{key: method.get(key) for key in ("weights", "alpha", "rho", "lam", "adaptive", "direction")},
           "groups": method.get("groups") if method.get("kind") == "group" else None,
           "max_train_samples": data.get("max_train_samples"), "max_eval_users": data.get("max_eval_users")}
    metrics_file = folder / METRICS
    if not metrics_file.exists():
        error = folder / ERROR
        reason = (error.read_text().strip().splitlines() or ["failed"])[-1] if error.exists() \
            else "no metrics.json: unfinished or killed"
        return {**row, "status": "missing", "reason": reason, "time": folder.stat().st_mtime}
    metrics = json.loads(metrics_file.read_text())
    flat = pd.json_normalize({key: metrics[key] for key in ("test", "valid", "cost") if metrics.get(key)}, sep="/")
    return {**row, "status": "ok", "reason": "", "time": metrics_file.stat().st_mtime, **flat.iloc[0].to_dict()}


def load_runs(paths) -> pd.DataFrame:
    """All run folders under ``paths``, one row each, with ``status`` ok, missing or superseded."""
    rows = [row for folder in find_run_folders(paths) if (row := read_run(folder))]
    if not rows:
        raise SystemExit(f"no run folders under {', '.join(map(str, paths))}")
    runs = pd.DataFrame(rows).astype({"groups": "Int64"})
    for column in ["test/" + m for m in ACCURACY + LONGTAIL] + COST:
        if column not in runs:
            runs[column] = np.nan
    # Of runs with one setting and seed, keep the newest finished one (a failed retry never hides it).
    order = runs.assign(finished=runs.status == "ok").sort_values(["finished", "time"]).index
    key = runs.loc[order, SETTING + ["seed"]].map(str)  # str(None) == "None": unset values match too
    runs.loc[key.index[key.duplicated(keep="last")], "status"] = "superseded"
    return runs


def per_user(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluated user of each run: NDCG@10 from the saved rank, and the popularity decile
    (1 = least, 10 = most training targets) of the user's target item."""
    frames = []
    for run in runs.run:
        folder = Path(run)
        predictions = pd.read_csv(folder / PREDICTIONS, usecols=["user", "target", "rank"], dtype={"user": str})
        items = pd.read_csv(folder / ITEM_STATS, usecols=["item_idx", "n_train"])
        decile = pd.Series(pd.qcut(items.n_train.rank(method="first"), 10, labels=False) + 1,
                           index=items.item_idx.to_numpy())
        frames.append(pd.DataFrame({"run": run, "user": predictions.user,
                                    "ndcg": case_hit_ndcg(predictions["rank"], K)[1],
                                    "decile": decile.loc[predictions.target].to_numpy()}))
    return pd.concat(frames, ignore_index=True)


def setting_columns(runs: pd.DataFrame) -> list[str]:
    """dataset, method, then the SETTING columns that vary and are not implied by the ones kept."""
    columns = ["dataset", "method"]
    for column in SETTING[2:]:
        spread = runs[column].map(str).groupby([runs[c].map(str) for c in columns]).nunique()
        if spread.max() > 1:
            columns.append(column)
    return columns


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; 1.0 when none differs (the
    test is undefined then, and there is no evidence of a difference)."""
    return float(stats.wilcoxon(diff).pvalue) if np.any(diff) else 1.0


def versus_base(group: pd.DataFrame, runs: pd.DataFrame, users: pd.DataFrame) -> dict:
    """Relative tail NDCG@10 gain over the base runs with the same dataset, model, subsampling and
    seeds, and the paired test of per-user NDCG@10 (users matched by id within dataset and seed)."""
    base = runs[runs.method == "base"]
    pairs = group[PAIRED + ["run"]].map(str).merge(base[PAIRED + ["run"]].map(str), on=PAIRED, suffixes=("", "_base"))
    if pairs.empty or (group.method == "base").all():
        return {}
    scores = users.set_index(["run", "user"]).ndcg
    paired = [pd.concat([scores.loc[run], scores.loc[run_base]], axis=1, join="inner").to_numpy()
              for run, run_base in zip(pairs.run, pairs.run_base)]
    diff = np.concatenate([p[:, 0] - p[:, 1] for p in paired])
    tail = f"test/tail/ndcg@{K}"
    base_tail = base.loc[base.run.isin(pairs.run_base), tail].mean()
    gain = group.loc[group.run.isin(pairs.run), tail].mean() / base_tail - 1 if base_tail > 0 else np.nan
    return {"tail_gain_vs_base": gain, "p_vs_base": wilcoxon_p(diff), "n_pairs": len(diff)}


def over_seeds(runs: pd.DataFrame, columns: list[str], metrics: list[str]):
    """(group, row) per setting; row: the setting, its number of seeds, and the mean and std over
    seeds of each test metric."""
    for setting, group in runs.groupby(columns, dropna=False, sort=False):
        row = {**dict(zip(columns, setting)), "seeds": len(group)}
        for metric in metrics:
            values = group[f"test/{metric}"].astype(float)
            row[f"{metric}_mean"], row[f"{metric}_std"] = values.mean(), values.std()
        yield group, row


def accuracy_table(runs: pd.DataFrame, users: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per setting: seeds, mean and std over seeds of test HR@10 and NDCG@10 (overall, head, tail),
    and the comparison with base (`versus_base`)."""
    return pd.DataFrame([{**row, "tail_gain_vs_base": np.nan, "p_vs_base": np.nan, "n_pairs": 0,
                          **versus_base(group, runs, users)} for group, row in over_seeds(runs, columns, ACCURACY)])


def longtail_table(runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per setting: seeds, mean and std over seeds of the LONGTAIL indicators."""
    return pd.DataFrame([row for _, row in over_seeds(runs, columns, LONGTAIL)])


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


def markdown(table: pd.DataFrame) -> str:
    cells = table.astype(object).where(table.notna(), "").astype(str)
    lines = ["| " + " | ".join(cells.columns) + " |", "|" + " --- |" * len(cells.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]) + "\n"


def show_over_seeds(table: pd.DataFrame, columns: list[str], metrics: list[str]) -> pd.DataFrame:
    shown = table[columns + ["seeds"]].copy()
    for metric in metrics:
        label = metric.replace("/", " ").replace("hr@", "HR@").replace("ndcg@", "NDCG@").replace("nll", "NLL")
        shown[label] = [_mean_std(m, s) for m, s in zip(table[f"{metric}_mean"], table[f"{metric}_std"])]
    return shown


def show_accuracy(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    shown = show_over_seeds(table, columns, ACCURACY)
    shown["tail gain vs base"] = table.tail_gain_vs_base.map(lambda g: _number(g, "{:+.1%}"))
    shown["p vs base"] = table.p_vs_base.map(lambda p: _number(p, "{:.3g}"))
    return shown


def show_efficiency(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    shown = table[columns + ["runs"]].copy()
    shown["s / step"] = [_mean_std(m, s) for m, s in zip(table.seconds_per_step_mean, table.seconds_per_step_std)]
    shown["forward / step"] = table.forward_per_step.map(lambda v: _number(v, "{:.2f}"))
    shown["backward / step"] = table.backward_per_step.map(lambda v: _number(v, "{:.2f}"))
    shown["peak memory (MiB)"] = table.peak_memory_mb.map(lambda v: _number(v, "{:.0f}"))
    return shown


def missing_section(runs: pd.DataFrame) -> str:
    missing = runs[runs.status == "missing"]
    lines = [f"- `{row.run}` ({row.method}, {row.dataset}, seed {row.seed}): {row.reason}" for row in missing.itertuples()]
    return "## Missing runs\n\n" + ("\n".join(lines) if lines else "None: every run finished.") + "\n"


LONGTAIL_NOTES = (f"Test users; mean ± std over seeds. NLL: mean token negative log-likelihood of the target "
                  f"item's title given the prompt (teacher forced; lower is better; `mostpop` has no model, "
                  f"so none). tail_share@{K}: fraction of recommended items (top {K}) that are tail items. "
                  f"coverage@{K}: fraction of the catalogue recommended to at least one user.")
NOTES = (f"Test users; mean ± std over seeds. head/tail: users whose target is a head/tail item (top 20 % of "
         f"items by training-target count). Tail gain: relative change of tail NDCG@{K} over `base` with the "
         f"same dataset, model, subsampling and seeds. p: two-sided Wilcoxon signed-rank test of per-user "
         f"NDCG@{K} against `base`, users paired by id within dataset and seed.")


def build_report(paths, out: Path | None = None, only: str | None = None) -> tuple[pd.DataFrame, Path]:
    """Writes runs.csv, missing.md and, unless ``only`` says otherwise, the tables (accuracy,
    longtail, efficiency; Markdown and CSV, gathered in report.md) and the figures into ``out`` (default:
    outputs/report/<task name of the runs>). Returns the runs and ``out``."""
    from eisam.report_figures import draw_figures

    runs = load_runs(paths)
    out = out or Path("outputs/report") / "-".join(sorted(runs.task.map(str).unique()))
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "runs.csv", index=False)
    (out / "missing.md").write_text(missing_section(runs))
    done = runs[runs.status == "ok"].reset_index(drop=True)
    if done.empty:
        return runs, out
    columns = setting_columns(done)
    users = per_user(done)
    if only != "tables":
        draw_figures(done, users, columns, out)
    if only != "figures":
        shown = {}
        for name, table, show in (("accuracy", accuracy_table(done, users, columns), show_accuracy),
                                  ("longtail", longtail_table(done, columns),
                                   lambda t, c: show_over_seeds(t, c, LONGTAIL)),
                                  ("efficiency", efficiency_table(done, columns), show_efficiency)):
            table.to_csv(out / f"{name}.csv", index=False)
            shown[name] = markdown(show(table, columns))
            (out / f"{name}.md").write_text(shown[name])
        figures = "\n".join(f"![{f.stem}]({f.name})" for f in sorted(out.glob("*.png")))
        (out / "report.md").write_text("\n".join([
            f"# Report: {', '.join(map(str, done.task.unique()))}\n",
            f"{len(done)} finished runs, {(runs.status == 'missing').sum()} missing, "
            f"{(runs.status == 'superseded').sum()} superseded (runs.csv lists every run folder).\n",
            missing_section(runs),
            f"## Accuracy (HR@{K}, NDCG@{K})\n\n{NOTES}\n\n{shown['accuracy']}",
            f"## Long-tail indicators (NLL, tail share, coverage)\n\n{LONGTAIL_NOTES}\n\n{shown['longtail']}",
            f"## Cost per training step\n\n{shown['efficiency']}",
            f"## Figures\n\n{figures}\n",
        ]))
    return runs, out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="sweep folders (or run folders, or their parents)")
    parser.add_argument("--out", type=Path, help="default: outputs/report/<task name of the runs>")
    parser.add_argument("--only", choices=("tables", "figures"), help="write only the tables or only the figures")
    args = parser.parse_args(argv)
    runs, out = build_report(args.paths, args.out, args.only)
    counts = runs.status.value_counts()
    print(f"report: {out} ({counts.get('ok', 0)} runs, {counts.get('missing', 0)} missing, "
          f"{counts.get('superseded', 0)} superseded)")
    for row in runs[runs.status == "missing"].itertuples():
        print(f"missing: {row.run}: {row.reason}")


if __name__ == "__main__":
    main()
