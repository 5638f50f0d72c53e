"""Long-tail study tables and figures from finished run folders.

    python -m eisam.analysis.longtail RUN_DIR... --out outputs/report/longtail_study

RUN_DIR may be a run folder or a (multi)run folder holding many. Writes, under --out:
``quadrants.md`` / ``quadrants.csv`` (mean and std over seeds per dataset, model, method and
quadrant), ``quadrants_runs.csv`` (one row per run and quadrant), ``prior.md`` / ``prior.csv``
(Spearman of prior score vs training frequency, and between the two prompt templates, per run) and
``figures/``: ``heatmap_<dataset>_<method>.png``, ``hit_vs_frequency_<dataset>.png``,
``hit_vs_prior_<dataset>.png``. Runs without prior columns borrow them from a run of the same
dataset and model (``figures.borrow_prior``). ``write_study`` is the same, callable from Python.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from eisam.analysis.figures import (
    borrow_prior,
    find_runs,
    load_run,
    plot_hit_vs_frequency,
    plot_hit_vs_prior,
    plot_quadrant_heatmap,
    quadrant_rows,
    quadrant_summary,
)
from eisam.analysis.prior import PRIOR_SCORE, spearman
from eisam.analysis.quadrants import CELLS

log = logging.getLogger(__name__)
SHORT = {"prior_head": "PH", "prior_tail": "PT", "data_head": "DH", "data_tail": "DT"}


def _fmt(mean, std) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:.4f}" if std is None or math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def quadrant_markdown(summary: pd.DataFrame, k: int = 10) -> str:
    """One row per dataset/model/method; per cell 'NDCG@k / HR@k (users)', mean ± std over seeds."""
    cells = [f"{SHORT[p]}·{SHORT[d]}" for p, d in CELLS]
    lines = [f"Quadrant accuracy: NDCG@{k} / HR@{k} (mean ± std over seeds; mean test users in the cell). "
             "PH/PT = prior head/tail, DH/DT = data head/tail.", "",
             "| dataset | model | method | runs | " + " | ".join(cells) + " |",
             "|---|---|---|---|" + "---|" * len(cells)]
    for (dataset, model, method), g in summary.groupby(["dataset", "model", "method"], sort=True):
        g = g.set_index(["prior", "data"])
        row = [dataset, model, method, str(int(g["n_runs"].max()))]
        for cell in CELLS:
            c = g.loc[cell]
            row.append(f"{_fmt(c[f'ndcg@{k}_mean'], c[f'ndcg@{k}_std'])} / "
                       f"{_fmt(c[f'hr@{k}_mean'], c[f'hr@{k}_std'])} ({c['n_users']:.0f})")
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
    paths = find_runs(run_dirs)
    runs = borrow_prior([load_run(p) for p in paths])
    if not runs:
        raise FileNotFoundError(f"no finished run with prior scores under {list(map(str, run_dirs))}")
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    rows = quadrant_rows(runs, k)
    summary = quadrant_summary(rows, k)
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


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(prog="python -m eisam.analysis.longtail", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", help="run folders, or folders holding run folders (multiruns)")
    parser.add_argument("--out", default="outputs/report/longtail_study", help="output folder")
    parser.add_argument("--k", type=int, default=10, help="cut-off K of HR@K / NDCG@K (at most the length of the recommended lists)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    written = write_study(args.run_dirs, args.out, args.k)
    for name, path in written.items():
        print(path)
    return written


if __name__ == "__main__":
    main()
