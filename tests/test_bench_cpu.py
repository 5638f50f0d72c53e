"""scripts/bench_cpu.py end to end on the tiny model: the JSON a check reads has every key it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from eisam.entry import CONFIG_PATH

PATH_KEYS = {"prefix_s_per_seq", "step_s", "decode_s_per_user"}


def test_bench_cpu_writes_both_precisions_against_the_peak(tmp_path):
    script = Path(CONFIG_PATH).parent / "scripts" / "bench_cpu.py"
    out = tmp_path / "cpu.json"
    done = subprocess.run([sys.executable, str(script), "--quick", "--gemm", "256", "--out", str(out),
                           "--profile", str(tmp_path / "profile"), "model=tiny_llama", "data=synthetic",
                           "model.lora.top_layers=1", "decoding.num_beams=10"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["peak_gflops"]) == {"fp32", "bf16"} and all(v > 0 for v in result["peak_gflops"].values())
    assert {"avx2", "avx512_bf16", "amx_bf16"} <= set(result["cpu"]["flags"])
    for precision in ("float32", "bfloat16"):
        for table in ("paths", "speedup"):
            assert set(result[table][precision]) == PATH_KEYS
            assert set(result[table][precision]["step_s"]) == {
                "base", "eisam", "base_last_mlp_at_response", "eisam_last_mlp_at_response",
                "base_last_layer_at_response", "eisam_last_layer_at_response"}
        assert all(v > 0 for v in result["paths"][precision]["step_s"].values())
        shares = result["self_time_share"][precision]["step_eisam"]
        assert abs(sum(shares.values()) - 1) < 1e-6 and shares["matrix products"] > 0
    assert set(result["speedup"]["float32"]["step_s"].values()) == {1.0}
    assert "| `eisam` step |" in out.with_suffix(".md").read_text()
    assert len(list((tmp_path / "profile").glob("*.txt"))) == 16
