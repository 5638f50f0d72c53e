"""Shared set-up of the Hydra entry points."""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_PATH = str(Path(__file__).resolve().parents[2] / "conf")


def set_project_root() -> None:
    """``paths.root_dir`` defaults to the repository (the folder holding conf/), not the cwd."""
    os.environ.setdefault("PROJECT_ROOT", str(Path(CONFIG_PATH).parent))


def compose_config(output_dir: Path, *overrides: str, config_name: str = "train"):
    """The config `python -m eisam.train` would see, run folder set to ``output_dir`` (tests, benchmarks)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    set_project_root()
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg
