"""Files a run leaves behind, written atomically so that a killed run never looks complete."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd

METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
VALID_PREDICTIONS = "valid_predictions.csv"  # valid_decode=true: predictions.csv's columns for the validation users
VALID_NLL = "valid_nll.csv"  # test=false (hyperparameter selection): each validation user's target NLL
ITEM_STATS = "item_stats.csv"
ADAPTER = "adapter"
RESOLVED_CONFIG = "config.yaml"  # every interpolation resolved, env vars included
ERROR = "error.txt"  # the traceback of a job that failed (the report names the run as missing)


def check_writable(folder: Path) -> None:
    """Fails before any expensive work when the run folder cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise PermissionError(f"output folder {folder} is not writable (hydra.run.dir / paths.output_dir): {err}") from err


def atomic_write(path: Path, write) -> None:
    """``write(tmp)`` to a unique hidden temp file, then a rename: a failed write leaves neither a
    partial file nor a stray temp file, and parallel writers (DDP ranks, sweeps) never collide."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(0o644)  # mkstemp makes 0600 files; outputs and caches are shared like any file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, allow_nan=False)))


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
