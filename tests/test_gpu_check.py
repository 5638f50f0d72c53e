"""scripts/gpu_check.py runs on CPU with the tiny shape (so the GPU check never rots), its θ watcher
catches a step that does not restore θ, and its Qwen2-0.5B shape is the published one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from eisam.entry import CONFIG_PATH
from eisam.models.shapes import SHAPES
from eisam.optim import ItemwiseSAM
from conftest import load_script

ROOT = Path(CONFIG_PATH).parent
SCRIPT = ROOT / "scripts" / "gpu_check.py"




def test_tiny_gpu_check_on_cpu_writes_every_section(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--shape", "tiny", "--out", str(out), "--work", str(tmp_path / "work"),
           "--batch-size", "4", "--users", "4", "--eval-users", "4", "--train-steps", "2", "--reps", "1"]
    # One torch thread: on 2 shared cores, tiny bf16 steps run several times faster.
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())
    gpu_check = load_script("gpu_check")

    assert result["model"]["shape"] == "tiny" and result["machine"]["device"] == "CPU (no GPU)"
    rows = {r["method"]: r for r in result["steps"]["rows"]}
    assert list(rows) == gpu_check.ALL_METHODS and result["steps"]["tokens"] > 0
    for name, row in rows.items():
        sam_family = row["kind"] in gpu_check.SAM_FAMILY
        assert row["perturbed"] == sam_family and row["theta_restored"], name
        assert row["tokens_per_s"] > 0 and row["mfu"] > 0 and row["peak_memory_mb"] > 0 and not row["skipped"]
    assert (rows["eisam"]["forward_passes"], rows["eisam"]["backward_passes"]) == (2, 3)
    assert result["decode"]["users"] == 4 and result["decode"]["identical_lists"] == 4
    run = result["train_run"]
    assert run["ok"] and run["returncode"] == 0 and run["train_steps"] == 2 and run["test_users"] == 4
    assert "scale=paper" in run["command"] and "logger=csv" in run["command"]
    assert result["ok"] and all(result["checks"].values())

    table = (out / "gpu_check.md").read_text()
    for name in gpu_check.ALL_METHODS:
        assert f"| {name} |" in table
    for heading in ("## Training step", "## Decoding", "## `python -m eisam.train scale=paper` end to end", "## Checks"):
        assert heading in table
    assert "| 4/4 |" in table and "FAIL" not in table and "| NO |" not in table


def test_theta_watcher_catches_a_step_that_does_not_restore(one_thread):
    watch_theta = load_script("gpu_check").watch_theta
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))

    def loss():
        return torch.nn.functional.cross_entropy(model(x), y, reduction="none")

    params = list(model.parameters())
    sam = ItemwiseSAM(params, torch.optim.SGD(params, lr=0.1), rho=0.05)
    with watch_theta(model) as seen:
        sam.step([(loss, y)])
    assert seen == {"perturbed": True, "restored": True}

    sam._perturbed = lambda direction, rng: leaky(params, direction)  # perturbs, never restores
    with watch_theta(model) as seen:
        sam.step([(loss, y)])
    assert seen == {"perturbed": True, "restored": False}


@contextmanager
def leaky(params, direction):
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(0.05 * d)
    yield 0.05


def test_qwen2_shape_is_the_published_one():
    shape = SHAPES["qwen2_0_5b"]
    with torch.device("meta"):  # no memory, no weights
        model = Qwen2ForCausalLM(Qwen2Config(**shape, tie_word_embeddings=True))
    assert sum(p.numel() for p in model.parameters()) == 494_032_768  # Qwen2-0.5B
