"""The long-tail study's tables and figures from finished run folders.

    python -m eisam.report longtail RUN_DIR... --out outputs/report/longtail_study

RUN_DIR may be a run folder or a (multi)run folder holding many. Writes, under --out:
``quadrants.md`` / ``quadrants.csv`` (mean and std over seeds, and 95 % bootstrap interval over
users, per dataset, model, method and quadrant), ``quadrants_runs.csv`` (one row per run and
quadrant), ``prior.md`` / ``prior.csv`` (Spearman of prior score vs training frequency, and
between the two prompt templates, per run) and ``figures/``: ``heatmap_<dataset>_<method>.png``, ``hit_vs_frequency_<dataset>.png``,
``hit_vs_prior_<dataset>.png``. Runs without prior columns borrow them from a run of the same
dataset and model (``runs.borrow_prior``). ``write_study`` is the same, callable from Python.

Everything is computed from the run's files with the same functions the run used
(``eisam.longtail.quadrants.quadrant_metrics``, hence ``eisam.metrics.ranking.hit_ndcg``), so a
table built here equals ``test.quadrants`` in the run's metrics.json.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from eisam.data.item_stats import PRIOR_SCORE
from eisam.longtail.prior import spearman
from eisam.longtail.quadrants import CELLS, DATA_LEVELS, PRIOR_LEVELS, item_quadrants, quadrant_metrics
from eisam.metrics.ranking import case_hit_ndcg
from eisam.report.figures import save
from eisam.report.runs import Run, borrow_prior, counted_runs, load_run
from eisam.report.stats import bootstrap_ci

log = logging.getLogger(__name__)
SHORT = {"prior_head": "PH", "prior_tail": "PT", "data_head": "DH", "data_tail": "DT"}


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


def quadrant_users(runs: Sequence[Run], k: int = 10) -> pd.DataFrame:
    """One row per run and test user: dataset, model, method, run, user, the target's quadrant
    (prior, data), and the user's hr@k and ndcg@k: what the cells' intervals resample."""
    frames = []
    for r in runs:
        quadrant = item_quadrants(r.items)
        targets = r.predictions["target"].to_numpy()
        hit, ndcg = case_hit_ndcg(r.predictions["rank"], k)
        frames.append(pd.DataFrame({"dataset": r.key[0], "model": r.key[1], "method": r.key[2], "run": str(r.path),
                                    "user": r.predictions["user"].astype(str),
                                    "prior": quadrant.prior.to_numpy()[targets],
                                    "data": quadrant.data.to_numpy()[targets],
                                    f"hr@{k}": hit, f"ndcg@{k}": ndcg}))
    return pd.concat(frames, ignore_index=True)


def quadrant_summary(rows: pd.DataFrame, users: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """Mean and sample std over seeds of each cell's HR@k / NDCG@k, their 95 % bootstrap intervals
    over the cell's users (a user's seeds resampled together); mean user count; number of runs."""
    keys = ["dataset", "model", "method", "prior", "data"]
    g = rows.groupby(keys, sort=True)
    out = g[[f"hr@{k}", f"ndcg@{k}"]].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["n_users"] = g["n_users"].mean()
    out["n_runs"] = g.size()
    metrics, intervals = (f"hr@{k}", f"ndcg@{k}"), []
    for key, cell in users.groupby(keys, sort=True):
        row = dict(zip(keys, key))
        for metric in metrics:
            scores = cell.pivot(index="user", columns="run", values=metric).to_numpy()
            row[f"{metric}_lo"], row[f"{metric}_hi"] = bootstrap_ci(scores)
        intervals.append(row)
    intervals = pd.DataFrame(intervals, columns=keys + [f"{m}_{end}" for m in metrics for end in ("lo", "hi")])
    return out.reset_index().merge(intervals, on=keys, how="left")


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


def plot_quadrant_heatmap(runs: Sequence[Run], path: str | Path, metric: str = "ndcg@10",
                          title: str | None = None) -> Path:
    """2x2 heatmap (rows prior head/tail, columns data head/tail) of ``metric``, mean over ``runs``
    (the seeds of one method on one dataset); each cell shows the value, its 95 % bootstrap
    interval over the cell's users and its mean user count."""
    k = int(metric.split("@")[1])
    values, users, intervals = np.full((2, 2), np.nan), np.zeros((2, 2)), {}
    qs = [run_quadrants(r, (k,)) for r in runs]
    cells = quadrant_users(runs, k).groupby(["prior", "data"])
    for i, p in enumerate(PRIOR_LEVELS):
        for j, d in enumerate(DATA_LEVELS):
            vals = [q[p][d][metric] for q in qs if q[p][d][metric] is not None]
            values[i, j] = np.mean(vals) if vals else np.nan
            users[i, j] = np.mean([q[p][d]["n_users"] for q in qs])
            if (p, d) in cells.groups:
                scores = cells.get_group((p, d)).pivot(index="user", columns="run", values=metric).to_numpy()
                intervals[i, j] = "\n[{:.3f}, {:.3f}]".format(*bootstrap_ci(scores))
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
            ax.text(j, i, f"{text}{intervals.get((i, j), '')}\n(n={users[i, j]:.0f})", ha="center", va="center",
                    color="w", bbox={"facecolor": "black", "alpha": 0.35, "linewidth": 0})
    if title is None and runs:
        dataset, model, method = runs[0].key
        title = f"{method} on {dataset} ({model}, {len(runs)} run{'s' * (len(runs) > 1)})"
    ax.set_title(title or "", fontsize=9)
    return save(fig, path)


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
    return save(fig, path)


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
    return save(fig, path)


