"""Head/tail table of one trained run decoded two ways: its own test (beam search) against its
re-evaluation with the exact search (``python -m eisam.evaluate run_dir=RUN +overrides.decoding.search=exact``),
or, with ``--split valid``, its validation lists (``valid_decode=true``) against an exact re-evaluation
of them (``+overrides.test=false``).

Users are matched by id (a re-evaluation on a user subset compares those users only). Per group
(overall, head-target and tail-target users): HR@10 and NDCG@10 of each decoder with 95 % bootstrap
intervals over users, the paired difference exact minus beam (t interval, p), the `mostpop` list's
NDCG@10 on the same users and the exact search's paired difference to it (the popularity floor), how
many of the beam's top 10 are in the exact top 10, and the tail share of each decoder's lists.

    python -m eisam.report decoders RUN_DIR [--reeval RUN_DIR/reeval] [--split test|valid] [--out table.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from eisam.data.item_stats import ItemStats
from eisam.metrics.ranking import case_hit_ndcg
from eisam.report.runs import GROUPS, K, mostpop_ndcg, of_group, read_predictions
from eisam.report.stats import bootstrap_ci, paired_t
from eisam.report.tables import difference, interval, markdown
from eisam.run_files import ITEM_STATS, PREDICTIONS, VALID_PREDICTIONS

SPLITS = {"test": PREDICTIONS, "valid": VALID_PREDICTIONS}

DECODERS = ("beam", "exact")


def decoded_users(run_dir: Path, reeval_dir: Path, file: str = PREDICTIONS) -> pd.DataFrame:
    """One row per user decoded both ways: group, per-decoder hit, ndcg and top-K lists, and the
    NDCG@K of the run's `mostpop` list (ndcg_mostpop)."""
    stats = ItemStats.load(run_dir / ITEM_STATS)
    tail = pd.Series(~stats.head_mask, index=stats.table.item_idx)
    frames = {}
    for decoder, folder in zip(DECODERS, (run_dir, reeval_dir)):
        predictions = read_predictions(folder, ("target", "target_group", "rank", "recommended"), file).set_index("user")
        hit, ndcg = case_hit_ndcg(predictions["rank"], K)
        top = predictions.recommended.map(lambda items: items[:K])
        frames[decoder] = pd.DataFrame({"group": predictions.target_group, "target": predictions.target,
                                        "hit": hit, "ndcg": ndcg, "top": top,
                                        "tail_share": top.map(lambda items: tail.loc[items].mean())},
                                       index=predictions.index)
    both = frames["beam"].merge(frames["exact"], left_index=True, right_index=True, suffixes=("_beam", "_exact"))
    if both.empty:
        raise SystemExit(f"{run_dir} and {reeval_dir}: no user decoded both ways")
    if (both.group_beam != both.group_exact).any() or (both.target_beam != both.target_exact).any():
        raise SystemExit(f"{reeval_dir}: its targets or item groups differ from {run_dir}'s "
                         "(another split or training subset?)")
    both["overlap"] = [len(set(b) & set(e)) for b, e in zip(both.top_beam, both.top_exact)]
    both["ndcg_mostpop"] = mostpop_ndcg(stats, both.target_beam)
    return both.rename(columns={"group_beam": "group"})


def _cell(values: pd.Series) -> str:
    return interval(values.mean(), *bootstrap_ci(values.to_numpy(dtype=float)))


def table(users: pd.DataFrame) -> str:
    rows = []
    for who in GROUPS:
        chosen = of_group(users, who)
        if chosen.empty:
            continue
        rows.append({"users": who, "n": len(chosen),
                     f"beam HR@{K}": _cell(chosen.hit_beam), f"exact HR@{K}": _cell(chosen.hit_exact),
                     f"beam NDCG@{K}": _cell(chosen.ndcg_beam), f"exact NDCG@{K}": _cell(chosen.ndcg_exact),
                     f"Δ NDCG@{K} exact − beam [95 % CI], p":
                         difference(paired_t((chosen.ndcg_exact - chosen.ndcg_beam).to_numpy(dtype=float))),
                     f"mostpop NDCG@{K}": _cell(chosen.ndcg_mostpop),
                     f"Δ NDCG@{K} exact − mostpop [95 % CI], p":
                         difference(paired_t((chosen.ndcg_exact - chosen.ndcg_mostpop).to_numpy(dtype=float))),
                     f"beam top {K} in exact top {K}": f"{chosen.overlap.mean():.2f}",
                     "tail share beam / exact":
                         f"{chosen.tail_share_beam.mean():.3f} / {chosen.tail_share_exact.mean():.3f}"})
    return markdown(pd.DataFrame(rows), align_right=("n", f"beam top {K} in exact top {K}"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a finished training run (its test: the beam search)")
    parser.add_argument("--reeval", type=Path, help="its exact-search re-evaluation (default RUN_DIR/reeval)")
    parser.add_argument("--split", choices=sorted(SPLITS), default="test",
                        help="valid: the validation lists of a valid_decode run and of its test=false re-evaluation")
    parser.add_argument("--out", type=Path)


def run(args: argparse.Namespace) -> None:
    reeval = args.reeval or args.run_dir / "reeval"
    file = SPLITS[args.split]
    for folder in (args.run_dir, reeval):
        if not (folder / file).is_file():
            raise argparse.ArgumentTypeError(f"{folder}: no {file} (not a finished run or re-evaluation of split {args.split})")
    text = table(decoded_users(args.run_dir, reeval, file))
    if args.out:
        args.out.write_text(text)
    print(text)
