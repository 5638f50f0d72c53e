"""Side-by-side table of a few finished run folders, each against the first (the reference).

For one-off comparisons that are not a sweep of the report (for example the quality-at-equal-time
study of the fast path in docs/method.md). Validation: the selected checkpoint's NLL and, with
`valid_decode=true`, HR/NDCG@10; test: per-user NDCG@10 and target NLL with 95 % bootstrap intervals
over users, and the paired difference to the reference (paired t-test on the same users); the overlap of
each user's recommended top 10 with the reference's (mean share with its bootstrap interval, and the share
of users whose lists are identical, in the same order), which tells how far a change of numerics (precision,
machine) moves the lists against how far a seed moves them.

    python scripts/compare_runs.py --label all-layers RUN_A --label top-2 RUN_B [--out table.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from eisam.report.runs import K, per_user
from eisam.report.stats import bootstrap_ci, paired_t
from eisam.run_files import METRICS, PREDICTIONS


def _interval(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _difference(t: dict, digits: int = 3) -> str:
    return f"{t['diff']:+.{digits}f} [{t['lo']:+.{digits}f}, {t['hi']:+.{digits}f}], p = {t['p']:.2g}"


def recommended(folder: Path) -> pd.Series:
    """Each user's recommended list (item indices, best first), from predictions.csv."""
    predictions = pd.read_csv(folder / PREDICTIONS, dtype={"user": str, "recommended": str})
    if "recommended" not in predictions:
        raise KeyError(f"{folder / PREDICTIONS}: no column 'recommended'")
    return predictions.set_index("user")["recommended"].fillna("").str.split()


def list_agreement(lists: pd.Series, reference: pd.Series) -> str:
    """Mean per-user share of the reference's top K also in ``lists`` [95 % CI], and identical lists."""
    users = lists.index.intersection(reference.index)
    share = pd.Series([len(set(lists[u]) & set(reference[u])) / max(len(reference[u]), 1) for u in users])
    identical = sum(lists[u] == reference[u] for u in users) / len(users)
    return f"{_interval(share.mean(), *bootstrap_ci(share), digits=2)}; identical {identical:.0%}"


def compare(folders: list[Path], labels: list[str]) -> str:
    users = per_user(pd.DataFrame({"run": [str(f) for f in folders]}))
    by_run = {run: frame.set_index("user") for run, frame in users.groupby("run")}
    reference = by_run[str(folders[0])]
    ndcg = f"ndcg@{K}"
    lines = ["| run | train steps | train s | val NLL | valid HR@10 | valid NDCG@10 (all / head / tail) | "
             f"test NDCG@10 [95 % CI] | test NLL [95 % CI] | Δ test NDCG@10 vs {labels[0]} | Δ test NLL vs {labels[0]} | "
             f"top-{K} overlap with {labels[0]} [95 % CI] |",
             "| --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- | --- | --- |"]
    reference_lists = recommended(folders[0])
    for folder, label in zip(folders, labels):
        metrics = json.loads((folder / METRICS).read_text())
        cost, valid = metrics["cost"], metrics.get("valid") or {}
        frame = by_run[str(folder)]
        paired = frame.merge(reference, left_index=True, right_index=True, suffixes=("", "_ref"))
        deltas = ["(reference)", "(reference)"] if folder == folders[0] else [
            _difference(paired_t(paired[ndcg] - paired[f"{ndcg}_ref"])),
            _difference(paired_t(paired["nll"] - paired["nll_ref"]))]
        ndcg_valid = " / ".join(f"{valid[g][ndcg]:.3f}" for g in ("overall", "head", "tail")) if valid else "-"
        hr_valid = f"{valid['overall'][f'hr@{K}']:.3f}" if valid else "-"
        val_nll = (metrics.get("selection") or {}).get("best_val_nll")  # None: no checkpoint was validated
        lines.append(
            f"| {label} | {cost['train_steps']} | {cost['train_seconds']:.0f} | "
            f"{'-' if val_nll is None else f'{val_nll:.4f}'} | {hr_valid} | {ndcg_valid} | "
            f"{_interval(frame[ndcg].mean(), *bootstrap_ci(frame[ndcg]))} | "
            f"{_interval(frame['nll'].mean(), *bootstrap_ci(frame['nll']))} | {deltas[0]} | {deltas[1]} | "
            f"{'(reference)' if folder == folders[0] else list_agreement(recommended(folder), reference_lists)} |")
    n_valid = (json.loads((folders[0] / METRICS).read_text()).get("valid") or {}).get("n_users", {}).get("overall")
    lines += ["", f"{len(reference)} test users (paired by user id), {n_valid or '-'} validation users."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", nargs=2, action="append", metavar=("LABEL", "RUN_DIR"), required=True,
                        help="a label and a finished run folder; the first is the reference")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    folders = [Path(run) for _, run in args.label]
    for folder in folders:
        if not (folder / METRICS).is_file():
            parser.error(f"{folder}: no {METRICS} (not a finished run folder)")
    table = compare(folders, [label for label, _ in args.label])
    if args.out:
        args.out.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
