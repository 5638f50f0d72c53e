"""The report on hand-made run folders (no training): pairing, significance, missing and
superseded runs, setting columns and figures. The statistics themselves: test_report_stats.py;
the report of a real sweep: test_experiments.py."""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from eisam.metrics.ranking import case_hit_ndcg, hit_ndcg
from eisam.report import build_report, load_runs
from eisam.report.cli import main
from eisam.report.stats import holm

N_ITEMS, N_USERS = 50, 40
METHODS = {  # name: (kind, weights, direction)
    "base": ("weighted", "uniform", "current"),
    "sam": ("sam", "uniform", "current"),
    "eisam": ("sam", "power", "current"),
    "eisam_fast": ("sam", "power", "previous"),
    "groupsam": ("group", "power", "current"),
}


def fake_run(folder, method="base", seed=0, ranks=None, task="main", finished=True, variant=None,
             rho=0.05, lam=1.0, groups=4, seconds_per_step=1.0, exact_ranks=None, in_history=0, numerics=None):
    """A run folder as a multirun job leaves it: .hydra/config.yaml, config.yaml, item_stats.csv and,
    if it finished, predictions.csv (with exact_rank when given) and metrics.json."""
    kind, weights, direction = METHODS[method]
    folder.mkdir(parents=True)
    cfg = {"task_name": task, "seed": seed, "data": {"name": "toy", "max_train_samples": None, "max_eval_users": None},
           "model": {"name": "tiny"}, "method": {"name": method, "kind": kind, "weights": weights, "alpha": 0.5,
                                                 "rho": rho, "lam": lam, "adaptive": False, "direction": direction,
                                                 "groups": groups}}
    if variant:
        cfg["variant"] = variant
    (folder / ".hydra").mkdir()
    for name in (".hydra/config.yaml", "config.yaml"):
        (folder / name).write_text(yaml.safe_dump(cfg))
    n_train = np.arange(N_ITEMS)[::-1]  # item 0 most popular
    head = n_train >= np.quantile(n_train, 0.8)
    pd.DataFrame({"item_idx": range(N_ITEMS), "item_id": range(N_ITEMS), "title": "t", "n_train": n_train,
                  "group": np.where(head, "head", "tail")}).to_csv(folder / "item_stats.csv", index=False)
    if not finished:
        return folder
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, N_ITEMS, N_USERS)
    ranks = rng.integers(-1, 21, N_USERS) if ranks is None else np.asarray(ranks)
    nll = np.random.default_rng([seed, list(METHODS).index(method)]).uniform(1, 3, N_USERS)  # differs by method
    predictions = pd.DataFrame({"user": [f"u{i}" for i in range(N_USERS)], "target": targets, "rank": ranks, "nll": nll})
    if exact_ranks is not None:
        predictions["exact_rank"] = exact_ranks
    predictions.to_csv(folder / "predictions.csv", index=False)
    test = {g: hit_ndcg(ranks[m]) for g, m in
            (("overall", np.ones(N_USERS, bool)), ("head", head[targets]), ("tail", ~head[targets]))}
    for group, mask in (("overall", np.ones(N_USERS, bool)), ("head", head[targets]), ("tail", ~head[targets])):
        test[group]["nll"] = float(nll[mask].mean())
    test["tail_share@10"], test["coverage@10"] = float(rng.uniform()), float(rng.uniform())
    cost = {"train_steps": 10, "train_seconds": 10 * seconds_per_step, "seconds_per_step": seconds_per_step,
            "forward_passes": 20, "backward_passes": 30, "peak_memory_mb": 100.0}
    (folder / "metrics.json").write_text(json.dumps({"data": {"test_targets_in_history": in_history}, "test": test,
                                                     "cost": cost, **({"run": {"numerics": numerics}} if numerics else {})}))
    return folder


