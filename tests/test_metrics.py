"""Ranking metrics against hand-computed examples."""
import json
import math

import pandas as pd
import pytest

from eisam.data import ItemStats
from eisam.metrics import KS, evaluate_rankings, hit_ndcg, per_user_frame, target_ranks

# 6 items; head = {0, 1}
STATS = ItemStats(pd.DataFrame({"item_idx": range(6), "item_id": [f"i{i}" for i in range(6)],
                                "title": [f"T{i}" for i in range(6)], "n_train": [9, 7, 1, 1, 0, 0],
                                "group": ["head", "head", "tail", "tail", "tail", "tail"]}))


def test_target_ranks():
    assert target_ranks([[3, 1, 2], [0, 5], [4]], [2, 0, 1]).tolist() == [3, 1, -1]


def test_hit_ndcg_by_hand():
    m = hit_ndcg([1, 3, 7, -1], ks=(1, 5))
    assert m["hr@1"] == 0.25 and m["ndcg@1"] == 0.25
    assert m["hr@5"] == 0.5 and m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert hit_ndcg([], ks=(5,)) == {"hr@5": None, "ndcg@5": None}
    assert list(hit_ndcg([2])) == [f"{m}@{k}" for k in KS for m in ("hr", "ndcg")]


def test_evaluate_rankings_groups_share_and_coverage():
    recommended = [[0, 1, 2], [2, 3, 0], [1, 0, 4]]
    targets = [1, 4, 1]  # head (rank 2), tail (miss), head (rank 1)
    out = evaluate_rankings(recommended, targets, [1.0, 2.0, 3.0], STATS, ks=(1, 3, 5))
    assert out["n_users"] == {"overall": 3, "head": 2, "tail": 1}
    assert out["overall"]["hr@1"] == pytest.approx(1 / 3) and out["overall"]["hr@3"] == pytest.approx(2 / 3)
    assert out["overall"]["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1) / 3)
    assert out["head"]["hr@3"] == 1.0 and out["head"]["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1) / 2)
    assert out["tail"]["hr@3"] == 0.0 and out["tail"]["nll"] == 2.0 and out["head"]["nll"] == 2.0
    assert out["tail_share@1"] == pytest.approx(1 / 3)  # top-1: 0, 2, 1
    assert out["tail_share@3"] == pytest.approx(4 / 9) and out["coverage@3"] == pytest.approx(5 / 6)
    assert "tail_share@5" not in out  # lists of 3 do not reach K=5
    json.dumps(out)


def test_empty_group_is_none_and_short_lists_use_their_length():
    out = evaluate_rankings([[0, 1]], [0], None, STATS)
    assert out["tail"] == {**{f"{m}@{k}": None for k in KS for m in ("hr", "ndcg")}, "nll": None}
    assert out["overall"]["nll"] is None and out["n_users"]["tail"] == 0
    assert out["tail_share@2"] == 0.0 and out["coverage@2"] == pytest.approx(2 / 6)
    assert "null" in json.dumps(out) and "NaN" not in json.dumps(out)
    out = evaluate_rankings([list(range(6)) * 4], [5], [0.5], STATS)
    assert {k for k in out if k.startswith("coverage")} == {"coverage@5", "coverage@10", "coverage@20"}


def test_per_user_frame():
    df = per_user_frame(["u1", "u2"], [[0, 1], [2, 3]], [1, 4], STATS, nll=[0.5, 1.5])
    assert df.columns.tolist() == ["user", "target", "target_id", "target_group", "rank", "nll", "recommended"]
    assert df["rank"].tolist() == [2, -1] and df["target_group"].tolist() == ["head", "tail"]
    assert df["target_id"].tolist() == ["i1", "i4"] and df["recommended"].tolist() == ["0 1", "2 3"]
    assert per_user_frame(["u"], [[0]], [0], STATS)["nll"].isna().all()
