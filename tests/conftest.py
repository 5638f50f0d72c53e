"""Shared fixtures: the real Hydra config, composed for tests, the real-data folder, and one real smoke
sweep logged to wandb (offline), read by the experiment and the dashboard tests."""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
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


@pytest.fixture(scope="session")
def sweep(tmp_path_factory):
    """A real multirun of three jobs: groupsam with more groups than items fails at once; base and
    eisam (which ignore method.groups) then train 2 steps, log to wandb (offline) and also decode
    the validation users."""
    root = tmp_path_factory.mktemp("sweep")
    cmd = [sys.executable, "-m", "eisam.train", "-m", "scale=smoke", "method=groupsam,base,eisam",
           "method.groups=100000", "trainer.limit_train_batches=2", "data.max_eval_users=16", "logger=wandb",
           "valid_decode=true", f"hydra.sweep.dir={root}"]
    return root, subprocess.run(cmd, capture_output=True, text=True)


def wandb_records(path: Path):
    """The protobuf records of an offline wandb run file (offline runs write no wandb-summary.json):
    a 7-byte header, then LevelDB-log blocks of 32 KiB whose chunks (checksum 4 bytes, length 2,
    type 1: full, first, middle, last) carry the records."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block, pos, record = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too short for a chunk header: padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        record = (b"" if kind in (1, 2) else record) + data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield Record.FromString(record)


def load_script(name: str):
    """scripts/<name>.py as a module, importable the way `python scripts/<name>.py` sees its folder."""
    path = Path(CONFIG_PATH).parent / "scripts" / f"{name}.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))
