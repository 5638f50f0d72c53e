"""Shared fixtures: the real Hydra config, composed for tests, and the real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from eisam.entry import CONFIG_PATH, set_project_root

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
set_project_root()


def compose_config(output_dir: Path, *overrides: str, config_name: str = "train") -> DictConfig:
    """The config `python -m eisam.train` would see, with the run folder set to ``output_dir``."""
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def smoke_cfg(tmp_path):
    """Factory: the scale=smoke config (tiny Llama, synthetic data) plus extra overrides."""
    return lambda *overrides: compose_config(tmp_path, "scale=smoke", *overrides)


def shared_data_dir() -> Path | None:
    root = os.environ.get("EISAM_DATA_DIR") or str(Path(CONFIG_PATH).parents[1] / "shared" / "data")
    return Path(root) if Path(root).is_dir() else None
