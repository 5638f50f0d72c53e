"""The field's reference rows (eisam.reference): RecBole's SASRec and GRU4Rec on this repo's split."""

import pandas as pd
import pytest
import torch

from eisam.config_check import validate_config
from eisam.data.load import load_rec_data
from eisam.pipeline import train
from eisam.reference import import_recbole, per_row_len, write_benchmark_files


@pytest.mark.parametrize("method", ["sasrec", "gru4rec"])
def test_reference_ranks_agree_with_recboles_own_evaluation(smoke_cfg, tmp_path, method):
    """Our full-catalogue ranking of the best epoch reproduces the validation NDCG@10 that RecBole's own
    evaluator gave that epoch (rounded to 4 digits): items and histories are mapped to RecBole's ids and
    back correctly, and the tested weights are the early-stopped best."""
    cfg = smoke_cfg(f"method={method}", "method.epochs=4", "method.stopping_step=1", "data.max_eval_users=null")
    metrics = train(cfg)
    valid_ndcg, best = metrics["valid"]["overall"]["ndcg@10"], metrics["selection"]["best_valid_score"]
    assert best > 0 and valid_ndcg == pytest.approx(best, abs=5.1e-5)
    test, cost, n_items = metrics["test"], metrics["cost"], len(pd.read_csv(tmp_path / "item_stats.csv"))
    assert test["overall"]["nll"] is None and test["rank_cap"] == n_items
    assert 1 <= cost["epochs"] <= 4 and cost["train_steps"] > 0
    assert (tmp_path / "recbole_model.pth").exists() and not (tmp_path / "recbole").exists()
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    in_top = predictions["rank"] > 0
    assert (predictions.exact_rank.between(1, n_items)).all()
    assert (predictions["rank"][in_top] == predictions.exact_rank[in_top]).all()  # the top-10 list is the ranking's head
    assert (predictions.exact_rank[~in_top] > 10).all()
    assert test["overall"][f"mrr@{n_items}"] == pytest.approx((1 / predictions.exact_rank).mean())


def test_benchmark_files_hold_every_sample_and_the_whole_catalogue(tmp_path):
    data = load_rec_data(name="synthetic", source="synthetic", max_train_samples=50, seed=0)
    folder = tmp_path / "split"
    write_benchmark_files(data, folder)
    train = pd.read_csv(folder / "split.train.inter", sep="\t", dtype=str)
    assert list(train.columns) == ["user_id:token", "item_id_list:token_seq", "item_id:token"]
    assert len(train) == 50 and train["item_id_list:token_seq"].iloc[0] == " ".join(map(str, data.train[0].history))
    assert len(pd.read_csv(folder / "split.item", sep="\t")) == len(data.items)


def test_importing_recbole_leaves_anomaly_detection_off():
    import_recbole()
    assert not torch.is_anomaly_enabled()  # RecBole's SINE module turns it on for the whole process


def test_per_row_len_restores_pandas():
    series = pd.Series([[1, 2], [3]])
    with per_row_len():
        assert series.agg(len).tolist() == [2, 1]
    assert series.agg(len) == 2


@pytest.mark.parametrize("override, culprit", [("+method.hidden_size=128", "method.hidden_size"),
                                                ("test=false", "has none")])
def test_bad_reference_config_stops_before_work(smoke_cfg, override, culprit):
    with pytest.raises(ValueError, match=culprit):
        validate_config(smoke_cfg("method=sasrec", override))
