"""python -m eisam.report decoders pairs a run's beam lists with its exact re-evaluation user by user,
on test or on validation, beside the mostpop list on the same users."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eisam.report.cli import main
from eisam.report.decoders import decoded_users, table
from eisam.run_files import ITEM_STATS, PREDICTIONS, VALID_PREDICTIONS


def write_predictions(folder: Path, users, targets, lists, groups, file=PREDICTIONS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ranks = [lst.index(t) + 1 if t in lst else -1 for t, lst in zip(targets, lists)]
    pd.DataFrame({"user": users, "target": targets, "target_group": [groups[t] for t in targets], "rank": ranks,
                  "recommended": [" ".join(map(str, lst)) for lst in lists]}).to_csv(folder / file, index=False)


def write_item_stats(folder: Path, groups) -> None:
    """Item i has 30 - i training targets: the mostpop list is items 0..9."""
    pd.DataFrame({"item_idx": range(len(groups)), "item_id": range(len(groups)), "title": "t",
                  "n_train": range(len(groups), 0, -1), "group": groups}).to_csv(folder / ITEM_STATS, index=False)


def test_decoders_are_paired_by_user_and_compared_per_group(tmp_path):
    groups = ["head"] * 5 + ["tail"] * 25
    run, reeval = tmp_path / "run", tmp_path / "run" / "reeval"
    beam = [list(range(10)), list(range(10, 20)), list(range(20, 30))]
    exact = [list(range(5, 15)), list(range(10, 20)), list(range(20, 30))[::-1]]
    write_predictions(run, ["a", "b", "c"], [0, 12, 20], beam, groups)
    write_item_stats(run, groups)
    write_predictions(reeval, ["c", "a", "x"], [20, 0, 7], [exact[2], exact[0], exact[0]], groups)  # x: not in run

    users = decoded_users(run, reeval)
    assert sorted(users.index) == ["a", "c"]
    assert users.overlap.to_dict() == {"a": 5, "c": 10}
    assert users.ndcg_beam["c"] == pytest.approx(1.0) and users.ndcg_exact["c"] == pytest.approx(1 / np.log2(11))
    assert users.hit_exact["a"] == 0 and users.hit_beam["a"] == 1  # the exact list starts at item 5
    assert users.tail_share_beam["a"] == pytest.approx(0.5) and users.tail_share_exact["a"] == pytest.approx(1.0)
    assert users.ndcg_mostpop.to_dict() == {"a": 1.0, "c": 0.0}  # target 0 tops the mostpop list
    text = table(users)
    assert "| overall | 2 |" in text and "| head | 1 |" in text and "| tail | 1 |" in text
    assert "exact − mostpop" in text


def test_validation_lists_are_compared_with_split_valid(tmp_path, capsys):
    groups = ["head"] * 5 + ["tail"] * 25
    run, reeval = tmp_path / "run", tmp_path / "run" / "reeval"
    run.mkdir()
    write_item_stats(run, groups)
    write_predictions(run, ["a", "b"], [3, 25], [list(range(10)), list(range(20, 30))], groups, VALID_PREDICTIONS)
    write_predictions(reeval, ["a", "b"], [3, 25], [list(range(3, 13)), list(range(25, 30)) + list(range(20, 25))], groups, VALID_PREDICTIONS)
    with pytest.raises(SystemExit) as exit:  # the test split's lists are not there
        main(["decoders", str(run)])
    assert exit.value.code == 2 and "no predictions.csv" in capsys.readouterr().err
    main(["decoders", str(run), "--split", "valid"])
    out = capsys.readouterr().out
    assert "| overall | 2 |" in out
    users = decoded_users(run, reeval, VALID_PREDICTIONS)
    assert users.ndcg_exact.tolist() == [1.0, 1.0] and users.ndcg_mostpop.tolist() == pytest.approx([1 / np.log2(5), 0.0])
