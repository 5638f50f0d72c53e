"""Fit a recommender, then test it: ``python -m eisam.train [overrides]``."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from eisam.entry import CONFIG_PATH, set_project_root
from eisam.run_files import ERROR

set_project_root()


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """One job; returns what a sweeper optimizes (``objective``: validation only, never test).

    A job whose run folder holds a finished run of the same resolved config is skipped (its
    metrics are reused); one with an unfinished run of it resumes from the last checkpoint
    (``eisam.resume``; ``resume=false`` runs it again regardless). The config is checked first
    (``eisam.config_check``). A failed or interrupted (Ctrl-C) job leaves its traceback in the run
    folder's error.txt (the report names the run as missing), ends its wandb run as failed and
    re-raises. A single run exits non-zero. In a
    multirun, Hydra records the job as failed and the launchers (basic, joblib, submitit) still
    run the other jobs; the sweep then exits non-zero. The Optuna sweep goes on past failed trials
    (hparams_search sets max_failure_rate: 1.0).
    """
    from eisam.config_check import pin_compute_dtype, validate_config
    from eisam.resume import reuse_or_resume

    error_file = Path(cfg.paths.output_dir) / ERROR
    try:
        error_file.unlink(missing_ok=True)  # a run resumed in its folder starts clean
        validate_config(cfg)  # before anything is read or written: a bad value costs seconds, not a run
        pin_compute_dtype(cfg)  # auto -> this machine's precision: part of the config resume compares
        result = reuse_or_resume(cfg)
        if result is None:
            from eisam.pipeline import train  # torch, transformers, lightning: only for a job that runs

            result = train(cfg)
    except BaseException:  # Ctrl-C too (Lightning turns it into SystemExit): the run is marked unfinished
        finish_wandb(exit_code=1)
        try:
            error_file.write_text(traceback.format_exc())
        except OSError:
            pass  # an unwritable run folder: Hydra still prints the traceback
        raise
    finish_wandb(exit_code=0)
    return objective_value(result, cfg.get("objective", "val/nll"))


def objective_value(result: dict, objective: str) -> float | None:
    """``val/nll``: the selected checkpoint's validation NLL. ``valid/[group/]metric`` (group
    defaults to overall), e.g. ``valid/ndcg@10``: from the decoded validation users."""
    if objective == "val/nll":
        return (result.get("selection") or {}).get("best_val_nll")
    _, *path = objective.split("/")
    group, metric = path if len(path) == 2 else ("overall", *path)
    return result.get("valid", {}).get(group, {}).get(metric)


def finish_wandb(exit_code: int) -> None:
    """Ends the job's wandb run, so that the next job of a multirun (same process) starts its own."""
    wandb = sys.modules.get("wandb")  # never imported: no run to end
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)


if __name__ == "__main__":
    main()
