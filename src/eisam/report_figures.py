"""The report's figures (PNG), drawn from the frames of finished runs that `eisam.report` builds."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from eisam.report import K  # noqa: E402

FLAT = {"eisam": ("C1", "-"), "eisam_fast": ("C2", "--"), "base": ("gray", ":")}  # flat lines against G: color, style


def labels(runs: pd.DataFrame, columns: list[str]) -> pd.Series:
    """A short name per run from its set setting columns except the dataset, e.g. 'eisam rho=0.1 lam=2.0'."""
    def name(run: pd.Series) -> str:
        return " ".join(str(run[c]) if c in ("method", "variant") else f"{c}={run[c]}"
                        for c in columns[1:] if pd.notna(run[c]))

    return runs.apply(name, axis=1)


def draw_figures(runs: pd.DataFrame, users: pd.DataFrame, columns: list[str], out: Path) -> list[Path]:
    """Head vs tail and popularity-decile NDCG@10 always; cost against G when GroupSAM ran; NDCG@10
    against rho and lam when they are swept."""
    runs = runs.assign(label=labels(runs, columns))
    figures = [head_tail(runs, out / "head_tail.png"), popularity_deciles(runs, users, out / "popularity_deciles.png")]
    if (runs.method == "groupsam").any():
        figures.append(cost_vs_groups(runs, out / "efficiency.png"))
    swept = [param for param in ("rho", "lam") if param in columns]
    if swept:
        figures.append(sensitivity(runs, swept, out / "sensitivity.png"))
    return figures


def _panels(n: int, width: float, rows: int = 1, height: float = 4.0):
    return plt.subplots(rows, n, figsize=(width * n, height * rows), squeeze=False)


def _log_ticks(ax, values) -> None:
    """A log x axis ticked at the swept values only."""
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sorted(values), [f"{v:g}" for v in sorted(values)])


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def head_tail(runs: pd.DataFrame, path: Path) -> Path:
    """Bars of head and tail NDCG@10 per setting (mean ± std over seeds), one panel per dataset."""
    datasets = list(runs.dataset.unique())
    fig, axes = _panels(len(datasets), width=1.5 + 0.7 * runs.label.nunique())
    for ax, dataset in zip(axes[0], datasets):
        data = runs[runs.dataset == dataset].groupby("label", sort=False)
        for shift, group in ((-0.2, "head"), (0.2, "tail")):
            values = data[f"test/{group}/ndcg@{K}"]
            x = np.arange(values.ngroups) + shift
            ax.bar(x, values.mean(), 0.4, yerr=values.std().fillna(0), capsize=2, label=f"{group} items")
        ax.set_xticks(np.arange(data.ngroups), list(values.mean().index), rotation=30, ha="right")
        ax.set(title=dataset, ylabel=f"NDCG@{K}")
        ax.legend(fontsize="small")
    return _save(fig, path)


def popularity_deciles(runs: pd.DataFrame, users: pd.DataFrame, path: Path) -> Path:
    """NDCG@10 of users grouped by their target's popularity decile, one line per setting."""
    data = users.merge(runs[["run", "dataset", "label"]], on="run")
    datasets = list(runs.dataset.unique())
    fig, axes = _panels(len(datasets), width=5.5)
    for ax, dataset in zip(axes[0], datasets):
        curves = data[data.dataset == dataset].groupby(["label", "decile"], sort=False).ndcg.mean().unstack().sort_index(axis=1)
        for label, curve in curves.iterrows():
            ax.plot(curve.index, curve.to_numpy(), marker="o", label=label)
        ax.set(title=dataset, xticks=range(1, 11), ylabel=f"NDCG@{K}",
               xlabel="target's popularity decile (training targets; 10 = most)")
        ax.legend(fontsize="small")
    return _save(fig, path)


def cost_vs_groups(runs: pd.DataFrame, path: Path) -> Path:
    """Seconds per step of exact GroupSAM against its number of groups G, with the methods whose
    cost does not depend on G (EISAM above all) as flat lines."""
    fig, axes = _panels(1, width=5.5)
    ax = axes[0][0]
    seconds = runs[runs.method == "groupsam"].groupby("groups")["cost/seconds_per_step"]
    ax.errorbar(seconds.mean().index, seconds.mean(), yerr=seconds.std().fillna(0), marker="o", capsize=2, color="C0",
                label="groupsam (one perturbation per group)")
    for method, (color, style) in FLAT.items():
        flat = runs.loc[runs.method == method, "cost/seconds_per_step"]
        if len(flat):
            ax.axhline(flat.mean(), color=color, linestyle=style, label=method)
    _log_ticks(ax, seconds.mean().index)
    ax.set(xlabel="G (popularity groups)", ylabel="seconds per training step", ylim=(0, None))
    ax.legend(fontsize="small")
    return _save(fig, path)


def sensitivity(runs: pd.DataFrame, swept: list[str], path: Path) -> Path:
    """Overall and tail NDCG@10 (mean over seeds) against each swept parameter, one line per value
    of the other."""
    fig, axes = _panels(len(swept), width=5.5, rows=2, height=3.5)
    for j, param in enumerate(swept):
        other = next((p for p in swept if p != param), None)
        lines = list(runs.groupby(other)) if other else [(None, runs)]
        for i, group in enumerate(("overall", "tail")):
            ax = axes[i][j]
            for value, data in lines:
                curve = data.groupby(param)[f"test/{group}/ndcg@{K}"].mean()
                ax.plot(curve.index, curve.to_numpy(), marker="o", label=None if other is None else f"{other}={value}")
            if (runs[param] > 0).all():
                _log_ticks(ax, runs[param].unique())
            ax.set(xlabel=param, ylabel=f"{group} NDCG@{K}")
            if other:
                ax.legend(fontsize="small")
    return _save(fig, path)
