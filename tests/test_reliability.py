"""Trustworthy runs through the real entry: bad inputs fail early naming the culprit, runs are
deterministic, outputs atomic, and the test split never reaches model selection (docs/reliability.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import lightning as L
import pandas as pd
import pytest
from omegaconf import open_dict

import eisam.data
import eisam.decoding.evaluate_split
import eisam.models
import eisam.pipeline
from eisam.data import DataError
from eisam.context import RunContext
from eisam.entry import compose_config
from eisam.training.datamodule import RecDataModule
from eisam.pipeline import train
from eisam.run_files import write_csv

from test_data import write_atomic

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ("trainer.limit_train_batches=4", "data.max_eval_users=16")
MEASURED = ("train_seconds", "seconds_per_step", "peak_memory_mb")  # machine measurements under metrics["cost"]


@pytest.fixture
def stages(monkeypatch):
    """Names of the expensive stages a run reached, in order: reading the data, building the backbone."""
    reached = []

    def recording(name, fn):
        def wrapper(*args, **kwargs):
            reached.append(name)
            return fn(*args, **kwargs)
        return wrapper

    # Hydra resolves `_target_` by attribute lookup, so patching the package attributes intercepts the calls.
    monkeypatch.setattr(eisam.data, "load_rec_data", recording("data", eisam.data.load_rec_data))
    for loader in ("build_tiny_llama", "load_smollm2", "load_pretrained"):
        monkeypatch.setattr(eisam.models, loader, recording("model", getattr(eisam.models, loader)))
    return reached


def no_run_files(folder) -> bool:
    """Nothing that looks like a finished (or half-written) run: no metrics, predictions or temp files."""
    return not [p for p in folder.rglob("*") if p.name in ("metrics.json", "predictions.csv") or p.suffix == ".tmp"]


# --- bad inputs: the error names the culprit, is raised before the expensive stages, writes no results ---

@pytest.mark.parametrize("overrides, error, message, reached", [
    (["method=eisam", "method.rho=0"], ValueError,
     r"method=eisam \(keys method\.\*\): rho must be > 0 for a sharpness-aware method, got 0", []),
    (["decoding.num_beams=5"], ValueError, r"decoding\.num_beams \(5\) must be >= max K \(20\) of decoding\.ks", []),
    (["decoding.search=exact", "decoding.length_penalty=1.0"], ValueError,
     r"decoding\.search=exact needs decoding\.length_penalty=0 \(got 1\.0\)", []),
    (["decoding.search=exact", "decoding.rank_cap=0"], ValueError,
     r"decoding\.rank_cap must be an integer >= 1 for decoding\.search=exact, got 0", []),
    (["decoding.search=greedy"], ValueError, r"decoding\.search must be one of beam, exact, got 'greedy'", []),
    (["data.head_ratio=1.0"], DataError, r"data\.head_ratio=1\.0: expected a number in \(0, 1\)", ["data"]),
    (["model=smollm2_135m", "model.backbone.gguf_path=/nope.gguf", "paths.model_cache_dir={tmp}/empty_cache"],
     FileNotFoundError, r"model\.backbone\.gguf_path: GGUF file not found: /nope\.gguf", []),
    (["model=qwen2_0_5b", "model.backbone.name_or_path=/no/such/dir"], FileNotFoundError,
     r"model\.backbone\.name_or_path: no model folder \(config\.json\) at /no/such/dir", []),
], ids=["rho=0", "num_beams<K", "exact_length_penalty", "exact_rank_cap=0", "unknown_search", "head_ratio=1", "missing_gguf", "missing_model_dir"])
def test_bad_config_fails_before_data_or_model(smoke_cfg, tmp_path, stages, overrides, error, message, reached):
    with pytest.raises(error, match=message):
        train(smoke_cfg(*(o.format(tmp=tmp_path) for o in overrides)))
    assert stages == reached  # data config values are checked before any file is read
    assert no_run_files(tmp_path)


@pytest.mark.parametrize("case, message", [
    ("missing_file", r"nope\.inter.*data\.root.*data\.name"),
    ("empty_titles", r"toy: every interacted item has an empty title after cleaning \(e\.g\. ids \['1', '2', '3'\]\)"
                     r".*data\.fields\.title"),
], ids=["missing_file", "empty_titles"])
def test_bad_data_fails_before_the_model(smoke_cfg, tmp_path, stages, case, message):
    """Two data errors through the entry; the reader's others are tested on the reader (tests/test_data.py)."""
    root = tmp_path / "data"
    root.mkdir()
    rows = [f"u{u}\t{i}\t{i}" for u in range(3) for i in (1, 2, 3)]
    write_atomic(root, rows, ["1\t&nbsp;", "2\t ", "3\t"])  # every title empty after cleaning
    name = "nope" if case == "missing_file" else "toy"
    with pytest.raises(DataError, match=message):
        train(smoke_cfg("data=atomic", f"data.root={root}", f"data.name={name}"))
    assert stages == ["data"]
    assert no_run_files(tmp_path)


