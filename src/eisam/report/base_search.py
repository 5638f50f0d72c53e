"""``python -m eisam.report base-search RUN_DIRS... --out DIR``: the search for a base worth regularizing.

Reads ``experiment=base_search`` runs (validation only) and reference runs (``method=sasrec``, ...), and
writes ``base_search.{md,csv}``: per setting its validation NDCG@10 and HR@10 with 95 % bootstrap
intervals over users, the paired difference to MostPop's list on the same validation users (t interval),
the validation NLL and the training cost; ``gap.csv``: per epoch the validation and training-probe NLL,
overall, head and tail; and the figures ``ndcg_vs_compute.png`` and ``gap.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml

from eisam.data.item_stats import ItemStats
from eisam.metric_keys import PROBE_HEAD_NLL, PROBE_NLL, PROBE_TAIL_NLL, VAL_HEAD_NLL, VAL_NLL, VAL_TAIL_NLL
from eisam.metrics.ranking import case_hit_ndcg
from eisam.reference import RECBOLE
from eisam.report.figures import panels, save
from eisam.report.runs import K, find_run_folders, mostpop_ndcg, read_metrics, read_predictions
from eisam.report.stats import bootstrap_ci, paired_t
from eisam.report.tables import interval, markdown
from eisam.run_files import ITEM_STATS, METRICS, RESOLVED_CONFIG, VALID_PREDICTIONS

# What a setting is: the knobs of the search (docs/results/base), read from the run's saved config.
KNOBS = {"method": "method.name", "epochs": "trainer.max_epochs", "lr": "method.lr",
         "targets": "model.lora.target_modules", "r": "model.lora.r", "top_layers": "model.lora.top_layers",
         "samples": "data.max_train_samples", "decoding": "decoding.search", "seed": "seed"}
CURVES = [VAL_NLL, VAL_HEAD_NLL, VAL_TAIL_NLL, PROBE_NLL, PROBE_HEAD_NLL, PROBE_TAIL_NLL]


def _get(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = (cfg or {}).get(part)
    return "+".join(cfg) if isinstance(cfg, list) else cfg


def read_setting(folder: Path) -> dict | None:
    """One finished validation run: its knobs, validation scores per user, NLL and cost; None otherwise."""
    if not (folder / VALID_PREDICTIONS).exists() or not (folder / METRICS).exists():
        return None
    cfg = yaml.safe_load((folder / RESOLVED_CONFIG).read_text())
    metrics = read_metrics(folder)
    predictions = read_predictions(folder, ("target", "rank"), VALID_PREDICTIONS)
    hit, ndcg = case_hit_ndcg(predictions["rank"], K)
    trained = Path(metrics.get("reevaluated_from") or folder)  # a re-evaluation (another decoder) of a run
    stats = ItemStats.load(trained / ITEM_STATS)
    popular_ndcg = mostpop_ndcg(stats, predictions.target)
    cost = (metrics if trained == folder else read_metrics(trained)).get("cost") or {}
    language_model = cfg["method"].get("kind") != RECBOLE
    knobs = {name: str(_get(cfg, key)) if language_model or name in ("method", "samples", "seed") else ""
             for name, key in KNOBS.items()}  # text: a table mixing models shows 4, not 4.0
    return {"run": str(folder), **knobs,
            "users": len(predictions), "hit": hit, "ndcg": ndcg, "vs_mostpop": ndcg - popular_ndcg,
            "mostpop_ndcg": popular_ndcg.mean(), "nll": ((metrics.get("valid") or {}).get("overall") or {}).get("nll"),
            "train_seconds": cost.get("train_seconds"),
            "samples_seen": (cost.get("train_steps") or 0) * cfg["batch_size"] if language_model else None}


def curves(folder: Path) -> pd.DataFrame:
    """The run's per-epoch validation and training-probe NLL (CSV logger), one row per validation."""
    logged = sorted(folder.rglob("metrics.csv"))
    if not logged:
        return pd.DataFrame()
    frame = pd.read_csv(logged[-1])
    present = [c for c in CURVES if c in frame]
    if VAL_NLL not in present:
        return pd.DataFrame()
    rows = frame.dropna(subset=[VAL_NLL])[["epoch", *present]].reset_index(drop=True)
    return rows.assign(run=str(folder))