def test_significance_and_tail_gain_pair_users_with_base_within_seed(tmp_path):
    rng = np.random.default_rng(0)
    ranks = {(m, s): rng.integers(-1, 21, N_USERS) for m in ("base", "eisam") for s in (0, 1)}
    for (method, seed), r in ranks.items():
        fake_run(tmp_path / "sweep" / f"{method}{seed}", method, seed, r)

    build_report([tmp_path / "sweep"], tmp_path / "out")

    comparisons = pd.read_csv(tmp_path / "out" / "comparisons.csv")
    row = comparisons.query("method == 'eisam' and vs == 'base' and users == 'overall' and metric == 'ndcg@10'").iloc[0]
    per_user = {m: np.mean([case_hit_ndcg(ranks[m, s], 10)[1] for s in (0, 1)], axis=0) for m in ("base", "eisam")}
    expected = stats.ttest_rel(per_user["eisam"], per_user["base"])  # each user's seeds averaged, then paired
    assert row.p == pytest.approx(expected.pvalue)
    assert row["diff"] == pytest.approx(np.mean(per_user["eisam"] - per_user["base"]))
    assert (row.lo, row.hi) == pytest.approx(tuple(expected.confidence_interval(0.95)))
    assert row.n_users == N_USERS and row.seeds == 2
    within = {s: np.mean(case_hit_ndcg(ranks["eisam", s], 10)[1] - case_hit_ndcg(ranks["base", s], 10)[1]) for s in (0, 1)}
    assert ast.literal_eval(row.by_seed) == pytest.approx(within, abs=1e-6)  # each seed's own difference
    shown = (tmp_path / "out" / "comparisons.md").read_text()
    assert "Δ NDCG@10 per seed" in shown and f"s0 {within[0]:+.4f}, s1 {within[1]:+.4f}" in shown
    assert row.p_holm == pytest.approx(row.p)  # one method against base: a family of one
    assert set(comparisons.vs) == {"base"}  # no sam runs: nothing to compare with
    assert "NDCG@10 vs `base`" in (tmp_path / "out" / "report.md").read_text()  # the detectable difference
    table = pd.read_csv(tmp_path / "out" / "accuracy.csv").set_index("method")
    runs = load_runs([tmp_path / "sweep"]).set_index(["method", "seed"])["test/tail/ndcg@10"]
    expected = runs["eisam"].mean() / runs["base"].mean() - 1
    assert table.loc["eisam", "tail_gain_vs_base"] == pytest.approx(expected)
    assert table.loc["eisam", "overall/ndcg@10_std"] == pytest.approx(
        load_runs([tmp_path / "sweep"]).query("method == 'eisam'")["test/overall/ndcg@10"].std())
    lo, mean, hi = table.loc["eisam", ["overall/ndcg@10_lo", "overall/ndcg@10_mean", "overall/ndcg@10_hi"]]
    assert lo < mean < hi
    assert np.isnan(table.loc["base", "tail_gain_vs_base"])


def test_a_score_a_method_lacks_leaves_its_per_seed_cell_empty(tmp_path):
    for method in ("base", "eisam"):
        for seed in (0, 1):
            folder = fake_run(tmp_path / "sweep" / f"{method}{seed}", method, seed)
            if method == "eisam":  # as mostpop writes it: no model, so no target NLL
                predictions = pd.read_csv(folder / "predictions.csv")
                predictions.assign(nll=np.nan).to_csv(folder / "predictions.csv", index=False)

    build_report([tmp_path / "sweep"], tmp_path / "out")

    shown = pd.read_csv(tmp_path / "out" / "comparisons.csv")
    assert shown.query("metric == 'ndcg@10'").by_seed.map(lambda s: len(ast.literal_eval(s))).eq(2).all()
    rows = [line for line in (tmp_path / "out" / "comparisons.md").read_text().splitlines() if "| eisam |" in line]
    assert rows and all("nan" not in line and line.endswith("|  |  |  |") for line in rows)