def test_unwritable_output_folder_fails_first(smoke_cfg, tmp_path, stages):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cfg = smoke_cfg()
    with open_dict(cfg):
        cfg.paths.output_dir = str(blocker / "run")  # a folder below a file: unwritable even for root
    with pytest.raises(PermissionError, match=rf"output folder {blocker / 'run'} is not writable "
                                              r"\(hydra\.run\.dir / paths\.output_dir\)"):
        train(cfg)
    assert stages == [] and no_run_files(tmp_path)


def test_unknown_method_is_hydras_error(tmp_path):
    run_dir = tmp_path / "run"
    bad = subprocess.run([sys.executable, "-m", "eisam.train", "scale=smoke", "method=nope",
                          f"hydra.run.dir={run_dir}"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "Could not find 'method/nope'" in bad.stderr and "Available options in 'method':" in bad.stderr
    assert no_run_files(tmp_path)


# --- guarantees ---

def without_measurements(metrics: dict) -> dict:
    return {**metrics, "cost": {k: v for k, v in metrics["cost"].items() if k not in MEASURED}}


def test_same_config_and_seed_give_identical_results(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        train(compose_config(out, "scale=smoke", *FAST))
        runs.append((json.loads((out / "metrics.json").read_text()), (out / "predictions.csv").read_text()))
    (metrics_a, predictions_a), (metrics_b, predictions_b) = runs
    assert set(metrics_a["cost"]) >= set(MEASURED)  # the only fields allowed to differ exist
    assert without_measurements(metrics_a) == without_measurements(metrics_b)
    assert predictions_a == predictions_b


def test_run_killed_during_test_decoding_leaves_no_results(smoke_cfg, tmp_path, monkeypatch):
    (tmp_path / "metrics.json").write_text("{}")  # left by an earlier run in this folder (e.g. before a resume)
    called = []

    def dies(*args, **kwargs):
        called.append(True)
        raise RuntimeError("killed during test decoding")

    monkeypatch.setattr(eisam.decoding.evaluate_split, "constrained_beam_search", dies)
    with pytest.raises(RuntimeError, match="killed during test decoding"):
        train(smoke_cfg(*FAST))
    assert called and (tmp_path / "adapter").is_dir()  # it died after fitting, in the test phase
    assert no_run_files(tmp_path)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def dies_midway(self, path, **kwargs):
        path.write_text("user,target\n")  # half written
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", dies_midway)
    with pytest.raises(OSError, match="disk full"):
        write_csv(tmp_path / "predictions.csv", pd.DataFrame({"user": ["u"]}))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("overrides", [(), ("scale=smoke",), ("scale=cpu",), ("scale=paper",), ("debug=fast",)],
                         ids=["default", "smoke", "cpu", "paper", "debug_fast"])
def test_model_selection_monitors_validation_nll(tmp_path, overrides):
    checkpoint = compose_config(tmp_path, *overrides).callbacks.model_checkpoint
    assert (checkpoint.monitor, checkpoint.mode) == ("val/nll", "min")


def test_fit_never_touches_the_test_split(smoke_cfg, monkeypatch):
    """Selection sees validation samples only: no test sample is batched before the test phase."""
    for hook in ("test_dataloader", "predict_dataloader"):
        assert getattr(RecDataModule, hook) is getattr(L.LightningDataModule, hook), f"RecDataModule overrides {hook}"
    seen = {"train": 0, "valid": 0, "test": 0}
    collate = RunContext.collate

    def spying(self, samples):
        for split in seen:
            members = {id(s) for s in getattr(self.data, split)}
            seen[split] += sum(id(s) in members for s in samples)
        return collate(self, samples)

    class TestPhase(Exception):
        pass

    def stop(*args, **kwargs):
        raise TestPhase

    monkeypatch.setattr(RunContext, "collate", spying)
    monkeypatch.setattr(eisam.pipeline, "test_and_write", stop)
    with pytest.raises(TestPhase):
        train(smoke_cfg(*FAST))
    assert seen["train"] > 0 and seen["valid"] > 0 and seen["test"] == 0
