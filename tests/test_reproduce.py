"""`make reproduce` resumes its sweep: finished jobs of the same config are skipped, unfinished ones
resume from their last checkpoint, and a changed config value is run again, never reused. `make select`
trains its own base before the grid."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from eisam.entry import CONFIG_PATH
from eisam.report import build_report
from eisam.resume import reuse_or_resume

ROOT = Path(CONFIG_PATH).parent
SMALL = ["trainer.limit_train_batches=2", "data.max_eval_users=4"]  # a smoke sweep in seconds per job


def reproduce_command(scale: str) -> tuple[str, list[str]]:
    """(sweep folder, train arguments) of `make reproduce SCALE=scale`, as make would run them
    (dry run: nothing is executed, the virtualenv is not touched)."""
    script = subprocess.run(["make", "-n", "-s", "reproduce", f"SCALE={scale}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    (experiment,) = re.findall(r"for e in (\S+); do", script)
    folder = re.search(r"dir=(\S+);", script).group(1).replace("$e", experiment)
    (stage,) = re.search(r'read -ra stages <<< "(.*?)";', script).group(1).split("|")  # smoke: one stage
    command = re.search(r"-m eisam\.train (.*?) \|\|", script).group(1).replace("$e", experiment)
    command = command.replace("$stage", stage)
    return folder, [arg for arg in shlex.split(command) if not arg.startswith("hydra.sweep.dir=")]


def run_sweep(args: list[str], sweep_dir: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "eisam.train", *args, *SMALL, f"hydra.sweep.dir={sweep_dir}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def jobs(sweep_dir: Path) -> dict[str, Path]:
    """Job folder per method: each is named after the job's overrides (conf/hydra/default.yaml)."""
    return {yaml.safe_load((d / "config.yaml").read_text())["method"]["name"]: d
            for d in sweep_dir.iterdir() if (d / "config.yaml").exists()}


def mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def test_interrupted_smoke_sweep_runs_only_the_missing_jobs(tmp_path):
    folder, args = reproduce_command("smoke")
    assert folder == "outputs/main/multiruns/reproduce_smoke"  # fixed per scale: a rerun finds it again
    sweep = tmp_path / "sweep"
    run_sweep(args, sweep)
    first = jobs(sweep)
    assert sorted(first) == ["base", "eisam"]
    assert all(f"method={method}" in d.name.split(",") for method, d in first.items())
    base, eisam = first["base"], first["eisam"]
    eisam_test = json.loads((eisam / "metrics.json").read_text())["test"]

    # Killed: eisam after its last checkpoint, before its results. And base's run was made with
    # another value than the config now says (as after an edit of a default in conf/).
    (eisam / "metrics.json").unlink()
    saved = yaml.safe_load((base / "config.yaml").read_text())
    saved["scheduler"]["warmup_ratio"] = 0.2
    (base / "config.yaml").write_text(yaml.safe_dump(saved))
    base_before = mtime(base / "metrics.json")

    log = run_sweep(args, sweep)
    assert jobs(sweep) == first  # the same folders, no new ones
    assert f"{base} holds a run of another config (differs in scheduler.warmup_ratio)" in log
    assert mtime(base / "metrics.json") > base_before  # run again, never reused
    assert yaml.safe_load((base / "config.yaml").read_text())["scheduler"]["warmup_ratio"] == 0.05
    assert f"{eisam}: resuming the unfinished run of the same config from its last checkpoint" in log
    assert "Restored all states from the checkpoint" in log
    assert json.loads((eisam / "metrics.json").read_text())["test"] == eisam_test

    finished = {method: mtime(d / "metrics.json") for method, d in first.items()}
    log = run_sweep(args, sweep)
    assert {method: mtime(d / "metrics.json") for method, d in first.items()} == finished  # nothing ran
    assert all(f"{d}: reusing the finished run of the same config (job skipped)" in log for d in first.values())
    assert "Trainer.fit" not in log

    runs, _ = build_report([sweep], tmp_path / "report", only="tables")
    assert sorted(runs.method) == ["base", "eisam"] and set(runs.status) == {"ok"}
    assert len(pd.read_csv(tmp_path / "report" / "accuracy.csv")) == 2


@pytest.fixture
def run_folder(smoke_cfg, tmp_path):
    """A composed job config and its folder, holding a finished run of that very config."""
    cfg = smoke_cfg("method=eisam")
    folder = Path(cfg.paths.output_dir)
    OmegaConf.save(cfg, folder / "config.yaml", resolve=True)
    (folder / "metrics.json").write_text(json.dumps({"run": {}, "test": {"overall": {"hr@10": 0.5}}}))
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"")
    return cfg, folder


