"""Shared set-up of the Hydra entry points."""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_PATH = str(Path(__file__).resolve().parents[2] / "conf")


def set_project_root() -> None:
    """``paths.root_dir`` defaults to the repository (the folder holding conf/), not the cwd."""
    os.environ.setdefault("PROJECT_ROOT", str(Path(CONFIG_PATH).parent))
