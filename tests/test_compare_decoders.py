"""python -m eisam.report decoders pairs a run's beam lists with its exact re-evaluation user by user."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eisam.report.decoders import decoded_users, table
from eisam.run_files import ITEM_STATS, PREDICTIONS


def write_predictions(folder: Path, users, targets, lists, groups) -> None:
    folder.mkdir(parents=True)
    ranks = [lst.index(t) + 1 if t in lst else -1 for t, lst in zip(targets, lists)]
    pd.DataFrame({"user": users, "target": targets, "target_group": [groups[t] for t in targets], "rank": ranks,
                  "recommended": [" ".join(map(str, lst)) for lst in lists]}).to_csv(folder / PREDICTIONS, index=False)


def test_decoders_are_paired_by_user_and_compared_per_group(tmp_path):
    groups = ["head"] * 5 + ["tail"] * 25
    run, reeval = tmp_path / "run", tmp_path / "run" / "reeval"
    pd.DataFrame({"item_idx": range(30), "group": groups}).to_csv(tmp_path / ITEM_STATS, index=False)
    beam = [list(range(10)), list(range(10, 20)), list(range(20, 30))]
    exact = [list(range(5, 15)), list(range(10, 20)), list(range(20, 30))[::-1]]
    write_predictions(run, ["a", "b", "c"], [0, 12, 20], beam, groups)
    (tmp_path / ITEM_STATS).rename(run / ITEM_STATS)
    write_predictions(reeval, ["c", "a", "x"], [20, 0, 7], [exact[2], exact[0], exact[0]], groups)  # x: not in run

    users = decoded_users(run, reeval)
    assert sorted(users.index) == ["a", "c"]
    assert users.overlap.to_dict() == {"a": 5, "c": 10}
    assert users.ndcg_beam["c"] == pytest.approx(1.0) and users.ndcg_exact["c"] == pytest.approx(1 / np.log2(11))
    assert users.hit_exact["a"] == 0 and users.hit_beam["a"] == 1  # the exact list starts at item 5
    assert users.tail_share_beam["a"] == pytest.approx(0.5) and users.tail_share_exact["a"] == pytest.approx(1.0)
    text = table(users)
    assert "| overall | 2 |" in text and "| head | 1 |" in text and "| tail | 1 |" in text
