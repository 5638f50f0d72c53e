"""Side-by-side table of a few finished run folders, each against the first (the reference).

For one-off comparisons that are not a sweep of the report (for example the quality-at-equal-time
study of the fast path in docs/method.md). Validation: the selected checkpoint's NLL and, with
`valid_decode=true`, HR/NDCG@10; test: per-user NDCG@10 and target NLL with 95 % bootstrap intervals
over users, and the paired difference to the reference (paired t-test on the same users); the overlap of
each user's recommended top 10 with the reference's (mean share with its bootstrap interval, and the share
of users whose lists are identical, in the same order), which tells how far a change of numerics (precision,
machine) moves the lists against how far a seed moves them.

    python -m eisam.report compare --label all-layers RUN_A --label top-2 RUN_B [--out table.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from eisam.report.runs import K, per_user, read_metrics, read_predictions
from eisam.report.stats import bootstrap_ci, paired_t
from eisam.report.tables import difference, interval, markdown
from eisam.run_files import METRICS

REFERENCE = "(reference)"


def recommended(folder: Path) -> pd.Series:
    """Each user's recommended list (item indices, best first), from predictions.csv."""
    return read_predictions(folder, ("recommended",)).set_index("user").recommended


def list_agreement(lists: pd.Series, reference: pd.Series) -> str:
    """Mean per-user share of the reference's top K also in ``lists`` [95 % CI], and identical lists."""
    users = lists.index.intersection(reference.index)
    share = pd.Series([len(set(lists[u]) & set(reference[u])) / max(len(reference[u]), 1) for u in users])
    identical = sum(lists[u] == reference[u] for u in users) / len(users)
    return f"{interval(share.mean(), *bootstrap_ci(share), digits=2)}; identical {identical:.0%}"


def compare(folders: list[Path], labels: list[str]) -> str:
    users = per_user(pd.DataFrame({"run": [str(f) for f in folders]}))
    by_run = {run: frame.set_index("user") for run, frame in users.groupby("run")}
    reference = by_run[str(folders[0])]
    reference_lists = recommended(folders[0])
    ndcg = f"ndcg@{K}"
    metrics_of = [read_metrics(folder) for folder in folders]
    rows = []
    for folder, label, metrics in zip(folders, labels, metrics_of):
        cost, valid = metrics["cost"], metrics.get("valid") or {}
        frame = by_run[str(folder)]
        paired = frame.merge(reference, left_index=True, right_index=True, suffixes=("", "_ref"))
        is_reference = folder == folders[0]
        val_nll = (metrics.get("selection") or {}).get("best_val_nll")  # None: no checkpoint was validated
        rows.append({
            "run": label, "train steps": cost["train_steps"], "train s": f"{cost['train_seconds']:.0f}",
            "val NLL": "-" if val_nll is None else f"{val_nll:.4f}",
            "valid HR@10": f"{valid['overall'][f'hr@{K}']:.3f}" if valid else "-",
            "valid NDCG@10 (all / head / tail)":
                " / ".join(f"{valid[g][ndcg]:.3f}" for g in ("overall", "head", "tail")) if valid else "-",
            "test NDCG@10 [95 % CI]": interval(frame[ndcg].mean(), *bootstrap_ci(frame[ndcg]), digits=3),
            "test NLL [95 % CI]": interval(frame["nll"].mean(), *bootstrap_ci(frame["nll"]), digits=3),
            f"Δ test NDCG@10 vs {labels[0]}":
                REFERENCE if is_reference else difference(paired_t(paired[ndcg] - paired[f"{ndcg}_ref"]), digits=3),
            f"Δ test NLL vs {labels[0]}":
                REFERENCE if is_reference else difference(paired_t(paired["nll"] - paired["nll_ref"]), digits=3),
            f"top-{K} overlap with {labels[0]} [95 % CI]":
                REFERENCE if is_reference else list_agreement(recommended(folder), reference_lists)})
    n_valid = (metrics_of[0].get("valid") or {}).get("n_users", {}).get("overall")
    table = markdown(pd.DataFrame(rows), align_right=("train steps", "train s", "val NLL", "valid HR@10"))
    return table + f"\n{len(reference)} test users (paired by user id), {n_valid or '-'} validation users.\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label", nargs=2, action="append", metavar=("LABEL", "RUN_DIR"), required=True,
                        help="a label and a finished run folder; the first is the reference")
    parser.add_argument("--out", type=Path)


def run(args: argparse.Namespace) -> None:
    folders = [Path(folder) for _, folder in args.label]
    for folder in folders:
        if not (folder / METRICS).is_file():
            raise argparse.ArgumentTypeError(f"{folder}: no {METRICS} (not a finished run folder)")
    table = compare(folders, [label for label, _ in args.label])
    if args.out:
        args.out.write_text(table)
    print(table)
