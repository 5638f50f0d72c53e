"""Config mistakes stop in ``eisam.config_check`` before any data, model or run file is touched: one
case per row of docs/hostile_inputs.md ("Config values")."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException

from eisam import pipeline
from eisam.entry import CONFIG_PATH

CASES = {  # id: (overrides on scale=smoke, text the error must hold)
    "rho_negative": (["method=sam", "method.rho=-1"], "method=sam (keys method.*): rho must be"),
    "max_train_samples_zero": (["data.max_train_samples=0"], "data.max_train_samples=0: expected null or an integer >= 1"),
    "head_ratio_above_one": (["data.head_ratio=1.5"], "data.head_ratio=1.5: expected a number in (0, 1)"),
    "num_beams_below_max_k": (["decoding.num_beams=5"], "decoding.num_beams (5) must be >= max K (20)"),
    "unknown_search": (["decoding.search=greedy"], "decoding.search must be one of beam, exact"),
    "batch_size_zero": (["batch_size=0"], "batch_size must be an integer >= 1, got 0"),
    "eval_batch_size_fraction": (["eval_batch_size=0.5"], "eval_batch_size must be an integer >= 1, got 0.5"),
    "micro_batches_above_batch_size": (["micro_batches=16"], "micro_batches (16) must be <= batch_size (8)"),
    "train_not_a_bool": (["train=maybe"], "train must be true or false"),
    "objective_on_test": (["objective=test/ndcg@10"], "never test"),
    "lora_r_zero": (["model.lora.r=0"], "model.lora.r must be an integer >= 1, got 0"),
    "lora_alpha_zero": (["model.lora.alpha=0"], "model.lora.alpha must be a number > 0"),
    "lora_dropout_one": (["model.lora.dropout=1.0"], "model.lora.dropout must be a number in [0, 1)"),
    "lora_no_target_modules": (["model.lora.target_modules=[]"], "model.lora.target_modules must be a non-empty list"),
    "top_layers_above_depth": (["model.lora.top_layers=5"], "model.lora.top_layers (5) exceeds the backbone's 2"),
    "prefix_cache_without_top_layers": (["model.prefix_cache=true"], "needs model.lora.top_layers"),
    "unknown_dtype": (["model.prefix_cache_dtype=float8"], "model.prefix_cache_dtype must be one of"),
    "last_mlp_not_a_bool": (["model.last_mlp_at_response=sometimes"], "model.last_mlp_at_response must be true or false"),
    "last_attention_not_a_bool": (["model.last_attention_at_response=1"],
                                  "model.last_attention_at_response must be true or false"),
    "unknown_method_key": (["method=eisam", "+method.rh0=0.1"], "unknown key(s) method.rh0"),
    "unknown_mostpop_key": (["method=mostpop", "+method.lr=0.1"], "unknown key(s) method.lr"),
    "unknown_model_key": (["+model.quantize=true"], "unknown key(s) model.quantize"),
    "unknown_lora_key": (["+model.lora.rank=4"], "unknown key(s) model.lora.rank"),
    "unknown_backbone_key": (["+model.backbone.layers=3"], "unknown key(s) model.backbone.layers"),
    "unknown_data_key": (["+data.min_len=3"], "unknown key(s) data.min_len"),
}


def not_reached(*_args, **_kwargs):
    raise AssertionError("data or model loaded before the config was checked")


@pytest.mark.parametrize("overrides, message", CASES.values(), ids=CASES.keys())
def test_bad_config_stops_before_any_work(smoke_cfg, tmp_path, monkeypatch, overrides, message):
    monkeypatch.setattr(pipeline, "load_data", not_reached)
    monkeypatch.setattr(pipeline, "build", not_reached)
    with pytest.raises(ValueError) as err:
        pipeline.train(smoke_cfg(*overrides))
    assert message in str(err.value), str(err.value)
    assert list(tmp_path.iterdir()) == []  # no config.yaml, item_stats.csv or metrics.json


def test_unknown_method_stops_at_compose(smoke_cfg):
    with pytest.raises(MissingConfigException, match="method/nonexistent"):
        smoke_cfg("method=nonexistent")


def test_command_line_checks_the_config_before_the_run_folder(tmp_path):
    """The entry point checks before it looks at (or writes) the run folder; the error is kept in error.txt."""
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "eisam.train", "scale=smoke", "model.lora.r=0",
                           f"hydra.run.dir={run_dir}"], capture_output=True, text=True)
    assert proc.returncode != 0 and "model.lora.r must be an integer >= 1, got 0" in proc.stderr
    assert "model.lora.r" in (run_dir / "error.txt").read_text()
    assert not (run_dir / "config.yaml").exists() and not (run_dir / "metrics.json").exists()


def test_every_test_the_table_names_exists():
    """docs/hostile_inputs.md names a pytest node id per case: each must be a collected test."""
    root = Path(CONFIG_PATH).parent
    named = set(re.findall(r"`(tests/test_\w+\.py::[^`]+)`", (root / "docs" / "hostile_inputs.md").read_text()))
    files = sorted({node.split("::")[0] for node in named})
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
                               cwd=root, capture_output=True, text=True, check=True).stdout.split()
    assert len(named) > 60 and named <= set(collected), sorted(named - set(collected))
