"""Long-tail study figures and tables from run folders (predictions.csv, item_stats.csv, metrics.json).

Everything is computed from the run's files with the same functions the run used
(``eisam.analysis.quadrants.quadrant_metrics``, hence ``eisam.metrics.ranking.hit_ndcg``), so a
table built here equals ``test.quadrants`` in the run's metrics.json. Figures are PNGs drawn on
matplotlib's Agg canvas (no display, no pyplot state).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from eisam.analysis.prior import PRIOR_GROUP, PRIOR_SCORE
from eisam.analysis.quadrants import CELLS, DATA_LEVELS, PRIOR_LEVELS, quadrant_metrics
from eisam.data.item_stats import ItemStats
from eisam.run_files import ITEM_STATS, METRICS, PREDICTIONS

log = logging.getLogger(__name__)


@dataclass
class Run:
    """One finished run folder: its metrics.json, predictions.csv and item table."""

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


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders (holding metrics.json) at or below each path, sorted; a multirun folder gives all its jobs."""
    found = set()
    for p in map(Path, paths):
        if (p / METRICS).exists():
            found.add(p)
        elif p.is_dir():
            found.update(m.parent for m in p.rglob(METRICS))
        else:
            raise FileNotFoundError(f"{p}: no such run folder")
    return sorted(found)


def borrow_prior(runs: Sequence[Run]) -> list[Run]:
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


def run_quadrants(run: Run, ks: Sequence[int] = (10,)) -> dict:
    """``quadrant_metrics`` of one run, from its predictions and item table."""
    return quadrant_metrics(run.predictions["rank"].to_numpy(), run.predictions["target"].to_numpy(), run.items, ks)


def quadrant_rows(runs: Sequence[Run], k: int = 10) -> pd.DataFrame:
    """One row per run and quadrant cell: dataset, model, method, seed, run, prior, data, hr@k, ndcg@k, n_users."""
    rows = []
    for r in runs:
        q = run_quadrants(r, (k,))
        for p, d in CELLS:
            rows.append({"dataset": r.key[0], "model": r.key[1], "method": r.key[2], "seed": r.seed,
                         "run": str(r.path), "prior": p, "data": d, f"hr@{k}": q[p][d][f"hr@{k}"],
                         f"ndcg@{k}": q[p][d][f"ndcg@{k}"], "n_users": q[p][d]["n_users"]})
    return pd.DataFrame(rows)


def quadrant_summary(rows: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """Mean and sample std over seeds of each cell's HR@k / NDCG@k; mean user count; number of runs."""
    keys = ["dataset", "model", "method", "prior", "data"]
    g = rows.groupby(keys, sort=True)
    out = g[[f"hr@{k}", f"ndcg@{k}"]].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["n_users"] = g["n_users"].mean()
    out["n_runs"] = g.size()
    return out.reset_index()


def item_hits(run: Run, k: int = 10) -> pd.DataFrame:
    """Per test-target item of a run: n_train, prior_score (if known), users, hits@k, hit_rate."""
    pred = run.predictions
    hit = ((pred["rank"] >= 1) & (pred["rank"] <= k)).astype(int)
    per = pd.DataFrame({"item_idx": pred["target"], "hit": hit}).groupby("item_idx")["hit"].agg(["size", "sum"])
    per = per.rename(columns={"size": "users", "sum": "hits"}).reset_index()
    cols = ["item_idx", "n_train"] + ([PRIOR_SCORE] if PRIOR_SCORE in run.items.columns else [])
    per = per.merge(run.items[cols], on="item_idx", how="left")
    per["hit_rate"] = per["hits"] / per["users"]
    return per


def frequency_edges(max_n: int) -> np.ndarray:
    """Bin edges 0, 1, 2, 4, 8, ... (left-closed): bins '0', '1', '2-3', '4-7', ... up to ``max_n``."""
    edges = [0, 1]
    while edges[-1] <= max_n:
        edges.append(edges[-1] * 2)
    return np.array(edges)


def _label(lo: int, hi: int) -> str:
    return str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}"


