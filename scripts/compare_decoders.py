"""Head/tail table of one trained run decoded two ways: its own test (beam search) against its
re-evaluation with the exact search (``python -m eisam.evaluate run_dir=RUN +overrides.decoding.search=exact``).

Users are matched by id (a re-evaluation on a user subset compares those users only). Per group
(overall, head-target and tail-target users): HR@10 and NDCG@10 of each decoder with 95 % bootstrap
intervals over users, the paired difference exact minus beam (t interval, p), how many of the beam's
top 10 are in the exact top 10, and the tail share of each decoder's lists.

    python scripts/compare_decoders.py RUN_DIR [--reeval RUN_DIR/reeval] [--out table.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from eisam.metrics.ranking import case_hit_ndcg
from eisam.report.runs import GROUPS, K, of_group
from eisam.report.stats import bootstrap_ci, paired_t
from eisam.run_files import ITEM_STATS, PREDICTIONS

DECODERS = ("beam", "exact")


def decoded_users(run_dir: Path, reeval_dir: Path) -> pd.DataFrame:
    """One row per user decoded both ways: group, per-decoder hit, ndcg and top-K lists."""
    tail = pd.read_csv(run_dir / ITEM_STATS, usecols=["item_idx", "group"]).set_index("item_idx").group.eq("tail")
    frames = {}
    for decoder, folder in zip(DECODERS, (run_dir, reeval_dir)):
        predictions = pd.read_csv(folder / PREDICTIONS, dtype={"user": str}).set_index("user")
        hit, ndcg = case_hit_ndcg(predictions["rank"], K)
        top = predictions.recommended.map(lambda r: [int(i) for i in str(r).split()[:K]])
        frames[decoder] = pd.DataFrame({"group": predictions.target_group, "hit": hit, "ndcg": ndcg, "top": top,
                                        "tail_share": top.map(lambda items: tail.loc[items].mean())},
                                       index=predictions.index)
    both = frames["beam"].merge(frames["exact"], left_index=True, right_index=True, suffixes=("_beam", "_exact"))
    if both.empty:
        raise SystemExit(f"{run_dir} and {reeval_dir}: no user decoded both ways")
    if (both.group_beam != both.group_exact).any():
        raise SystemExit(f"{reeval_dir}: its item groups differ from {run_dir}'s (another training subset?)")
    both["overlap"] = [len(set(b) & set(e)) for b, e in zip(both.top_beam, both.top_exact)]
    return both.rename(columns={"group_beam": "group"})


def _cell(values: pd.Series) -> str:
    lo, hi = bootstrap_ci(values.to_numpy(dtype=float))
    return f"{values.mean():.4f} [{lo:.4f}, {hi:.4f}]"


def table(users: pd.DataFrame) -> str:
    lines = [f"| users | n | beam HR@{K} | exact HR@{K} | beam NDCG@{K} | exact NDCG@{K} | "
             f"Δ NDCG@{K} exact − beam [95 % CI], p | beam top {K} in exact top {K} | tail share beam / exact |",
             "| --- | ---: | --- | --- | --- | --- | --- | ---: | --- |"]
    for who in GROUPS:
        rows = of_group(users, who)
        if rows.empty:
            continue
        t = paired_t((rows.ndcg_exact - rows.ndcg_beam).to_numpy(dtype=float))
        lines.append(f"| {who} | {len(rows)} | {_cell(rows.hit_beam)} | {_cell(rows.hit_exact)} | {_cell(rows.ndcg_beam)} | "
                     f"{_cell(rows.ndcg_exact)} | {t['diff']:+.4f} [{t['lo']:+.4f}, {t['hi']:+.4f}], p = {t['p']:.2g} | "
                     f"{rows.overlap.mean():.2f} | {rows.tail_share_beam.mean():.3f} / {rows.tail_share_exact.mean():.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a finished training run (its test: the beam search)")
    parser.add_argument("--reeval", type=Path, help="its exact-search re-evaluation (default RUN_DIR/reeval)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    reeval = args.reeval or args.run_dir / "reeval"
    for folder in (args.run_dir, reeval):
        if not (folder / PREDICTIONS).is_file():
            parser.error(f"{folder}: no {PREDICTIONS} (not a finished run or re-evaluation)")
    text = table(decoded_users(args.run_dir, reeval))
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
