"""Fit a recommender, then test it: ``python -m eisam.train [overrides]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from eisam.entry import CONFIG_PATH, set_project_root

set_project_root()


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from eisam.pipeline import train

    result = train(cfg)
    # The return value is what hydra's Optuna sweeper optimizes (validation only, never test).
    selection = result.get("selection") or {}
    return selection.get("best_val_nll")


if __name__ == "__main__":
    main()
