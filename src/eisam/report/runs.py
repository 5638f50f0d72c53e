"""Reading run folders: only the files that runs leave behind (metrics.json, predictions.csv,
item_stats.csv, config.yaml or .hydra/config.yaml), so a report can be rebuilt from copied folders.

A run folder without metrics.json did not finish: it is named under "Missing runs", never dropped
silently. When reruns give one setting and seed twice, the newest finished run counts (the other is
"superseded" in runs.csv).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from eisam.data.item_stats import PRIOR_GROUP, PRIOR_SCORE, ItemStats
from eisam.metric_keys import K
from eisam.metrics.ranking import case_hit_ndcg, target_ranks
from eisam.models.precision import configured_compute_dtype
from eisam.run_files import ERROR, ITEM_STATS, METRICS, PREDICTIONS, RESOLVED_CONFIG

log = logging.getLogger(__name__)

GROUPS = ("overall", "head", "tail")
ACCURACY = [f"{group}/{metric}@{K}" for group in GROUPS for metric in ("hr", "ndcg")]
# Reciprocal rank of the target, where predictions.csv has the exact rank (exact_rank: 1-based, -1
# beyond the search's cap, which counts as 0).
RECIPROCAL = [f"{group}/rr" for group in GROUPS]
# Popularity-bias indicators steadier than hit rates on few users: the teacher-forced NLL of the
# target title per group, the tail share of the top-K lists and their catalogue coverage.
LONGTAIL = [f"{group}/nll" for group in GROUPS] + [f"tail_share@{K}", f"coverage@{K}"]
PER_USER = (f"hr@{K}", f"ndcg@{K}", "nll", "rr")  # the per-user scores of `per_user`
COST = ["cost/seconds_per_step", "cost/train_steps", "cost/forward_passes", "cost/backward_passes",
        "cost/peak_memory_mb"]
IN_HISTORY = "data/test_targets_in_history"  # test targets that also sit in the user's prompt history
# What tells two runs apart besides the seed. Tables show dataset and method, then each other
# column that varies and is not implied by those before it (the ablation's variant, sensitivity's
# rho and lam, GroupSAM's G), so the weights that a method implies do not clutter the main table.
SETTING = ["dataset", "method", "model", "compute_dtype", "variant", "weights", "alpha", "rho", "lam", "adaptive",
           "direction", "replay_rng", "groups", "max_train_samples", "max_eval_users"]
# Shared by a run and its base run (a precision moves every method alike: docs/results/precision).
PAIRED = ["dataset", "model", "compute_dtype", "max_train_samples", "max_eval_users", "seed"]


def find_run_folders(paths) -> list[Path]:
    """Every run folder under ``paths``: it has Hydra's .hydra/config.yaml or a metrics.json."""
    found = set()
    for root in map(Path, paths):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder")
        found |= {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
        found |= {p.parent for p in root.rglob(METRICS)}
    # job 2 before job 10; where numbers tie (lr=0.01 and lr=0.001 both read 1), the text decides
    return sorted(found, key=lambda p: ([int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))], str(p)))


def config_file(folder: Path) -> Path | None:
    """A run's config: its resolved config.yaml, else Hydra's .hydra/config.yaml (None: neither)."""
    return next((folder / name for name in (RESOLVED_CONFIG, ".hydra/config.yaml") if (folder / name).exists()), None)


