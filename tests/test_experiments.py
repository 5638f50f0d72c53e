"""Experiment configs (composed and validated, never run), and one real multirun: a failed job
does not stop the sweep, every job ends its own wandb run, and the report reads the sweep."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import compose_config, wandb_records
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from eisam.entry import CONFIG_PATH
from eisam.config_check import validate_config
from eisam.report import build_report
from eisam.train import objective_value

SWEEPS = {"main": 72, "ablation": 24, "sensitivity": 20, "efficiency": 12}


def experiment(name: str, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}", *overrides], return_hydra_config=True)


def sweep_jobs(cfg, *cli: str) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches: the experiment's sweep params, then the command line."""
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params + list(cli)), None)[0]


@pytest.mark.parametrize("name, n_jobs", SWEEPS.items())
def test_experiment_sweeps_compose_into_valid_jobs(name, n_jobs, tmp_path):
    cfg = experiment(name)
    assert cfg.task_name == name and cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    jobs = sweep_jobs(cfg)
    assert len(jobs) == n_jobs
    seen = set()
    for job in jobs:  # every swept value once, validated as the job would be (nothing is run)
        if set(job) - seen:
            seen |= set(job)
            validate_config(compose_config(tmp_path, f"experiment={name}", "scale=smoke", *job))


def test_variants_and_group_presets_reach_the_method(tmp_path):
    lam0 = compose_config(tmp_path, "experiment=ablation", "method=eisam", "+variant=lam0")
    assert (lam0.variant, lam0.method.lam, lam0.method.weights) == ("lam0", 0.0, "power")
    g16 = compose_config(tmp_path, "experiment=efficiency", "method=groupsam_g16")
    assert (g16.method.name, g16.method.groups, g16.trainer.max_steps) == ("groupsam", 16, 50)


def make_reproduce_jobs(target: str, scale: str = "cpu") -> list[list[tuple[str, ...]]]:
    """The jobs of `make <target> SCALE=<scale>`, stage by stage, from the recipe make would run."""
    script = subprocess.run(["make", "-n", "-s", target, f"SCALE={scale}"], cwd=Path(CONFIG_PATH).parent, check=True,
                            capture_output=True, text=True).stdout
    stages = re.search(r'read -ra stages <<< "(.*?)";', script).group(1).split("|")
    return [[tuple(sorted(job)) for job in sweep_jobs(experiment("main"), *stage.split())] for stage in stages]


def test_make_reproduce_runs_the_powered_main_sweep_at_cpu_scale_in_stages():
    stages = make_reproduce_jobs("reproduce")
    jobs = [job for stage in stages for job in stage]
    assert len(jobs) == len(set(jobs)) == 10 and all("data=ml100k" in job for job in jobs)
    seeds = {}
    for job in jobs:
        options = dict(o.split("=", 1) for o in job)
        seeds.setdefault(options["method"], set()).add(options["seed"])
    assert seeds == {"mostpop": {"0"}, "base": {"0", "1", "2"}, "sam": {"0", "1", "2"}, "eisam": {"0", "1", "2"}}
    first = [dict(o.split("=", 1) for o in job)["method"] for job in stages[0]]
    assert first[:3] == ["mostpop", "base", "eisam"]  # the decisive comparison first

    more = [job for stage in make_reproduce_jobs("reproduce-more") for job in stage]
    assert not set(more) & set(jobs)
    assert {dict(o.split("=", 1) for o in job)["method"] for job in more} == {
        "eisam_fast", "imbsam", "reweight_ips", "reweight_cb"}


def test_make_reproduce_at_the_long_regime_runs_the_candidate_base_beside_the_references(tmp_path):
    """SCALE=cpu_long: three seeds of base, sam, eisam, mostpop and both RecBole references, every job a valid
    config of the candidate regime (attention + MLP LoRA, 4 epochs, the base search's lr, best epoch kept)."""
    jobs = [job for stage in make_reproduce_jobs("reproduce", "cpu_long") for job in stage]
    assert len(jobs) == len(set(jobs)) == 18
    methods = {dict(o.split("=", 1) for o in job)["method"] for job in jobs}
    assert methods == {"mostpop", "sasrec", "gru4rec", "base", "sam", "eisam"}
    for job in jobs:
        if "seed=0" in job:
            validate_config(compose_config(tmp_path, "experiment=main", "scale=cpu_long", *job))
    cfg = compose_config(tmp_path, "experiment=main", "scale=cpu_long", "method=eisam", "data=ml100k")
    assert "gate_proj" in cfg.model.lora.target_modules and cfg.model.last_mlp_at_response
    assert cfg.model.last_attention_at_response
    assert (cfg.trainer.max_epochs, cfg.method.lr, cfg.callbacks.model_checkpoint.every_n_train_steps) == (4, 3e-3, None)
    assert compose_config(tmp_path, "experiment=main", "scale=cpu", "method=eisam").method.lr == 1e-3


