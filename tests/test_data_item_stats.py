"""Item statistics: head/tail by training-target count with ties by index, and a CSV round trip."""
import numpy as np
import pandas as pd
import pytest

from eisam.data import ItemStats, Sample, compute_item_stats

ITEMS = pd.DataFrame({"item_idx": range(5), "item_id": ["NA", "b", "c", "d", "e"],
                      "title": ["NA", "Beta", "Gamma", "Delta", "Eps"]})
TRAIN = [Sample("u", (1,), t) for t in (0, 0, 2, 2, 3)] + [Sample("v", (), 3)]  # counts 2 0 2 2 0


@pytest.mark.parametrize("ratio, head", [(0.2, [0]), (0.4, [0, 2]), (0.6, [0, 2, 3]), (0.01, [0]), (0.99, [0, 1, 2, 3, 4])])
def test_head_is_top_ratio_with_ties_by_index(ratio, head):
    stats = compute_item_stats(ITEMS, TRAIN, ratio)
    assert stats.n_train.tolist() == [2, 0, 2, 2, 0] and stats.n_train.dtype == np.int64
    assert np.flatnonzero(stats.head_mask).tolist() == head
    assert stats.table["group"].tolist() == ["head" if i in head else "tail" for i in range(5)]
    assert stats.table.columns.tolist() == ["item_idx", "item_id", "title", "n_train", "group"]


def test_round_trip_keeps_text_and_extra_columns(tmp_path):
    stats = compute_item_stats(ITEMS, TRAIN, 0.4)
    stats.table["prior_score"] = [-1.5, np.nan, -0.25, -3.0, -2.0]
    stats.table["prior_group"] = ["head", "tail", "head", "tail", "tail"]
    path = stats.save(tmp_path / "run")
    assert path == tmp_path / "run" / "item_stats.csv" and stats.save(path) == path
    for source in (path, tmp_path / "run"):
        back = ItemStats.load(source)
        pd.testing.assert_frame_equal(back.table, stats.table, check_dtype=False)
        assert back.table["item_id"][0] == "NA" and back.table["title"][0] == "NA"
        assert back.head_mask.tolist() == stats.head_mask.tolist()
