"""Hyperparameter selection on validation (experiment=selection, test=false): the run never reads the
test split, its validation NLL is the selected checkpoint's, and the selection table picks the lowest
mean with paired differences computed as by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from eisam.config_check import validate_config
from eisam.pipeline import train
from eisam.report import build_report
from eisam.report.selection import selection_table
from eisam.run_files import VALID_NLL


def test_selection_run_scores_validation_users_and_never_decodes_test(tmp_path, one_thread, monkeypatch):
    import eisam.pipeline
    from eisam.entry import compose_config

    monkeypatch.setattr(eisam.pipeline, "evaluate_split", lambda *a, **k: pytest.fail("a split was decoded"))
    out = tmp_path / "run"
    cfg = compose_config(out, "debug=fast", "test=false", "method=sam", "method.rho=0.2")
    validate_config(cfg)
    train(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "test" not in metrics and not (out / "predictions.csv").exists()
    scores = pd.read_csv(out / VALID_NLL, dtype={"user": str})
    assert len(scores) == metrics["valid"]["n_users"]["overall"] == metrics["data"]["n_samples"]["valid"]
    # the reloaded best checkpoint scores exactly what validation measured when it was selected
    assert metrics["valid"]["overall"]["nll"] == pytest.approx(metrics["selection"]["best_val_nll"], rel=1e-5)
    assert metrics["valid"]["tail"]["nll"] == pytest.approx(scores.nll[scores.target_group == "tail"].mean())

    runs, report = build_report([out], tmp_path / "report")
    table = pd.read_csv(report / "selection.csv")
    assert list(table.users) == ["overall", "head", "tail"] and table.chosen.all()
    assert table.valid_nll[0] == pytest.approx(metrics["valid"]["overall"]["nll"])
    assert "Hyperparameter selection" in (report / "report.md").read_text()


def test_a_trained_runs_validation_rescoring_stands_for_its_selection_job(tmp_path, one_thread):
    """eisam.evaluate with test=false on a main-sweep run scores what a test=false job of the same
    setting and seed scores, user by user, and the selection table reads it as that job."""
    from eisam.entry import compose_config
    from eisam.evaluate import reevaluate

    overrides = ("debug=fast", "method=sam", "method.rho=0.2")
    trained, selected, rescored = tmp_path / "main_run", tmp_path / "selection_run", tmp_path / "rescored"
    train(compose_config(trained, *overrides))
    train(compose_config(selected, *overrides, "test=false"))
    result = reevaluate(trained, {"test": False}, rescored)
    assert "test" not in result and result["reevaluated_from"] == str(trained)
    own, again = (pd.read_csv(folder / VALID_NLL, dtype={"user": str}) for folder in (selected, rescored))
    assert list(again.user) == list(own.user) and len(own) > 0
    np.testing.assert_allclose(again.nll, own.nll, rtol=1e-5)

    runs, report = build_report([rescored], tmp_path / "report")
    table = pd.read_csv(report / "selection.csv")
    assert table.valid_nll[0] == pytest.approx(own.nll.mean(), rel=1e-5)
    assert list(table.method.unique()) == ["sam"] and table.chosen.all()


def test_mostpop_cannot_be_selected_on_validation_nll(smoke_cfg):
    with pytest.raises(ValueError, match="test=false"):
        validate_config(smoke_cfg("method=mostpop", "test=false"))


def test_selection_table_chooses_the_lowest_mean_and_pairs_users(tmp_path):
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in range(30)]
    groups = np.where(np.arange(30) < 10, "head", "tail")
    nll = {0.05: rng.normal(2.0, 0.3, 30)}
    nll[0.2] = nll[0.05] - 0.1 + rng.normal(0, 0.05, 30)  # clearly lower: chosen
    nll[0.5] = nll[0.05] + rng.normal(0, 0.05, 30)
    rows = []
    for rho, scores in nll.items():
        folder = tmp_path / f"rho={rho}"
        folder.mkdir()
        pd.DataFrame({"user": users, "target_group": groups, "nll": scores}).to_csv(folder / VALID_NLL, index=False)
        rows.append({"run": str(folder), "dataset": "d", "method": "sam", "rho": rho, "seed": 0})
    base_nll = nll[0.05] + 0.03 + rng.normal(0, 0.05, 30)
    folder = tmp_path / "base"
    folder.mkdir()
    pd.DataFrame({"user": users, "target_group": groups, "nll": base_nll}).to_csv(folder / VALID_NLL, index=False)
    rows.append({"run": str(folder), "dataset": "d", "method": "base", "rho": None, "seed": 0})
    table = selection_table(pd.DataFrame(rows), ["dataset", "method", "rho"])
    reference = table[(table.users == "overall") & (table.method == "base")].iloc[0]
    assert reference.chosen and np.isnan(reference.diff_vs_base)  # base is the reference, not compared with itself
    table = table[table.method == "sam"]
    overall = table[table.users == "overall"].set_index("rho")
    assert overall.chosen.tolist() == [False, True, False]
    assert overall.valid_nll[0.5] == pytest.approx(nll[0.5].mean())
    expected = stats.ttest_rel(nll[0.5], nll[0.2])
    assert overall.diff_vs_chosen[0.5] == pytest.approx((nll[0.5] - nll[0.2]).mean())
    assert overall.p_vs_chosen[0.5] == pytest.approx(expected.pvalue)
    assert np.isnan(overall.diff_vs_chosen[0.2])
    assert overall.diff_vs_base[0.2] == pytest.approx((nll[0.2] - base_nll).mean())
    assert overall.p_vs_base[0.2] == pytest.approx(stats.ttest_rel(nll[0.2], base_nll).pvalue)
    tail = table[(table.users == "tail") & (table.rho == 0.05)].iloc[0]
    assert tail.n_users == 20 and tail.valid_nll == pytest.approx(nll[0.05][10:].mean())
    assert tail.diff_vs_chosen == pytest.approx((nll[0.05][10:] - nll[0.2][10:]).mean())


def test_train_false_tests_the_zero_shot_recommender(tmp_path, one_thread):
    from safetensors.torch import load_file

    from eisam.entry import compose_config

    out = tmp_path / "run"
    train(compose_config(out, "debug=fast", "train=false"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cost"]["train_steps"] == 0 and metrics["selection"]["best_val_nll"] is None
    lora_b = [w for name, w in load_file(out / "adapter" / "adapter_model.safetensors").items() if "lora_B" in name]
    assert lora_b and all((w == 0).all() for w in lora_b)  # untouched: B starts at zero
    assert metrics["test"]["overall"]["nll"] > 0


def test_train_and_test_must_be_booleans(smoke_cfg):
    with pytest.raises(ValueError, match="train must be true or false"):
        validate_config(smoke_cfg("train=maybe"))