def test_hparams_search_tunes_eisam_on_validation_ndcg(smoke_cfg):
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides  # imports optuna

    cfg = experiment("hparams_search")
    sweeper = cfg.hydra.sweeper
    assert "Optuna" in sweeper._target_ and sweeper.direction == "maximize" and sweeper.storage is None
    assert cfg.objective == "valid/ndcg@10" and cfg.valid_decode
    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    assert fixed == {"data": "ml100k", "method": "eisam"}
    assert {name: (d.low, d.high) for name, d in space.items()} == {
        "method.rho": (0.01, 0.2), "method.lam": (0.25, 2.0), "method.alpha": (0.0, 1.0)}

    result = {"selection": {"best_val_nll": 2.5}, "valid": {"overall": {"ndcg@10": 0.3}, "tail": {"ndcg@10": 0.1}},
              "test": {"overall": {"ndcg@10": 0.9}}}
    assert objective_value(result, "val/nll") == 2.5
    assert objective_value(result, "valid/ndcg@10") == 0.3 and objective_value(result, "valid/tail/ndcg@10") == 0.1
    with pytest.raises(ValueError, match="never test"):
        validate_config(smoke_cfg("objective=test/ndcg@10"))
    with pytest.raises(ValueError, match="valid_decode"):
        validate_config(smoke_cfg("objective=valid/ndcg@10"))


def job(root: Path, method: str) -> Path:
    """A sweep job's folder, named after its overrides (conf/hydra/default.yaml)."""
    (folder,) = [d for d in root.iterdir() if f"method={method}" in d.name.split(",")]
    return folder


def test_a_failed_job_does_not_stop_the_sweep(sweep):
    root, proc = sweep
    assert proc.returncode != 0 and "groups must be between" in proc.stderr  # reported once all jobs ran
    assert "groups must be between" in (job(root, "groupsam") / "error.txt").read_text()
    assert not (job(root, "groupsam") / "metrics.json").exists()
    assert (job(root, "base") / "metrics.json").exists() and (job(root, "eisam") / "metrics.json").exists()


def test_each_job_ends_its_own_wandb_run_with_its_config_and_final_metrics(sweep):
    root, _ = sweep
    for method in ("base", "eisam"):
        (run_file,) = (job(root, method) / "wandb").glob("offline-run-*/run-*.wandb")  # one run per job: never merged
        records = list(wandb_records(run_file))
        config = {u.key: json.loads(u.value_json) for r in records if r.HasField("config") for u in r.config.update}
        summary = {u.key or "/".join(u.nested_key): json.loads(u.value_json)
                   for r in records if r.HasField("summary") for u in r.summary.update}
        metrics = json.loads((job(root, method) / "metrics.json").read_text())
        assert config["method"]["name"] == method and config["task_name"] == "train"
        assert any(key.startswith("train/loss") for key in summary)  # training curves
        for key in ("test/overall/ndcg@10", "test/tail/hr@10", "valid/overall/ndcg@10", "cost/seconds_per_step"):
            split, *path = key.split("/")
            assert summary[key] == pytest.approx(metrics[split]["/".join(path)] if split == "cost"
                                                 else metrics[split][path[0]][path[1]])
        assert [r.exit.exit_code for r in records if r.HasField("exit")] == [0]


def test_report_of_the_sweep_reproduces_metrics_and_names_the_failed_job(sweep, tmp_path):
    root, _ = sweep
    build_report([root], tmp_path / "report")

    table = pd.read_csv(tmp_path / "report" / "accuracy.csv").set_index("method")
    assert list(table.index) == ["base", "eisam"] and (table.seeds == 1).all()
    for method in ("base", "eisam"):
        test = json.loads((job(root, method) / "metrics.json").read_text())["test"]
        for group in ("overall", "head", "tail"):
            for metric in ("hr@10", "ndcg@10"):
                assert table.loc[method, f"{group}/{metric}_mean"] == pytest.approx(test[group][metric])
    paired = pd.read_csv(tmp_path / "report" / "comparisons.csv").set_index(["method", "vs", "users", "metric"])
    for metric in ("ndcg@10", "nll"):  # every user of the eisam run paired with its base run
        row = paired.loc[("eisam", "base", "overall", metric)]
        assert row.n_users == 16 and 0 <= row.p <= 1 and row.lo <= row["diff"] <= row.hi
    assert table.loc["eisam", "overall/ndcg@10_lo"] <= table.loc["eisam", "overall/ndcg@10_mean"] \
        <= table.loc["eisam", "overall/ndcg@10_hi"]
    efficiency = pd.read_csv(tmp_path / "report" / "efficiency.csv").set_index("method")
    assert efficiency.loc["eisam", ["forward_per_step", "backward_per_step"]].tolist() == [2.0, 3.0]
    assert efficiency.peak_memory_mb.gt(0).all()
    assert str(job(root, "groupsam")) in (tmp_path / "report" / "missing.md").read_text()
    for name in ("report.md", "accuracy.md", "comparisons.md", "efficiency.md", "head_tail.png", "popularity_bins.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_report_names_a_job_whose_metrics_are_gone(sweep, tmp_path):
    root, _ = sweep
    copy = shutil.copytree(root, tmp_path / "sweep", ignore=shutil.ignore_patterns("wandb", "adapter", "checkpoints"))
    (job(copy, "eisam") / "metrics.json").unlink()

    build_report([copy], tmp_path / "report", only="tables")

    missing = (tmp_path / "report" / "missing.md").read_text()
    assert f"`{job(copy, 'eisam')}` (eisam" in missing and "no metrics.json" in missing
    assert list(pd.read_csv(tmp_path / "report" / "accuracy.csv").method) == ["base"]


def test_a_failed_single_run_exits_nonzero(tmp_path):
    run = subprocess.run([sys.executable, "-m", "eisam.train", "scale=smoke", "method=groupsam", "method.groups=100000",
                          f"hydra.run.dir={tmp_path}"], capture_output=True, text=True)
    assert run.returncode != 0 and "groups must be between" in (tmp_path / "error.txt").read_text()