def read_run(folder: Path) -> dict | None:
    """One row: the run's setting (from its config), its status and, if it finished, its metrics.
    None for a folder that is not a training run (e.g. a re-evaluation)."""
    config = config_file(folder)
    cfg = yaml.safe_load(config.read_text()) if config else {}
    if "method" not in cfg:
        return None
    method, data = cfg["method"], cfg["data"]
    row = {"run": str(folder), "task": cfg.get("task_name"), "dataset": data["name"], "method": method["name"],
           "model": cfg["model"]["name"], "compute_dtype": configured_compute_dtype(cfg["model"]),
           "variant": cfg.get("variant"), "seed": cfg["seed"],
           **{key: method.get(key) for key in ("weights", "alpha", "rho", "lam", "adaptive", "direction")},
           "replay_rng": method.get("replay_rng", False),  # a run older than the key did not replay (docs/method.md)
           "groups": method.get("groups") if method.get("kind") == "group" else None,
           "max_train_samples": data.get("max_train_samples"), "max_eval_users": data.get("max_eval_users")}
    metrics_file = folder / METRICS
    if not metrics_file.exists():
        error = folder / ERROR
        reason = (error.read_text().strip().splitlines() or ["failed"])[-1] if error.exists() \
            else "no metrics.json: unfinished or killed"
        return {**row, "status": "missing", "reason": reason, "time": folder.stat().st_mtime}
    metrics = read_metrics(folder)
    flat = pd.json_normalize({key: metrics[key] for key in ("test", "valid", "cost") if metrics.get(key)}, sep="/")
    in_history = (metrics.get("data") or {}).get(IN_HISTORY.split("/")[1])
    return {**row, "status": "ok", "reason": "", "time": metrics_file.stat().st_mtime, IN_HISTORY: in_history,
            "numerics": (metrics.get("run") or {}).get("numerics"),  # absent in runs older than the field
            "split": "test" if "test" in metrics else "valid",  # valid: a test=false (selection) run
            **flat.iloc[0].to_dict()}


def load_runs(paths) -> pd.DataFrame:
    """All run folders under ``paths``, one row each, with ``status`` ok, missing or superseded."""
    rows = [row for folder in find_run_folders(paths) if (row := read_run(folder))]
    if not rows:
        raise SystemExit(f"no run folders under {', '.join(map(str, paths))}")
    runs = pd.DataFrame(rows).astype({"groups": "Int64"})
    for column in ["test/" + m for m in ACCURACY + LONGTAIL] + COST + [IN_HISTORY]:
        if column not in runs:
            runs[column] = np.nan
    # Of runs with one setting and seed, keep the newest finished one (a failed retry never hides it).
    order = runs.assign(finished=runs.status == "ok").sort_values(["finished", "time"]).index
    key = runs.loc[order, SETTING + ["seed", "split"]].map(str)  # str(None) == "None": unset values match too
    runs.loc[key.index[key.duplicated(keep="last")], "status"] = "superseded"
    return runs


def read_metrics(folder: Path) -> dict:
    """A finished run's metrics.json."""
    path = Path(folder) / METRICS
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {METRICS} (not a finished run folder)")
    return json.loads(path.read_text())


def mostpop_ndcg(stats: ItemStats, targets) -> np.ndarray:
    """Per target, the NDCG@K of the run's `mostpop` list (the popularity floor, on the same users)."""
    popular = stats.most_popular(K)
    return case_hit_ndcg(target_ranks([popular] * len(targets), list(targets)), K)[1]


def read_predictions(folder: Path, columns=("target", "rank"), file: str = PREDICTIONS) -> pd.DataFrame:
    """A run's predictions.csv (or ``file``, e.g. valid_predictions.csv), one row per user (ids as text),
    checked to hold ``columns`` besides user; ``recommended``, where asked for, as lists of item indices,
    best first."""
    path = Path(folder) / file
    predictions = pd.read_csv(path, dtype={"user": str, "recommended": str})
    missing = [column for column in ("user", *columns) if column not in predictions]
    if missing:
        raise KeyError(f"{path}: no column(s) {missing} (expected {', '.join(('user', *columns))})")
    if predictions.user.duplicated().any():
        raise ValueError(f"{path}: user {predictions.user[predictions.user.duplicated()].iloc[0]!r} "
                         "has two rows; the report pairs runs user by user, one test case per user")
    if "recommended" in columns:
        predictions["recommended"] = [[int(item) for item in items.split()]
                                      for items in predictions.recommended.fillna("")]
    return predictions


