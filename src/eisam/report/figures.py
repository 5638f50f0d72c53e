"""The report's figures (PNG), drawn on matplotlib's Agg canvas (files only: no display, no pyplot
state) from the frames of finished runs that `eisam.report.runs` reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from eisam.report.runs import K
from eisam.report.stats import bootstrap_ci, cell_mean

FLAT = {"eisam": ("C1", "-"), "eisam_fast": ("C2", "--"), "base": ("gray", ":")}  # flat lines against G: color, style
POPULARITY_BINS = 10


def labels(rows: pd.DataFrame, columns: list[str]) -> pd.Series:
    """A short name per run (or setting) from its set setting columns except the dataset, e.g. 'eisam rho=0.1 lam=2.0'."""
    def name(run: pd.Series) -> str:
        return " ".join(str(run[c]) if c in ("method", "variant") else f"{c}={run[c]}"
                        for c in columns[1:] if pd.notna(run[c]))

    return rows.apply(name, axis=1)


def draw_figures(runs: pd.DataFrame, users: pd.DataFrame, accuracy: pd.DataFrame, columns: list[str],
                 out: Path) -> list[Path]:
    """Head vs tail NDCG@10 (from the accuracy table, with its intervals) and NDCG@10 by the target's
    training count always; cost against G when GroupSAM ran; NDCG@10 against rho and lam when swept."""
    runs = runs.assign(label=labels(runs, columns))
    accuracy = accuracy.assign(label=labels(accuracy, columns))
    figures = [head_tail(accuracy, out / "head_tail.png"), popularity(runs, users, out / "popularity_bins.png")]
    if (runs.method == "groupsam").any():
        figures.append(cost_vs_groups(runs, out / "efficiency.png"))
    swept = [param for param in ("rho", "lam") if param in columns]
    if swept:
        figures.append(sensitivity(accuracy, columns, swept, out / "sensitivity.png"))
    return figures


def panels(n: int, width: float, rows: int = 1, height: float = 4.0):
    fig = Figure(figsize=(width * n, height * rows))
    return fig, fig.subplots(rows, n, squeeze=False)


def _log_ticks(ax, values) -> None:
    """A log x axis ticked at the swept values only."""
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sorted(values), [f"{v:g}" for v in sorted(values)])


def save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _error_bars(mean, lo, hi) -> np.ndarray:
    """matplotlib's yerr (below, above) from an interval; none where there is no interval."""
    mean, lo, hi = (np.asarray(v, dtype=float) for v in (mean, lo, hi))
    return np.nan_to_num(np.stack([mean - lo, hi - mean]), nan=0.0)


def head_tail(accuracy: pd.DataFrame, path: Path) -> Path:
    """Bars of head and tail NDCG@10 per setting (mean over seeds, 95 % bootstrap interval over
    users), one panel per dataset."""
    datasets = list(accuracy.dataset.unique())
    fig, axes = panels(len(datasets), width=1.5 + 0.7 * accuracy.label.nunique())
    for ax, dataset in zip(axes[0], datasets):
        rows = accuracy[accuracy.dataset == dataset]
        for shift, group in ((-0.2, "head"), (0.2, "tail")):
            metric = f"{group}/ndcg@{K}"
            mean = rows[f"{metric}_mean"]
            ax.bar(np.arange(len(rows)) + shift, mean, 0.4, capsize=2, label=f"{group} items",
                   yerr=_error_bars(mean, rows[f"{metric}_lo"], rows[f"{metric}_hi"]))
        ax.set_xticks(np.arange(len(rows)), list(rows.label), rotation=30, ha="right")
        ax.set(title=dataset, ylabel=f"NDCG@{K} (95 % interval over users)")
        ax.legend(fontsize="small")
    return save(fig, path)


def popularity_bins(n_train, n_bins: int = POPULARITY_BINS) -> tuple[np.ndarray, list[str]]:
    """Each user's bin of its target's training count, and the bins' labels: targets that are no
    training target form one bin; the others are cut at quantiles of the users' counts, so bins
    hold about equal numbers of users and equal counts always share a bin."""
    n_train = np.asarray(n_train, dtype=np.int64)
    positive = n_train > 0
    zero = int((~positive).any())
    code = np.zeros(len(n_train), dtype=np.int64)
    if positive.any():
        code[positive] = pd.qcut(n_train[positive], max(n_bins - zero, 1), labels=False, duplicates="drop") + zero
    names = []
    for c in np.unique(code):
        lo, hi = n_train[code == c].min(), n_train[code == c].max()
        names.append(f"{lo}" if lo == hi else f"{lo}–{hi}")
    return code, names


