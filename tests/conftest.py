"""Shared fixtures: the real Hydra config, composed for tests, and the real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from eisam.entry import CONFIG_PATH, compose_config, set_project_root

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
set_project_root()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls on 2 shared cores run faster (and steadier) on one thread: 1 s instead of 35 s for two
    smoke runs while another job computes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def smoke_cfg(tmp_path):
    """Factory: the scale=smoke config (tiny Llama, synthetic data) plus extra overrides."""
    return lambda *overrides: compose_config(tmp_path, "scale=smoke", *overrides)


def shared_data_dir() -> Path | None:
    root = os.environ.get("EISAM_DATA_DIR") or str(Path(CONFIG_PATH).parents[1] / "shared" / "data")
    return Path(root) if Path(root).is_dir() else None
