"""A run killed mid-epoch (a crash, or Ctrl-C) and restarted with ckpt_path=last ends exactly like an
uninterrupted run."""

from __future__ import annotations

import json
import signal
import time

import pytest
import torch

from eisam.training.module import RecommenderModule
from eisam.pipeline import train

KILL_AT_STEP = 11  # epoch 1, batch 3 of 8: mid-epoch, after an epoch boundary
BEFORE_KILL_SECONDS = 1000.0


class Killed(RuntimeError):
    pass


# What the kill raises inside a training step, and what reaches the caller: Lightning stops gracefully
# on Ctrl-C (KeyboardInterrupt) and exits with sys.exit(1).
INTERRUPTS = {"crash": (Killed, Killed), "ctrl_c": (KeyboardInterrupt, SystemExit)}


def resumable(smoke_cfg, method):
    return smoke_cfg(f"method={method}", "data.max_train_samples=64", "data.max_eval_users=16",
                     "trainer.max_epochs=2", "callbacks.model_checkpoint.every_n_train_steps=1",
                     "model.lora.dropout=0.1")


@pytest.mark.parametrize("interrupt", INTERRUPTS)
@pytest.mark.parametrize("method", ["eisam_fast"])  # stored direction + counters + dropout RNG
def test_killed_run_resumes_to_the_same_metrics(smoke_cfg, tmp_path, monkeypatch, method, interrupt):
    raised, reaches_caller = INTERRUPTS[interrupt]
    cfg = resumable(smoke_cfg, method)
    uninterrupted = train(cfg)

    step = RecommenderModule.training_step

    def killed_at(self, batch, batch_idx):
        if self.global_step == KILL_AT_STEP:
            raise raised("simulated kill")
        return step(self, batch, batch_idx)

    interrupted_dir = tmp_path / "interrupted"
    cfg.paths.output_dir = str(interrupted_dir)
    sigint = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as patch:
        patch.setattr(RecommenderModule, "training_step", killed_at)
        with pytest.raises(reaches_caller):
            train(cfg)
    signal.signal(signal.SIGINT, sigint)  # Lightning ignores further Ctrl-C while it shuts down
    assert not (interrupted_dir / "metrics.json").exists()
    last = interrupted_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["global_step"] == KILL_AT_STEP
    # The time before the kill counts in the resumed run's cost: pretend it was long.
    checkpoint["train_seconds"] += BEFORE_KILL_SECONDS
    torch.save(checkpoint, last)

    cfg.ckpt_path = "last"
    started = time.perf_counter()
    resumed = train(cfg)
    resume_seconds = time.perf_counter() - started
    before = checkpoint["train_seconds"]
    assert before < resumed["cost"]["train_seconds"] <= before + resume_seconds
    assert resumed["test"] == uninterrupted["test"]
    for key in ("train_steps", "forward_passes", "backward_passes"):
        assert resumed["cost"][key] == uninterrupted["cost"][key]
    assert json.loads((interrupted_dir / "metrics.json").read_text())["test"] == uninterrupted["test"]
    # The test metrics come from the best (validation) checkpoint, which may predate the kill:
    # the final adapters must match too.
    final = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
             for d in (tmp_path, interrupted_dir)]
    assert final[0].keys() == final[1].keys()
    for name in final[0]:
        assert torch.equal(final[0][name], final[1][name]), name


def test_runtime_knobs_and_bookkeeping_never_make_a_config_differ():
    from eisam.resume import config_differences

    saved = {"method": {"rho": 0.05}, "ckpt_path": None, "decoding": {"num_beams": 10}}
    now = {"method": {"rho": 0.05}, "ckpt_path": "last", "decoding": {"num_beams": 10},
           "runtime": {"prompt_kv_cache_max_gb": 16},  # added after the run was saved
           "selected": {"eisam": {"rho": 0.05}}}  # compared through the method.* values it resolves into
    assert config_differences(now, saved) == []
    assert config_differences({**now, "method": {"rho": 0.2}}, saved) == ["method.rho"]
    assert config_differences({**now, "decoding": {"search": "beam"}}, saved) == [  # a key gone or new is a change
        "decoding.num_beams", "decoding.search"]