def popularity(runs: pd.DataFrame, users: pd.DataFrame, path: Path) -> Path:
    """NDCG@10 of users binned by their target's training count (`popularity_bins`), one line per
    setting with its 95 % bootstrap interval over users, one panel per dataset."""
    data = users.merge(runs[["run", "dataset", "label"]], on="run")
    datasets = list(runs.dataset.unique())
    fig, axes = panels(len(datasets), width=6.5)
    for ax, dataset in zip(axes[0], datasets):
        rows = data[data.dataset == dataset]
        code, names = popularity_bins(rows.n_train)
        rows = rows.assign(bin=code)
        settings = list(rows.label.unique())
        for i, (name, setting) in enumerate(rows.groupby("label", sort=False)):
            points = [(b, cell_mean(m), *bootstrap_ci(m)) for b, cell in setting.groupby("bin")
                      if (m := cell.pivot(index="user", columns="run", values=f"ndcg@{K}").to_numpy()).size]
            x, mean, lo, hi = map(np.array, zip(*points))
            ax.errorbar(x + 0.6 * (i / max(len(settings) - 1, 1) - 0.5) * (len(settings) > 1), mean,
                        yerr=_error_bars(mean, lo, hi), marker="o", capsize=2, label=name)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set(title=dataset, ylabel=f"NDCG@{K} (95 % interval over users)",
               xlabel="target's training count (bins of about equal users)")
        ax.legend(fontsize="small")
    return save(fig, path)


def cost_vs_groups(runs: pd.DataFrame, path: Path) -> Path:
    """Seconds per step of exact GroupSAM against its number of groups G, with the methods whose
    cost does not depend on G (EISAM above all) as flat lines."""
    fig, axes = panels(1, width=5.5)
    ax = axes[0][0]
    seconds = runs[runs.method == "groupsam"].groupby("groups")["cost/seconds_per_step"]
    ax.errorbar(seconds.mean().index, seconds.mean(), yerr=seconds.std().fillna(0), marker="o", capsize=2, color="C0",
                label="groupsam (one perturbation per group)")
    for method, (color, style) in FLAT.items():
        flat = runs.loc[runs.method == method, "cost/seconds_per_step"]
        if len(flat):
            ax.axhline(flat.mean(), color=color, linestyle=style, label=method)
    _log_ticks(ax, seconds.mean().index)
    ax.set(xlabel="G (popularity groups)", ylabel="seconds per training step (mean ± std over runs)", ylim=(0, None))
    ax.legend(fontsize="small")
    return save(fig, path)


def sensitivity(accuracy: pd.DataFrame, columns: list[str], swept: list[str], path: Path) -> Path:
    """Overall and tail NDCG@10 (mean over seeds, 95 % interval over users) against each swept
    parameter, one line per value of the other setting columns."""
    fig, axes = panels(len(swept), width=5.5, rows=2, height=3.5)
    for j, param in enumerate(swept):
        keys = [c for c in columns if c != param]
        lines = list(accuracy.groupby(keys, dropna=False, sort=False))
        for i, group in enumerate(("overall", "tail")):
            ax, metric = axes[i][j], f"{group}/ndcg@{K}"
            for key, line in lines:
                line = line.sort_values(param)
                name = " ".join(str(v) if c in ("dataset", "method", "variant") else f"{c}={v}"
                                for c, v in zip(keys, key) if pd.notna(v))
                ax.errorbar(line[param], line[f"{metric}_mean"], marker="o", capsize=2, label=name,
                            yerr=_error_bars(line[f"{metric}_mean"], line[f"{metric}_lo"], line[f"{metric}_hi"]))
            if (accuracy[param] > 0).all():
                _log_ticks(ax, accuracy[param].unique())
            ax.set(xlabel=param, ylabel=f"{group} NDCG@{K}")
            ax.legend(fontsize="small")
    return save(fig, path)
