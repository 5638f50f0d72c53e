"""Full-ranking metrics for next-item recommendation with one relevant item per case.

Cases are grouped by their TARGET item's head/tail group (training-split frequency); an empty
group gets None (null in JSON), never NaN.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from eisam.data.item_stats import ItemStats

KS = (5, 10, 20)


def target_ranks(recommended: Sequence[Sequence[int]], targets: Sequence[int]) -> np.ndarray:
    """1-based rank of each target in its recommendation list, -1 when absent."""
    return np.array([list(r).index(t) + 1 if t in r else -1 for r, t in zip(recommended, targets, strict=True)],
                    dtype=np.int64)


def case_hit_ndcg(ranks, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-case hit (0/1) and NDCG@k (1/log2(rank+1) within the top k, else 0): the terms that
    `hit_ndcg` averages, and what paired significance tests compare user by user."""
    ranks = np.asarray(ranks, dtype=np.int64)
    hit = (ranks >= 1) & (ranks <= k)
    return hit.astype(float), np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)


def hit_ndcg(ranks, ks: Sequence[int] = KS) -> dict:
    """HR@K and NDCG@K (one relevant item); None for no cases."""
    out = {}
    for k in ks:
        hit, gain = case_hit_ndcg(ranks, k)
        out[f"hr@{k}"], out[f"ndcg@{k}"] = (float(hit.mean()), float(gain.mean())) if len(hit) else (None, None)
    return out


def case_reciprocal_rank(ranks) -> np.ndarray:
    """Per-case 1/rank, 0 for a rank beyond the cap (-1): the terms of MRR@cap."""
    ranks = np.asarray(ranks, dtype=np.int64)
    return np.where(ranks >= 1, 1.0 / np.maximum(ranks, 1), 0.0)


def _mean(x) -> float | None:
    return float(np.mean(x)) if len(x) else None


def target_groups(targets: Sequence[int], stats: ItemStats) -> dict[str, np.ndarray]:
    """Boolean masks over the cases: overall (all), head and tail by the target's group."""
    head = stats.head_mask[np.asarray(targets, dtype=np.int64)] if len(targets) else np.zeros(0, bool)
    return {"overall": np.ones(len(head), bool), "head": head, "tail": ~head}


def nll_by_group(nll, targets: Sequence[int], stats: ItemStats) -> dict:
    """Mean target NLL overall, on head and on tail targets, and the users behind each: the
    validation block of a run that skips the test split (``test=false``)."""
    nll, groups = np.asarray(nll, dtype=float), target_groups(targets, stats)
    return {**{g: {"nll": _mean(nll[m])} for g, m in groups.items()},
            "n_users": {g: int(m.sum()) for g, m in groups.items()}}


def evaluate_rankings(recommended: Sequence[Sequence[int]], targets: Sequence[int], nll, stats: ItemStats,
                      ks: Sequence[int] = KS, exact_ranks=None, rank_cap: int | None = None) -> dict:
    """Overall/head/tail HR, NDCG and mean NLL, plus the tail share of recommended items and catalogue
    coverage at every K in `ks` that the lists reach (K=10 -> 'tail_share@10', 'coverage@10');
    lists shorter than min(ks) use their own length. With `exact_ranks` (each target's rank in the
    model's full ranking, -1 beyond `rank_cap`), also 'mrr@<rank_cap>' per group and 'rank_cap'."""
    ranks = target_ranks(recommended, targets)
    head = stats.head_mask
    groups = target_groups(targets, stats)
    nll = None if nll is None else np.asarray(nll, dtype=float)
    out = {g: {**hit_ndcg(ranks[m], ks), "nll": None if nll is None else _mean(nll[m])} for g, m in groups.items()}
    if exact_ranks is not None:
        reciprocal = case_reciprocal_rank(exact_ranks)
        for g, m in groups.items():
            out[g][f"mrr@{rank_cap}"] = _mean(reciprocal[m])
        out["rank_cap"] = rank_cap
    out["n_users"] = {g: int(m.sum()) for g, m in groups.items()}
    longest = max((len(r) for r in recommended), default=0)
    for k in [k for k in ks if k <= longest] or [longest]:
        top = np.array([i for r in recommended for i in list(r)[:k]], dtype=np.int64)
        out[f"tail_share@{k}"] = _mean(~head[top])
        out[f"coverage@{k}"] = len(np.unique(top)) / len(head)
    return out


def per_user_frame(users: Sequence[str], recommended: Sequence[Sequence[int]], targets: Sequence[int],
                   stats: ItemStats, nll=None, exact_ranks=None) -> pd.DataFrame:
    """One row per evaluated case (predictions.csv): what paired significance tests need. With
    `exact_ranks` (exact search), column `exact_rank`: the target's rank in the model's full ranking
    (1-based, -1 beyond the run's rank_cap)."""
    table = stats.table
    targets = np.asarray(targets, dtype=np.int64)
    frame = pd.DataFrame({
        "user": list(users),
        "target": targets,
        "target_id": table["item_id"].to_numpy()[targets],
        "target_group": table["group"].to_numpy()[targets],
        "rank": target_ranks(recommended, targets),
        "nll": np.full(len(targets), np.nan) if nll is None else np.asarray(nll, dtype=float),
        "recommended": [" ".join(map(str, r)) for r in recommended],
    })
    if exact_ranks is not None:
        frame.insert(frame.columns.get_loc("rank") + 1, "exact_rank", np.asarray(exact_ranks, dtype=np.int64))
    return frame
