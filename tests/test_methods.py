"""Every method trains the real composed config inside the Lightning module and reports its cost."""

from __future__ import annotations

import json

import pytest

from eisam.pipeline import train

# (forward, backward) passes per step, as the spec's methods table gives them; groupsam with
# G = 4 needs one backward per group at θ and one per perturbation (see docs/method.md).
PASSES = {
    "base": (1, 1), "reweight_ips": (1, 1), "reweight_cb": (1, 1), "sam": (2, 2), "imbsam": (2, 3),
    "eisam": (2, 3), "eisam_fast": (2, 2), "groupsam": (5, 8),
}


@pytest.mark.parametrize("method", sorted(PASSES))
def test_method_trains_an_epoch_and_writes_metrics(smoke_cfg, tmp_path, method):
    cfg = smoke_cfg(f"method={method}", "data.max_train_samples=96", "data.max_eval_users=8")
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["run"]["method"] == method
    cost = metrics["cost"]
    steps = cost["train_steps"]
    assert steps == 96 // cfg.batch_size and cost["skipped_steps"] == 0
    forward, backward = PASSES[method]
    if method == "groupsam":  # groups absent from a batch cost nothing: at most G + 1 / 2G
        assert steps < cost["forward_passes"] <= forward * steps and cost["backward_passes"] <= backward * steps
    else:  # eisam_fast has no stored direction on its first step, which costs one more backward
        first_step_extra = 1 if method == "eisam_fast" else 0
        assert cost["forward_passes"] == forward * steps
        assert cost["backward_passes"] == backward * steps + first_step_extra
    assert metrics["test"]["n_users"]["overall"] == 8