def search_table(settings: list[dict]) -> pd.DataFrame:
    rows = []
    for s in settings:
        ndcg_lo, ndcg_hi = bootstrap_ci(s["ndcg"])
        hit_lo, hit_hi = bootstrap_ci(s["hit"])
        diff = paired_t(s["vs_mostpop"])
        rows.append({**{k: s[k] for k in KNOBS}, "users": s["users"],
                     f"valid NDCG@{K}": interval(s["ndcg"].mean(), ndcg_lo, ndcg_hi),
                     f"valid HR@{K}": interval(s["hit"].mean(), hit_lo, hit_hi),
                     f"NDCG@{K} - mostpop": interval(diff["diff"], diff["lo"], diff["hi"]),
                     "valid NLL": None if s["nll"] is None else round(s["nll"], 4),
                     "train seconds": s["train_seconds"], "samples seen": s["samples_seen"], "run": Path(s["run"]).name,
                     "_ndcg": s["ndcg"].mean(), "_lo": ndcg_lo, "_hi": ndcg_hi, "_mostpop": s["mostpop_ndcg"],
                     "_seconds": s["train_seconds"], "_llm": s["samples_seen"] is not None, "_folder": s["run"]})
    return pd.DataFrame(rows)


def _samples(samples: str) -> str:
    return "all training samples" if samples == "None" else f"{samples} training samples"


def draw(table: pd.DataFrame, gap: pd.DataFrame, out: Path) -> list[Path]:
    fig, ((ax,),) = panels(1, 6.5)
    llm = table[table._llm]
    for knob in ("epochs", "lr", "targets", "r", "top_layers", "samples", "decoding"):
        others = [k for k in KNOBS if k not in (knob, "method")]  # a curve: settings (of one seed) that differ in knob only
        for _, curve in llm.groupby(others, dropna=False):
            if curve[knob].nunique() < 2:
                continue
            curve = curve.sort_values("_seconds")
            ax.errorbar(curve._seconds, curve._ndcg, yerr=[curve._ndcg - curve._lo, curve._hi - curve._ndcg],
                        marker="o", capsize=3, label=f"{knob}: " + ", ".join(map(str, curve[knob])))
    for color, (samples, runs) in zip(("grey", "darkgrey", "lightgrey"), table.groupby("samples")):
        ax.axhline(runs._mostpop.iloc[0], color=color, ls="--", label=f"mostpop, {_samples(samples)}")  # its list
        # depends on the training samples
    references = table[~table._llm].groupby(["method", "samples"])
    for style, ((method, samples), runs) in zip(("-.", ":", (0, (1, 4)), (0, (5, 2))), references):
        ax.axhline(runs._ndcg.mean(), ls=style, color="black", label=f"{method}, {_samples(samples)} ({len(runs)} seeds)")
    ax.set(xlabel="training seconds (this CPU, shared)", ylabel=f"validation NDCG@{K}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    paths = [save(fig, out / "ndcg_vs_compute.png")]
    if not gap.empty:
        runs = gap.run.unique()
        fig, axes = panels(len(runs), 5)
        for ax, (run, rows) in zip(axes[0], gap.groupby("run", sort=False)):
            for column in [c for c in CURVES if c in rows]:
                ax.plot(rows.epoch + 1, rows[column], marker="o", ls="-" if column.startswith("val") else "--",
                        label=column)
            setting = table.set_index("_folder").loc[run]
            ax.set(title=", ".join(f"{k} {setting[k]}" for k in ("lr", "targets", "r", "top_layers", "samples")),
                   xlabel="epoch", ylabel="target NLL")
            ax.title.set_fontsize(8)
            ax.legend(fontsize=7)
        paths.append(save(fig, out / "gap.png"))
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="folders holding the search's runs and the reference runs")
    parser.add_argument("--out", type=Path, default=Path("outputs/report/base_search"))


def run(args: argparse.Namespace) -> None:
    folders = find_run_folders(args.paths)
    settings = [s for s in map(read_setting, folders) if s]
    if not settings:
        raise SystemExit(f"no finished validation runs (with {VALID_PREDICTIONS}) under {', '.join(map(str, args.paths))}")
    table = search_table(settings)
    gap = pd.concat([curves(f) for f in folders], ignore_index=True)
    gap = gap[gap.run.isin(table._folder)] if not gap.empty else gap  # finished settings only
    args.out.mkdir(parents=True, exist_ok=True)
    shown = table[[c for c in table if not c.startswith("_")]]
    shown.to_csv(args.out / "base_search.csv", index=False)
    (args.out / "base_search.md").write_text(markdown(shown))
    if not gap.empty:
        gap.to_csv(args.out / "gap.csv", index=False)
    for path in draw(table, gap, args.out):
        print(path)