def test_finished_run_of_the_same_config_is_reused(run_folder):
    cfg, folder = run_folder
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    saved["ckpt_path"], saved["paths"]["output_dir"] = "last", "/elsewhere"  # bookkeeping: not the setting
    (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    assert reuse_or_resume(cfg)["test"] == {"overall": {"hr@10": 0.5}}
    cfg.resume = False
    assert reuse_or_resume(cfg) is None and (folder / "metrics.json").exists()


@pytest.mark.parametrize("checkpoint", [True, False])
def test_unfinished_run_of_the_same_config_resumes_from_its_last_checkpoint(run_folder, checkpoint):
    cfg, folder = run_folder
    (folder / "metrics.json").write_text('{"run": {}, "te')  # never written like this (atomic), but unreadable
    if not checkpoint:
        (folder / "checkpoints" / "last.ckpt").unlink()
    assert reuse_or_resume(cfg) is None
    assert cfg.ckpt_path == ("last" if checkpoint else None)


def test_run_of_another_config_is_replaced_not_reused(run_folder, caplog):
    cfg, folder = run_folder
    cfg.method.rho, cfg.method.lam = 0.1, 2.0
    assert reuse_or_resume(cfg) is None
    assert cfg.ckpt_path is None  # never resumed from the other config's checkpoint
    assert not (folder / "metrics.json").exists() and not (folder / "checkpoints").exists()
    assert "differs in method.lam, method.rho" in caplog.text


@pytest.mark.parametrize("method", yaml.safe_load((ROOT / "conf/experiment/main.yaml").read_text().split("\n", 1)[1])
                         ["hydra"]["sweeper"]["params"]["method"].split(","))
def test_every_job_of_the_cpu_sweep_passes_the_config_checks(tmp_path, method):
    """scale=cpu turns the prior instrument on for every job: mostpop, which has no model, must run anyway."""
    from eisam.entry import compose_config
    from eisam.config_check import validate_config

    validate_config(compose_config(tmp_path, "experiment=main", "scale=cpu", "data=ml100k", f"method={method}"))


def test_the_values_chosen_on_validation_reach_the_methods_of_their_scale(tmp_path):
    """conf/selected/cpu.yaml, which scale=cpu selects, sets rho (and lam) of sam, eisam and the methods
    that borrow their choice; other scales have no `selected` and keep the methods' own defaults; a
    command-line value still wins."""
    from eisam.entry import compose_config

    def method(*overrides):
        return compose_config(tmp_path, "experiment=main", *overrides).method

    chosen = compose_config(tmp_path, "scale=cpu").selected
    for name, source in {"sam": "sam", "imbsam": "sam", "eisam": "eisam", "eisam_fast": "eisam",
                         "groupsam_g4": "eisam"}.items():
        assert method("scale=cpu", f"method={name}").rho == chosen[source].rho, name
        assert method("scale=cpu", f"method={name}", f"selected.{source}.rho=0.123").rho == 0.123, name
    assert method("scale=cpu", "method=eisam_fast", "selected.eisam.lam=0.7").lam == 0.7
    assert "selected" not in compose_config(tmp_path, "scale=paper")
    assert method("scale=paper", "method=eisam").rho == 0.05 and method("scale=paper", "method=sam").rho == 0.05
    assert method("scale=cpu", "method=eisam", "method.rho=0.3").rho == 0.3
    assert compose_config(tmp_path, "scale=cpu", "experiment=selection", "method=eisam").method.lam == 1.0


def test_make_select_trains_its_own_base_once_as_the_reference_of_the_grid(tmp_path):
    """`make select` first trains the sweep's own base (one job, whatever rho grid the experiment sweeps),
    then the grid; the selection table pairs every candidate with that base."""
    script = subprocess.run(["make", "-n", "-s", "select", "SCALE=smoke", "SELECT=method=sam method.rho=0.01,0.2"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    stages = [shlex.split(command) for command in re.findall(r"-m eisam\.train (.*?) \|\|", script)]
    assert [arg for arg in stages[0] if arg.startswith("method=")] == ["method=base"]
    sweep = tmp_path / "sweep"
    for stage in stages:
        run_sweep([arg for arg in stage if not arg.startswith("hydra.sweep.dir=")] + ["data=synthetic"], sweep)
    assert sorted(yaml.safe_load((d / "config.yaml").read_text())["method"]["name"]
                  for d in sweep.iterdir() if (d / "config.yaml").exists()) == ["base", "sam", "sam"]

    build_report([sweep], tmp_path / "report", only="tables")
    table = pd.read_csv(tmp_path / "report" / "selection.csv")
    candidates = table[(table.method == "sam") & (table.users == "overall")]
    assert len(candidates) == 2 and candidates.diff_vs_base.notna().all()