def binned_hit_rate(items: pd.DataFrame, by: str, edges: Sequence[float]) -> pd.DataFrame:
    """Mean per-item hit rate of the items whose ``by`` value lies in each bin [edge_i, edge_i+1)
    (the last bin is closed); also the bin's item and user counts and the mean ``by`` value."""
    edges = np.asarray(edges, dtype=float)
    idx = np.clip(np.searchsorted(edges, items[by].to_numpy(float), side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        sel = items[idx == b]
        rows.append({"bin": b, "lo": edges[b], "hi": edges[b + 1],
                     "x": float(sel[by].mean()) if len(sel) else np.nan,
                     "hit_rate": float(sel["hit_rate"].mean()) if len(sel) else np.nan,
                     "n_items": len(sel), "n_users": int(sel["users"].sum())})
    return pd.DataFrame(rows)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_quadrant_heatmap(runs: Sequence[Run], path: str | Path, metric: str = "ndcg@10",
                          title: str | None = None) -> Path:
    """2x2 heatmap (rows prior head/tail, columns data head/tail) of ``metric``, mean over ``runs``
    (the seeds of one method on one dataset); each cell shows the value and its mean user count."""
    k = int(metric.split("@")[1])
    values, users = np.full((2, 2), np.nan), np.zeros((2, 2))
    qs = [run_quadrants(r, (k,)) for r in runs]
    for i, p in enumerate(PRIOR_LEVELS):
        for j, d in enumerate(DATA_LEVELS):
            vals = [q[p][d][metric] for q in qs if q[p][d][metric] is not None]
            values[i, j] = np.mean(vals) if vals else np.nan
            users[i, j] = np.mean([q[p][d]["n_users"] for q in qs])
    fig = Figure(figsize=(4.2, 3.6))
    ax = fig.add_subplot()
    top = np.nanmax(values) if np.isfinite(values).any() else 0.0
    im = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=max(top, 1e-3))
    fig.colorbar(im, ax=ax, label=metric.upper())
    ax.set_xticks([0, 1], ["data head", "data tail"])
    ax.set_yticks([0, 1], ["prior head", "prior tail"])
    for i in range(2):
        for j in range(2):
            text = "n/a" if np.isnan(values[i, j]) else f"{values[i, j]:.3f}"
            ax.text(j, i, f"{text}\n(n={users[i, j]:.0f})", ha="center", va="center", color="w",
                    bbox={"facecolor": "black", "alpha": 0.35, "linewidth": 0})
    if title is None and runs:
        dataset, model, method = runs[0].key
        title = f"{method} on {dataset} ({model}, {len(runs)} run{'s' * (len(runs) > 1)})"
    ax.set_title(title or "", fontsize=9)
    return _save(fig, path)


def _pooled_items(runs: Sequence[Run], k: int) -> pd.DataFrame:
    return pd.concat([item_hits(r, k) for r in runs], ignore_index=True) if runs else pd.DataFrame()


def plot_hit_vs_frequency(runs_by_method: Mapping[str, Sequence[Run]], path: str | Path, k: int = 10,
                          title: str = "") -> Path:
    """Per-item HR@k (mean over target items in the bin, items pooled over seeds) against the item's
    training frequency n_train, in power-of-two bins; one line per method."""
    pooled = {m: _pooled_items(rs, k) for m, rs in runs_by_method.items()}
    max_n = max((int(t["n_train"].max()) for t in pooled.values() if len(t)), default=1)
    edges = frequency_edges(max_n)
    labels = [_label(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:])]
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    for method, items in pooled.items():
        if len(items):
            b = binned_hit_rate(items, "n_train", edges)
            ax.plot(b["bin"], b["hit_rate"], marker="o", label=method)
    ax.set_xticks(range(len(labels)), labels, rotation=45)
    ax.set_xlabel("training frequency n_train of the target item (bin)")
    ax.set_ylabel(f"per-item HR@{k}")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_hit_vs_prior(runs_by_method: Mapping[str, Sequence[Run]], path: str | Path, k: int = 10,
                      n_bins: int = 10, title: str = "") -> Path:
    """Per-item HR@k against the item's prior score, in ``n_bins`` quantile bins of the catalogue's
    prior scores (each bin holds 1/n_bins of the catalogue); one line per method, x = mean score in bin."""
    catalogue = next((r.items[PRIOR_SCORE] for rs in runs_by_method.values() for r in rs if r.has_prior), None)
    if catalogue is None:
        raise KeyError("no run has prior scores: run with analysis.prior.enabled=true")
    edges = np.unique(np.quantile(catalogue.to_numpy(float), np.linspace(0, 1, n_bins + 1)))
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    for method, runs in runs_by_method.items():
        items = _pooled_items([r for r in runs if r.has_prior], k)
        if len(items):
            b = binned_hit_rate(items, PRIOR_SCORE, edges)
            mid = (b["lo"] + b["hi"]) / 2
            ax.plot(mid, b["hit_rate"], marker="o", label=method)
    ax.set_xlabel("prior score of the target item (mean token log-likelihood; decile bins)")
    ax.set_ylabel(f"per-item HR@{k}")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)
