"""scripts/replay_noise.py end to end on the tiny model: one row per batch and ρ, replayed masks closer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from eisam.entry import CONFIG_PATH


def test_replay_noise_prints_both_differences_per_rho():
    script = Path(CONFIG_PATH).parent / "scripts" / "replay_noise.py"
    done = subprocess.run([sys.executable, str(script), "--batches", "1", "model=tiny_llama", "data=synthetic",
                           "model.lora.top_layers=1", "model.lora.dropout=0.3", "--rho", "0.001", "0.01"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| 0 ")]
    assert [float(r[3]) for r in rows] == [0.001, 0.01]
    replayed, fresh = float(rows[0][4]), float(rows[0][5])
    assert replayed < fresh  # at a small rho the new masks, not the perturbation, make the difference
