"""``python -m eisam.report tables SWEEP_DIR... [--out DIR] [--only tables|figures] [--references METHOD...]``:
the report of sweeps. Writes runs.csv (every run folder and its status), missing.md, the tables (accuracy,
paired comparisons, long-tail indicators, cost per step, the selection table of test=false runs; Markdown
and CSV, gathered in report.md) and the figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from eisam.report.figures import draw_figures
from eisam.report.runs import K, LONGTAIL, load_runs, per_user, setting_columns, with_reciprocal_rank
from eisam.report.selection import SELECTION_NOTES, selection_table, show_selection
from eisam.report.tables import (CELLS, COMPARISON_NOTES, LONGTAIL_NOTES, NOTES, REFERENCES, accuracy_table,
                                 comparison_table, detectable_note, efficiency_table, longtail_table, markdown,
                                 missing_section, numerics_note, show_accuracy, show_comparisons, show_efficiency, show_over_seeds)


def build_report(paths, out: Path | None = None, only: str | None = None,
                 references=REFERENCES) -> tuple[pd.DataFrame, Path]:
    """Writes runs.csv, missing.md and, unless ``only`` says otherwise, the tables (accuracy,
    comparisons, longtail, efficiency; Markdown and CSV, gathered in report.md) and the figures into
    ``out`` (default: outputs/report/<task name of the runs>). Returns the runs and ``out``."""
    runs = load_runs(paths)
    out = out or Path("outputs/report") / "-".join(sorted(runs.task.map(str).unique()))
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "runs.csv", index=False)
    (out / "missing.md").write_text(missing_section(runs))
    done = runs[runs.status == "ok"]
    selection = write_selection(done[done.split == "valid"], out) if only != "figures" else ""
    done = done[done.split == "test"].reset_index(drop=True)
    if done.empty:
        if selection:
            (out / "report.md").write_text(f"# Report: selection\n\n{missing_section(runs)}\n{selection}")
        return runs, out
    columns = setting_columns(done)
    users = per_user(done)
    done = with_reciprocal_rank(done, users)
    accuracy = accuracy_table(done, users, columns)  # the figures draw its intervals too
    if only != "tables":
        draw_figures(done, users, accuracy, columns, out)
    if only == "figures":
        return runs, out
    comparisons = comparison_table(done, users, columns, references)
    shown = {}
    for name, table, show in (("accuracy", accuracy, show_accuracy),
                              ("comparisons", comparisons, show_comparisons),
                              ("longtail", longtail_table(done, users, columns),
                               lambda t, c: show_over_seeds(t, c, LONGTAIL)),
                              ("efficiency", efficiency_table(done, columns), show_efficiency)):
        table.to_csv(out / f"{name}.csv", index=False)
        shown[name] = markdown(show(table, columns)) if len(table) else "No paired runs.\n"
        (out / f"{name}.md").write_text(shown[name])
    detectable = detectable_note(comparisons, columns)
    figures = "\n".join(f"![{f.stem}]({f.name})" for f in sorted(out.glob("*.png")))
    (out / "report.md").write_text("\n".join([
        f"# Report: {', '.join(map(str, done.task.unique()))}\n",
        f"{len(done)} finished runs, {(runs.status == 'missing').sum()} missing, "
        f"{(runs.status == 'superseded').sum()} superseded (runs.csv lists every run folder).\n",
        missing_section(runs),
        f"## Accuracy (HR@{K}, NDCG@{K})\n\n{CELLS} {NOTES}\n\n{shown['accuracy']}\n{detectable}",
        f"## Paired comparisons against {' and '.join(f'`{r}`' for r in references)}\n\n{COMPARISON_NOTES}\n\n{shown['comparisons']}\n"
        f"{numerics_note(done)}",
        f"## Long-tail indicators (NLL, tail share, coverage)\n\n{CELLS} {LONGTAIL_NOTES}\n\n{shown['longtail']}",
        f"## Cost per training step\n\n{shown['efficiency']}",
        f"## Figures\n\n{figures}\n",
        selection,
    ]))
    return runs, out


def write_selection(runs: pd.DataFrame, out: Path) -> str:
    """selection.{csv,md} of the test=false runs among ``runs``; returns the report's section ('' for none)."""
    if runs.empty:
        return ""
    columns = setting_columns(runs)
    table = selection_table(runs, columns)
    table.to_csv(out / "selection.csv", index=False)
    shown = markdown(show_selection(table, columns))
    (out / "selection.md").write_text(shown)
    return f"## Hyperparameter selection (validation NLL)\n\n{SELECTION_NOTES}\n\n{shown}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="sweep folders (or run folders, or their parents)")
    parser.add_argument("--out", type=Path, help="default: outputs/report/<task name of the runs>")
    parser.add_argument("--only", choices=("tables", "figures"), help="write only the tables or only the figures")
    parser.add_argument("--references", nargs="+", default=list(REFERENCES), metavar="METHOD",
                        help=f"methods every other method is paired with (default: {' '.join(REFERENCES)})")


def run(args: argparse.Namespace) -> None:
    runs, out = build_report(args.paths, args.out, args.only, tuple(args.references))
    counts = runs.status.value_counts()
    print(f"report: {out} ({counts.get('ok', 0)} runs, {counts.get('missing', 0)} missing, "
          f"{counts.get('superseded', 0)} superseded)")
    for row in runs[runs.status == "missing"].itertuples():
        print(f"missing: {row.run}: {row.reason}")