def _fmt(mean, std, lo=np.nan, hi=np.nan) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if not math.isnan(lo):
        return f"{mean:.4f} [{lo:.4f}, {hi:.4f}]"
    return f"{mean:.4f}" if std is None or math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def quadrant_markdown(summary: pd.DataFrame, k: int = 10) -> str:
    """One row per dataset/model/method; per cell 'NDCG@k / HR@k (users)', mean over seeds [95 % interval]."""
    cells = [f"{SHORT[p]}·{SHORT[d]}" for p, d in CELLS]
    lines = [f"Quadrant accuracy: NDCG@{k} / HR@{k} (mean over seeds [95 % bootstrap interval over the cell's users, "
             "a user's seeds resampled together]; mean test users in the cell). "
             "PH/PT = prior head/tail, DH/DT = data head/tail.", "",
             "| dataset | model | method | runs | " + " | ".join(cells) + " |",
             "|---|---|---|---|" + "---|" * len(cells)]
    for (dataset, model, method), g in summary.groupby(["dataset", "model", "method"], sort=True):
        g = g.set_index(["prior", "data"])
        row = [dataset, model, method, str(int(g["n_runs"].max()))]
        for cell in CELLS:
            c = g.loc[cell]
            row.append(" / ".join(_fmt(*(c[f"{m}_{s}"] for s in ("mean", "std", "lo", "hi")))
                                  for m in (f"ndcg@{k}", f"hr@{k}")) + f" ({c['n_users']:.0f})")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def prior_rows(runs) -> pd.DataFrame:
    """Per run: the prior's Spearman vs n_train (recomputed from item_stats.csv) and, when the run
    scored the second template, the Spearman between the two templates (from metrics.json)."""
    rows = []
    for r in runs:
        block = r.metrics.get("prior") or {}
        other = block.get("compare_with") or {}
        rows.append({"dataset": r.key[0], "model": r.key[1], "method": r.key[2], "seed": r.seed, "run": str(r.path),
                     "template": block.get("template"), "n_items": len(r.items),
                     "spearman_prior_vs_n_train": spearman(r.items[PRIOR_SCORE], r.items["n_train"]),
                     "compare_template": other.get("template"),
                     "spearman_between_templates": other.get("spearman_between_templates")})
    return pd.DataFrame(rows)


def prior_markdown(rows: pd.DataFrame) -> str:
    lines = ["Prior popularity vs data popularity (Spearman over all catalogue items, per run).", "",
             "| dataset | model | method | seed | template | items | ρ(prior, n_train) | other template | ρ(templates) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in rows.sort_values(["dataset", "model", "method", "seed"]).iterrows():
        def num(x):
            return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"
        lines.append(f"| {r['dataset']} | {r['model']} | {r['method']} | {r['seed']} | {r['template']} | "
                     f"{r['n_items']} | {num(r['spearman_prior_vs_n_train'])} | {r['compare_template'] or 'n/a'} | "
                     f"{num(r['spearman_between_templates'])} |")
    return "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in str(text))


def write_study(run_dirs: Iterable[str | Path], out: str | Path, k: int = 10) -> dict[str, Path]:
    """Load the runs below ``run_dirs`` and write the study's tables and figures to ``out``."""
    out = Path(out)
    paths = counted_runs(run_dirs)
    runs = borrow_prior([load_run(p) for p in paths])
    if not runs:
        raise FileNotFoundError(f"no finished run with prior scores under {list(map(str, run_dirs))}")
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    rows = quadrant_rows(runs, k)
    summary = quadrant_summary(rows, quadrant_users(runs, k), k)
    rows.to_csv(written.setdefault("quadrants_runs.csv", out / "quadrants_runs.csv"), index=False)
    summary.to_csv(written.setdefault("quadrants.csv", out / "quadrants.csv"), index=False)
    written["quadrants.md"] = out / "quadrants.md"
    written["quadrants.md"].write_text(quadrant_markdown(summary, k))
    prior = prior_rows(runs)
    prior.to_csv(written.setdefault("prior.csv", out / "prior.csv"), index=False)
    written["prior.md"] = out / "prior.md"
    written["prior.md"].write_text(prior_markdown(prior))

    groups = defaultdict(list)
    for r in runs:
        groups[r.key].append(r)
    models = defaultdict(set)
    for dataset, model, _ in groups:
        models[dataset].add(model)
    by_dataset = defaultdict(dict)
    for (dataset, model, method), rs in sorted(groups.items()):
        name = f"heatmap_{_slug(dataset)}_{_slug(model)}_{_slug(method)}.png"
        written[name] = plot_quadrant_heatmap(rs, out / "figures" / name, metric=f"ndcg@{k}")
        by_dataset[dataset][method if len(models[dataset]) == 1 else f"{method} ({model})"] = rs
    for dataset, methods in by_dataset.items():
        for kind, plot in (("hit_vs_frequency", plot_hit_vs_frequency), ("hit_vs_prior", plot_hit_vs_prior)):
            name = f"{kind}_{_slug(dataset)}.png"
            written[name] = plot(methods, out / "figures" / name, k=k, title=dataset)
    log.info("long-tail study: %d runs -> %s", len(runs), out)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", help="run folders, or folders holding run folders (multiruns)")
    parser.add_argument("--out", default="outputs/report/longtail_study", help="output folder")
    parser.add_argument("--k", type=int, default=10, help="cut-off K of HR@K / NDCG@K (at most the length of the recommended lists)")


def run(args: argparse.Namespace) -> dict[str, Path]:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    written = write_study(args.run_dirs, args.out, args.k)
    for path in written.values():
        print(path)
    return written