def test_other_reference_methods_on_request(tmp_path):
    for seed in (0, 1):
        for method in ("base", "sam", "eisam"):
            fake_run(tmp_path / "runs" / f"{method}{seed}", method, seed)
    build_report([tmp_path / "runs"], tmp_path / "out", references=("eisam",))
    table = pd.read_csv(tmp_path / "out" / "comparisons.csv")
    assert set(table.vs) == {"eisam"} and set(table.method) == {"base", "sam"}
    assert "## Paired comparisons against `eisam`" in (tmp_path / "out" / "report.md").read_text()
    assert "vs `eisam`" in (tmp_path / "out" / "report.md").read_text()  # its minimum detectable differences


def test_runs_paired_across_numerics_are_named(tmp_path):
    avx512, avx2 = "torch 2.13.0, cpu AVX512, 2 threads", "torch 2.13.0, cpu AVX2, 2 threads"
    fake_run(tmp_path / "same" / "b0", "base", 0, numerics=avx512)
    fake_run(tmp_path / "same" / "e0", "eisam", 0, numerics=avx512)
    build_report([tmp_path / "same"], tmp_path / "out_same")
    assert f"Numerics of every run that records them: {avx512}.\n" in (tmp_path / "out_same" / "report.md").read_text()

    fake_run(tmp_path / "mixed" / "b0", "base", 0, numerics=avx2)  # an earlier sitting on another machine
    fake_run(tmp_path / "mixed" / "e0", "eisam", 0, numerics=avx512)
    fake_run(tmp_path / "mixed" / "b1", "base", 1, numerics=avx512)
    fake_run(tmp_path / "mixed" / "e1", "eisam", 1)  # older than the field: cannot be checked, not a mismatch
    build_report([tmp_path / "mixed"], tmp_path / "out_mixed")
    report = (tmp_path / "out_mixed" / "report.md").read_text()
    assert "**Paired runs with different numerics**" in report and "Not recorded for 1 run(s)" in report
    assert f"- dataset toy, model tiny, compute_dtype float32, seed 0: base: {avx2}; eisam: {avx512}\n" in report
    assert "seed 1:" not in report
    runs = pd.read_csv(tmp_path / "out_mixed" / "runs.csv")
    assert runs.set_index("run").numerics.isna().sum() == 1


def test_reciprocal_rank_holm_over_methods_sam_as_reference_and_targets_in_history(tmp_path):
    rng = np.random.default_rng(3)
    exact = {m: rng.choice([-1, 1, 2, 5, 30], N_USERS) for m in ("base", "sam", "eisam")}
    for method, ranks in exact.items():
        fake_run(tmp_path / "sweep" / method, method, ranks=np.where(ranks <= 20, ranks, -1), exact_ranks=ranks,
                 in_history=3 if method == "eisam" else 0)

    build_report([tmp_path / "sweep"], tmp_path / "out")

    rr = {m: np.where(r >= 1, 1 / np.maximum(r, 1), 0.0) for m, r in exact.items()}  # -1 (beyond the cap) is 0
    accuracy = pd.read_csv(tmp_path / "out" / "accuracy.csv").set_index("method")
    assert accuracy.loc["eisam", "overall/rr_mean"] == pytest.approx(rr["eisam"].mean())
    comparisons = pd.read_csv(tmp_path / "out" / "comparisons.csv").set_index(["method", "vs", "users", "metric"])
    assert comparisons.loc[("eisam", "sam", "overall", "rr"), "diff"] == pytest.approx((rr["eisam"] - rr["sam"]).mean())
    assert comparisons.loc[("eisam", "base", "overall", "nll"), "p"] == pytest.approx(stats.ttest_rel(
        *(pd.read_csv(tmp_path / "sweep" / m / "predictions.csv").nll for m in ("eisam", "base"))).pvalue)
    assert {("base", "sam"), ("sam", "base"), ("eisam", "sam")} <= {k[:2] for k in comparisons.index}
    p = comparisons.xs(("base", "overall", "ndcg@10"), level=["vs", "users", "metric"])
    assert list(p.p_holm) == pytest.approx(list(holm(p.p)))  # sam and eisam: one family
    shown = (tmp_path / "out" / "accuracy.md").read_text()
    assert "| toy (3 test targets in history) | eisam |" in shown and "| toy | sam |" in shown
    assert "overall MRR" in shown
    assert "per seed" not in (tmp_path / "out" / "comparisons.md").read_text()  # one seed: the interval says it all