def per_user(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluated user of each run: the user's target group (head/tail) and its training
    count n_train, and the per-user scores HR@10, NDCG@10 (from the saved rank), the target NLL
    (NaN for a run without a model) and, where predictions.csv has exact_rank, the reciprocal rank."""
    frames = []
    for run in runs.run:
        folder = Path(run)
        predictions = read_predictions(folder)
        items = pd.read_csv(folder / ITEM_STATS, usecols=["item_idx", "n_train", "group"]).set_index("item_idx")
        hit, ndcg = case_hit_ndcg(predictions["rank"], K)
        exact = predictions.get("exact_rank")
        frames.append(pd.DataFrame({
            "run": run, "user": predictions.user,
            "group": items.group.loc[predictions.target].to_numpy(),
            "n_train": items.n_train.loc[predictions.target].to_numpy(),
            f"hr@{K}": hit, f"ndcg@{K}": ndcg,
            "nll": predictions["nll"].astype(float) if "nll" in predictions else np.nan,
            "rr": np.nan if exact is None else np.where(exact >= 1, 1.0 / np.maximum(exact, 1), 0.0)}))
    return pd.concat(frames, ignore_index=True)


def of_group(users: pd.DataFrame, group: str) -> pd.DataFrame:
    """The rows of users whose target is in ``group`` (head, tail; overall: all)."""
    return users if group == "overall" else users[users.group == group]


def with_reciprocal_rank(runs: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with test/<group>/rr, each run's mean reciprocal rank (NaN without exact ranks)."""
    return runs.assign(**{f"test/{group}/rr": runs.run.map(of_group(users, group).groupby("run").rr.mean())
                          for group in GROUPS})


def setting_columns(runs: pd.DataFrame) -> list[str]:
    """dataset, method, then the SETTING columns that vary and are not implied by the ones kept."""
    columns = ["dataset", "method"]
    for column in SETTING[2:]:
        spread = runs[column].map(str).groupby([runs[c].map(str) for c in columns]).nunique()
        if spread.max() > 1:
            columns.append(column)
    return columns


@dataclass
class Run:
    """One finished run folder as the long-tail study reads it: metrics.json, predictions.csv, item table."""

    path: Path
    metrics: dict
    predictions: pd.DataFrame
    items: pd.DataFrame

    @property
    def key(self) -> tuple[str, str, str]:
        r = self.metrics["run"]
        return r["dataset"], r["model"], r["method"]

    @property
    def seed(self) -> int:
        return self.metrics["run"]["seed"]

    @property
    def has_prior(self) -> bool:
        return PRIOR_GROUP in self.items.columns and PRIOR_SCORE in self.items.columns


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    missing = [f for f in (METRICS, PREDICTIONS, ITEM_STATS) if not (run_dir / f).exists()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: missing {missing}; not a finished run folder")
    return Run(run_dir, json.loads((run_dir / METRICS).read_text()), pd.read_csv(run_dir / PREDICTIONS),
               ItemStats.load(run_dir / ITEM_STATS).table)


def counted_runs(paths) -> list[Path]:
    """The run folders under ``paths`` that the tables count: finished test runs, the newest of each
    setting and seed (a re-evaluation folder inside a run, a superseded rerun or a selection run is not one)."""
    runs = load_runs(paths)
    return [Path(run) for run in runs.run[(runs.status == "ok") & (runs.split == "test")]]


def borrow_prior(runs: list[Run]) -> list[Run]:
    """Runs without prior columns get them from a run of the same dataset and model that has them.

    The prior depends on (model, dataset) only, so any method's run can be placed in the quadrants
    once one run of that pair had ``analysis.prior.enabled=true``. Items are matched by item_id and
    their titles must agree; runs with no donor are left out with a warning.
    """
    donors = {}
    for r in runs:
        if r.has_prior:
            donors.setdefault((r.key[0], r.key[1]), r.items)
    out = []
    for r in runs:
        if r.has_prior:
            out.append(r)
            continue
        donor = donors.get((r.key[0], r.key[1]))
        if donor is None:
            log.warning("%s: no prior columns and no run of %s/%s with them; left out", r.path, *r.key[:2])
            continue
        merged = r.items.merge(donor[["item_id", "title", PRIOR_SCORE, PRIOR_GROUP]], on="item_id", how="left",
                               suffixes=("", "_donor"), validate="one_to_one")
        if merged[PRIOR_GROUP].isna().any() or (merged["title"] != merged["title_donor"]).any():
            log.warning("%s: catalogue differs from the prior donor's; left out", r.path)
            continue
        out.append(Run(r.path, r.metrics, r.predictions, merged.drop(columns="title_donor")))
    return out
