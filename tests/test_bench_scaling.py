"""scripts/bench_scaling.py --quick end to end: every key of the JSON, passes that match each method's
definition (the per-item reference's grow with the distinct items), the table and the figures."""

from __future__ import annotations

import json

import pytest

from conftest import load_script

bench_scaling = load_script("bench_scaling")

TOP = {"command", "machine", "quick", "settings", "catalogues", "slopes", "figures", "wall_s"}
CATALOGUE = {"n_items", "n_users", "train_samples", "title_tokens", "head_share_of_train_targets", "setup_s",
             "setup_mb", "item_stats_s", "item_stats_mb", "item_stats_table_mb", "item_stats_csv_s",
             "item_stats_csv_mb", "tree_s", "tree_mb", "tree_tensor_mb", "tree_nodes", "tree_root_degree",
             "tree_max_degree", "users", "beam_s_per_user", "decode_mb", "exact_s_per_user",
             "exact_expanded_per_user", "exact_expanded_max", "training", "load_average_1min"}
TRAINING = {"batch_size", "distinct_items", "method", "s_per_step", "seconds", "forward", "backward", "step_mb"}
FIXED_PASSES = {"base": (1, 1), "sam": (2, 2), "eisam": (2, 3), "eisam_fast": (2, 2)}


def test_quick_run_writes_every_cost(tmp_path, one_thread):
    bench_scaling.main(["--quick", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "scaling.json").read_text())
    assert set(result) == TOP and result["quick"] and result["wall_s"] > 0
    assert result["machine"]["torch_threads"] == 1
    quick = bench_scaling.QUICK
    assert [r["n_items"] for r in result["catalogues"]] == quick["sizes"]
    for row in result["catalogues"]:
        assert set(row) == CATALOGUE
        assert 3 <= row["title_tokens"]["min"] and row["title_tokens"]["max"] <= 10
        assert row["tree_nodes"] > row["n_items"] and row["users"] == quick["users"]
        assert all(row[k] > 0 for k in ("setup_s", "item_stats_s", "tree_s", "beam_s_per_user", "exact_s_per_user"))
        labels = {(t["method"], t["batch_size"]) for t in row["training"]}
        methods = [*bench_scaling.METHODS, *(f"groupsam G={g}" for g in quick["groups"]), bench_scaling.PER_ITEM]
        assert labels == {(m, b) for m in methods for b in quick["batch_sizes"]}
        for t in row["training"]:
            assert set(t) == TRAINING and t["s_per_step"] > 0 and len(t["seconds"]) == quick["reps"]
            passes = (t["forward"], t["backward"])
            if t["method"] in FIXED_PASSES:
                assert passes == FIXED_PASSES[t["method"]], t
            elif t["method"] == bench_scaling.PER_ITEM:  # one perturbation per distinct item
                assert passes == (1 + t["distinct_items"], 2 * t["distinct_items"]), t
            else:  # GroupSAM: 1 + G' forwards, 2 G' backwards for the G' groups present
                present = t["backward"] // 2
                assert t["forward"] == 1 + present and 1 <= present <= int(t["method"].split("=")[1]), t
    fits = result["slopes"]
    assert set(fits["catalogue_vs_items"]) == set(bench_scaling.CATALOGUE_COSTS)
    assert fits["catalogue_vs_items"]["tree_nodes"] > 0.5  # nodes grow with the catalogue: a fit that can fail
    assert set(fits["training_vs_items"]) == {f"{m} B={b}" for m, b in labels}
    assert set(fits["training_vs_distinct"]) == set(methods)
    assert all(set(f) == {"passes", "s_per_step"} for f in fits["training_vs_distinct"].values())
    assert fits["training_vs_distinct"]["base"]["passes"] == 0  # 1/1 whatever the batch holds
    assert fits["training_vs_distinct"][bench_scaling.PER_ITEM]["passes"] > 0.5
    assert all((tmp_path / name).stat().st_size > 0 for name in result["figures"])
    table = (tmp_path / "scaling.md").read_text()
    assert "| per_item |" in table
    bench_scaling.main(["--from-json", str(tmp_path / "scaling.json"), "--out", str(tmp_path / "again")])
    assert (tmp_path / "again" / "scaling.md").read_text() == table  # the fits and table come from the JSON alone


@pytest.mark.parametrize("argv", [["--sizes", "50"], ["--batch-sizes", "0"], ["--groups", "500", "--sizes", "300"]])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        bench_scaling.parse_args(argv)
    assert "error:" in capsys.readouterr().err
