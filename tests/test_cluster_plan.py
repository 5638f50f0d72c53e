"""The cluster plan without a cluster: the Slurm launcher and DDP trainer configs compose with the real
config tree into the sbatch file submitit would submit (nothing is submitted), python -m eisam.report plan
prints the sweep's whole grid with hours that scale with 1/MFU, and its pass counts are the ones the
step objects run."""

from __future__ import annotations

import inspect
import io
import math
import re
from contextlib import redirect_stdout
from pathlib import Path

import lightning
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy
from submitit.slurm.slurm import SlurmExecutor

from eisam.entry import CONFIG_PATH, compose_config
from eisam.report import plan
from eisam.report.cli import main

METHODS = sorted(p.stem for p in (Path(CONFIG_PATH) / "method").glob("*.yaml")
                 if p.stem not in ("mostpop", "sasrec", "gru4rec"))  # the methods that step a language model


def composed(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def sweep(experiment: str) -> list[list[str]]:
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        return plan.sweep(experiment, "paper", [])


@pytest.fixture
def sbatch(monkeypatch):
    """Hydra's Slurm launcher run on a composed config: the sbatch file submitit would submit. srun is
    faked present; the submission itself is replaced by writing out the file's text."""
    texts = []
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))

    def submit(executor, delayed):
        if len(delayed) > 1:
            executor.parameters["map_count"] = len(delayed)  # as submitit marks an array
        texts.append(executor._make_submission_file_text("python -u -m submitit.core._submit", "uid"))
        return []

    monkeypatch.setattr(SlurmExecutor, "_internal_process_submissions", submit)

    def launch(cfg, jobs: list[list[str]]) -> str:
        launcher = instantiate(cfg.hydra.launcher)
        launcher.setup(hydra_context=None, task_function=None, config=cfg)
        assert launcher.launch(jobs, 0) == []
        return texts[-1]

    return launch


@pytest.mark.parametrize("launcher", [["hydra/launcher=slurm_gpu"],  # the GPU count follows trainer.devices
                                      ["hydra/launcher=submitit_slurm", "hydra.launcher.gpus_per_node=1"]])
def test_a_paper_sweep_is_one_job_array_of_one_gpu_jobs(sbatch, launcher, tmp_path):
    cfg = composed("experiment=main", "scale=paper", *launcher, "hydra.launcher.timeout_min=90",
                   f"hydra.sweep.dir={tmp_path}")
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.trainer.devices == 1
    jobs = sweep("main")
    text = sbatch(cfg, jobs)
    for line in (f"--array=0-{len(jobs) - 1}%", "--nodes=1", "--gpus-per-node=1", "--time=90",
                 f"--output={tmp_path}/.submitit/"):
        assert f"#SBATCH {line}" in text
    assert "--ntasks-per-node=1" in text


def test_ddp_gpu_trainer_asks_slurm_for_one_task_per_gpu_on_every_node(sbatch, tmp_path):
    cfg = composed("experiment=main", "scale=paper", "data=games", "method=eisam", "seed=0", "trainer=ddp_gpu",
                   "trainer.num_nodes=2", "trainer.devices=4", "batch_size=4", "hydra/launcher=slurm_gpu",
                   f"hydra.sweep.dir={tmp_path}")
    trainer = cfg.trainer
    assert (trainer.accelerator, trainer.precision, trainer.max_epochs) == ("gpu", "bf16-mixed", 3)  # scale=paper's
    assert set(trainer) - {"_target_"} <= set(inspect.signature(lightning.Trainer).parameters)
    strategy = instantiate(trainer.strategy)
    assert isinstance(strategy, DDPStrategy) and strategy.process_group_backend == "nccl"
    text = sbatch(cfg, [["data=games", "method=eisam", "seed=0"]])
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=8", "--mem-per-gpu=32G"):
        assert f"#SBATCH {line}" in text
    assert "--array" not in text


@pytest.fixture(scope="module")
def printed():
    """The plan of experiment=sensitivity (ml100k only, so no data beyond the recbole wheel) at two MFUs."""
    out = io.StringIO()
    with redirect_stdout(out):
        main(["plan", "--experiments", "sensitivity", "--mfu", "0.25", "0.5"])
    return out.getvalue()


def job_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
    return [[c.strip() for c in line.strip("|").split("|")] for line in rows]


def test_the_printed_job_array_is_the_sweeps_grid(printed):
    axes = composed("experiment=sensitivity", "scale=paper").hydra.sweeper.params
    size = math.prod(len(str(values).split(",")) for values in axes.values())
    rows = job_rows(printed)
    assert len(rows) == size and f"## experiment=sensitivity: {size} jobs" in printed
    overrides = [set(row[1].split()) for row in rows]
    assert len({frozenset(o) for o in overrides}) == size
    for o in overrides:
        assert {key.split("=")[0] for key in o} == set(axes)
    assert "hydra/launcher=slurm_gpu" in printed and "trainer=ddp_gpu" in printed


def test_printed_hours_scale_with_one_over_mfu(printed):
    header = next(line for line in printed.splitlines() if line.startswith("| # |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    at_25, at_50 = columns.index("fit GPU h @ 25 %"), columns.index("fit GPU h @ 50 %")
    rows = job_rows(printed)
    assert all(float(row[at_25]) > 0.01 for row in rows)  # large enough for the printed digits to tell
    for row in rows:  # printed to 3 decimals
        assert float(row[at_25]) * 0.25 == pytest.approx(float(row[at_50]) * 0.5, abs=0.0005 * 0.75)


@pytest.mark.parametrize("method", METHODS)
def test_pass_counts_are_those_the_step_objects_run(method, tmp_path):
    cfg = compose_config(tmp_path, f"method={method}")
    n_train = torch.arange(64, 0, -1)  # 64 items; the batch below holds one sample of each: every group is present
    model = torch.nn.Linear(3, 1)
    step = instantiate(cfg.method)(params=model.parameters(), n_train=n_train, head_mask=n_train > 51)
    x, items = torch.randn(64, 3), torch.arange(64)
    for _ in range(2):  # the second step: eisam_fast's first one has its extra backward
        report = step.step([(lambda: model(x).squeeze(-1).pow(2), items)])
    # A batch far larger than the catalogue holds every group in expectation too.
    expected = plan.passes(cfg.method, 10**6, n_train.numpy())
    assert (report.forward_passes, report.backward_passes) == pytest.approx(expected)
