"""End-to-end: the real composed config on CPU (tiny Llama, synthetic data) and its run files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from eisam.pipeline import train


def test_smoke_run_writes_the_run_files(smoke_cfg, tmp_path):
    result = train(smoke_cfg())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result))
    numerics = metrics["run"].pop("numerics")
    assert metrics["run"] == {"dataset": "synthetic", "method": "base", "model": "tiny_llama", "seed": 0,
                              "compute_dtype": "float32"}
    assert numerics.startswith(f"torch {torch.__version__}, ") and numerics.endswith(f"{torch.get_num_threads()} threads")
    hygiene = ("dropped_exact_duplicates", "dropped_repeated_pairs",
               "test_targets_in_history", "valid_targets_in_history")
    assert {key: metrics["data"][key] for key in hygiene} == dict.fromkeys(hygiene, 0)  # the report reads these keys
    test = metrics["test"]
    for group in ("overall", "head", "tail"):
        assert set(test[group]) >= {"hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20", "nll"}
    assert test["n_users"]["overall"] == test["n_users"]["head"] + test["n_users"]["tail"]
    assert 0.0 <= test["tail_share@10"] <= 1.0 and 0.0 < test["coverage@10"] <= 1.0
    cost = metrics["cost"]
    assert cost["train_steps"] > 0 and cost["forward_passes"] == cost["train_steps"]  # base: 1 forward
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert len(predictions) == test["n_users"]["overall"]
    assert {"user", "target", "target_group", "rank", "recommended"} <= set(predictions.columns)
    stats = pd.read_csv(tmp_path / "item_stats.csv")
    assert {"item_id", "title", "n_train", "group"} <= set(stats.columns)
    assert (tmp_path / "adapter" / "adapter_config.json").exists()


def test_debug_run_with_exact_search_writes_exact_ranks(tmp_path):
    """decoding.search=exact end to end through the real entry: exact ranks in predictions, MRR in metrics."""
    from eisam.entry import compose_config

    train(compose_config(tmp_path, "debug=fast", "logger=csv", "decoding.search=exact", "decoding.rank_cap=30",
                         "data.max_eval_users=4"))
    test = json.loads((tmp_path / "metrics.json").read_text())["test"]
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert test["rank_cap"] == 30 and len(predictions) == 4
    exact = predictions["exact_rank"]
    assert ((exact == -1) | exact.between(1, 30)).all()
    assert (predictions["rank"] == exact.where(exact.between(1, 20), -1)).all()  # the list is the exact top-20
    reciprocal = exact.map(lambda r: 1 / r if r > 0 else 0.0)
    assert test["overall"]["mrr@30"] == pytest.approx(reciprocal.mean())
    tail = predictions["target_group"] == "tail"
    assert test["tail"]["mrr@30"] == (pytest.approx(reciprocal[tail].mean()) if tail.any() else None)


def test_mostpop_recommends_the_most_frequent_training_targets(smoke_cfg, tmp_path):
    from hydra.utils import instantiate

    from eisam.entry import compose_config

    cfg = smoke_cfg("method=mostpop", "logger=csv")
    metrics = train(cfg)
    data = instantiate(compose_config(tmp_path / "again", "scale=smoke").data)
    counts = pd.Series([s.target for s in data.train]).value_counts()
    top10 = sorted(counts.index, key=lambda item: (-counts[item], item))[:10]  # ties by item index
    hits = [s.target in top10 for s in data.test]
    assert metrics["test"]["overall"]["hr@10"] == pytest.approx(sum(hits) / len(hits))
    assert metrics["test"]["tail_share@10"] == 0.0 and metrics["test"]["overall"]["nll"] is None
    assert metrics["cost"]["forward_passes"] == metrics["cost"]["backward_passes"] == 0
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert len(predictions) == len(data.test) and not (tmp_path / "adapter").exists()
    (logged,) = (tmp_path / "csv").rglob("metrics.csv")  # the logger got the final metrics too
    assert pd.read_csv(logged)["test/overall/hr@10"].iloc[-1] == metrics["test"]["overall"]["hr@10"]


@pytest.mark.parametrize(
    "override, culprit",
    [
        ("method=sam method.rho=-0.1", "rho"),
        ("decoding.num_beams=5", "num_beams"),
        ("data.head_ratio=1.5", "head_ratio"),
        ("batch_size=0", "batch_size"),
    ],
)
def test_bad_config_value_stops_before_work(smoke_cfg, tmp_path, override, culprit):
    with pytest.raises(ValueError, match=culprit):
        train(smoke_cfg(*override.split()))
    assert not (tmp_path / "metrics.json").exists()


def test_cli_writes_resolved_config_and_rejects_unknown_options(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "eisam.train", "scale=smoke", "trainer.limit_train_batches=2",
           f"hydra.run.dir={run_dir}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "metrics.json").exists()

    bad = subprocess.run([*cmd[:-1], "method=nonexistent", f"hydra.run.dir={tmp_path / 'bad'}"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "nonexistent" in bad.stderr
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_lr_schedule_counts_the_steps_of_one_process_through_its_shard(smoke_cfg):
    from eisam.pipeline import processes, total_train_steps

    one = smoke_cfg("batch_size=4", "trainer.max_epochs=3")
    assert processes(one.trainer) == 1 and total_train_steps(one, 101) == 3 * 26
    ddp = smoke_cfg("batch_size=4", "trainer.max_epochs=3", "trainer=ddp_cpu")  # 2 processes: shards of 51
    assert processes(ddp.trainer) == 2 and total_train_steps(ddp, 101) == 3 * 13
    nodes = smoke_cfg("batch_size=4", "trainer=ddp_cpu", "trainer.devices=[0,1,2]", "+trainer.num_nodes=2")
    assert processes(nodes.trainer) == 6 and total_train_steps(nodes, 101) == 5  # shards of 17



def test_epochs_keep_the_best_validation_checkpoint_and_log_the_gap(smoke_cfg, tmp_path):
    """Several epochs: the tested weights are the epoch of lowest val/nll (best_val_nll is that value), and
    every validation logs the validation and training-probe NLL overall, on head and on tail targets."""
    metrics = train(smoke_cfg("trainer.max_epochs=2", "method.lr=0.01"))
    (logged,) = (tmp_path / "csv").rglob("metrics.csv")
    per_epoch = pd.read_csv(logged).dropna(subset=["val/nll"])
    assert len(per_epoch) == 2
    for prefix in ("val", "probe"):
        nll = per_epoch[[f"{prefix}/nll", f"{prefix}/head_nll", f"{prefix}/tail_nll"]].to_numpy()
        assert np.isfinite(nll).all() and (nll.min(axis=1) <= nll[:, 0]).all() and (nll[:, 0] <= nll.max(axis=1)).all()
    assert not np.allclose(per_epoch["val/nll"], per_epoch["probe/nll"])
    assert metrics["selection"]["best_val_nll"] == pytest.approx(per_epoch["val/nll"].min(), rel=1e-6)