def test_longtail_table_averages_nll_tail_share_and_coverage_over_seeds(tmp_path):
    folders = [fake_run(tmp_path / "sweep" / f"eisam{seed}", "eisam", seed) for seed in (0, 1, 2)]
    build_report([tmp_path / "sweep"], tmp_path / "out")
    row = pd.read_csv(tmp_path / "out" / "longtail.csv").iloc[0]
    tests = [json.loads((f / "metrics.json").read_text())["test"] for f in folders]
    assert row["tail/nll_mean"] == pytest.approx(np.mean([t["tail"]["nll"] for t in tests]))
    assert row["tail_share@10_std"] == pytest.approx(np.std([t["tail_share@10"] for t in tests], ddof=1))
    assert row["coverage@10_mean"] == pytest.approx(np.mean([t["coverage@10"] for t in tests]))
    assert "tail NLL" in (tmp_path / "out" / "report.md").read_text()


def test_unfinished_runs_are_named_and_the_newest_rerun_counts(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    old = fake_run(sweep / "a", "eisam", ranks=np.full(N_USERS, 2))
    new = fake_run(sweep / "b", "eisam", ranks=np.full(N_USERS, 1))
    os.utime(old / "metrics.json", (1, 1))  # older than b
    fake_run(sweep / "c", "base")
    failed = fake_run(sweep / "d", "eisam_fast", finished=False)
    (failed / "error.txt").write_text("Traceback ...\nRuntimeError: out of memory\n")

    main(["tables", str(sweep), "--out", str(tmp_path / "out")])

    runs = pd.read_csv(tmp_path / "out" / "runs.csv").set_index("run")
    assert runs.status.to_dict() == {str(old): "superseded", str(new): "ok", str(sweep / "c"): "ok",
                                     str(failed): "missing"}
    accuracy = pd.read_csv(tmp_path / "out" / "accuracy.csv").set_index("method")
    assert accuracy.loc["eisam", "overall/ndcg@10_mean"] == 1.0  # rank 1 everywhere: the newer run
    for text in ((tmp_path / "out" / "missing.md").read_text(), (tmp_path / "out" / "report.md").read_text(),
                 capsys.readouterr().out):
        assert str(failed) in text and "RuntimeError: out of memory" in text


def test_tables_show_what_varies_beyond_the_method(tmp_path):
    for variant, lam in (("full", 1.0), ("lam0", 0.0)):
        fake_run(tmp_path / "ablation" / variant, "eisam", task="ablation", variant=variant, lam=lam)
    build_report([tmp_path / "ablation"], tmp_path / "out", only="tables")
    columns = list(pd.read_csv(tmp_path / "out" / "accuracy.csv").columns)
    assert columns[:4] == ["dataset", "method", "variant", "seeds"]  # lam follows from the variant
    assert "| toy | eisam | lam0 | 1 |" in (tmp_path / "out" / "accuracy.md").read_text()
    assert not list((tmp_path / "out").glob("*.png"))


def test_efficiency_and_sensitivity_figures(tmp_path):
    for g in (1, 2, 4):
        fake_run(tmp_path / "eff" / f"g{g}", "groupsam", task="efficiency", groups=g, seconds_per_step=1.0 + g)
    fake_run(tmp_path / "eff" / "eisam", "eisam", task="efficiency", seconds_per_step=2.0)
    for rho in (0.01, 0.1):
        for lam in (0.5, 1.0):
            fake_run(tmp_path / "sens" / f"{rho}-{lam}", "eisam", task="sensitivity", rho=rho, lam=lam)

    build_report([tmp_path / "eff"], tmp_path / "eff_out", only="figures")
    build_report([tmp_path / "sens"], tmp_path / "sens_out")

    assert (tmp_path / "eff_out" / "efficiency.png").stat().st_size > 0
    assert not (tmp_path / "eff_out" / "accuracy.csv").exists()
    efficiency = pd.read_csv(tmp_path / "sens_out" / "efficiency.csv")
    assert list(efficiency.forward_per_step) == [2.0] * 4 and list(efficiency.backward_per_step) == [3.0] * 4
    assert {"rho", "lam"} <= set(pd.read_csv(tmp_path / "sens_out" / "accuracy.csv").columns)
    for name in ("sensitivity", "head_tail", "popularity_bins"):
        assert (tmp_path / "sens_out" / f"{name}.png").stat().st_size > 0


def test_collect_copies_finished_runs_without_weights_and_their_report_rebuilds(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    old = fake_run(sweep / "old" / "eisam", "eisam", ranks=np.full(N_USERS, 2))
    new = fake_run(sweep / "new" / "eisam0", "eisam", ranks=np.full(N_USERS, 1))
    os.utime(old / "metrics.json", (1, 1))  # superseded by the newer rerun
    base = fake_run(sweep / "base", "base")
    (base / "checkpoints").mkdir()
    (base / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    unfinished = fake_run(sweep / "sam", "sam", finished=False)

    main(["collect", str(sweep), "--out", str(tmp_path / "runs")])

    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["base", "eisam0"]
    assert sorted(p.name for p in (tmp_path / "runs" / "base").iterdir()) == [
        "config.yaml", "item_stats.csv", "metrics.json", "predictions.csv"]
    out = capsys.readouterr().out
    assert "2 finished runs" in out and f"left out (missing): {unfinished}" in out and f"left out (superseded): {old}" in out
    build_report([tmp_path / "runs"], tmp_path / "rebuilt")
    build_report([sweep], tmp_path / "original")
    for table in ("accuracy.csv", "comparisons.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "rebuilt" / table),  # the unfinished run turns ints to floats
                                      pd.read_csv(tmp_path / "original" / table), check_dtype=False)


def test_collect_again_replaces_an_earlier_copy_and_drops_its_stale_files(tmp_path, monkeypatch):
    run = fake_run(tmp_path / "sweep" / "eisam", "eisam", ranks=np.full(N_USERS, 2))
    out = tmp_path / "runs"
    main(["collect", str(tmp_path / "sweep"), "--out", str(out)])
    (out / "eisam" / "valid_nll.csv").write_text("user,nll\n")  # a file the rerun no longer writes
    shutil.rmtree(run)
    fake_run(run, "eisam", ranks=np.full(N_USERS, 1))  # the run is redone in place

    copy = shutil.copy2
    def copy_until_metrics(source, target):
        if Path(target).name == "metrics.json":
            raise KeyboardInterrupt  # interrupted before the re-copy finishes
        return copy(source, target)
    monkeypatch.setattr(shutil, "copy2", copy_until_metrics)
    with pytest.raises(KeyboardInterrupt):
        main(["collect", str(tmp_path / "sweep"), "--out", str(out)])
    assert not (out / "eisam" / "metrics.json").exists()  # the half-copied run does not look finished
    assert not (out / "eisam" / "valid_nll.csv").exists()

    monkeypatch.setattr(shutil, "copy2", copy)
    main(["collect", str(tmp_path / "sweep"), "--out", str(out)])
    pd.testing.assert_frame_equal(pd.read_csv(out / "eisam" / "predictions.csv"), pd.read_csv(run / "predictions.csv"))
    assert (out / "eisam" / "metrics.json").read_text() == (run / "metrics.json").read_text()


def test_collect_refuses_two_runs_of_one_name_before_copying(tmp_path):
    fake_run(tmp_path / "a" / "run", "base")
    fake_run(tmp_path / "b" / "run", "eisam")
    with pytest.raises(SystemExit) as exit:
        main(["collect", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "runs")])
    assert exit.value.code == 2 and not (tmp_path / "runs").exists()
