"""The names under which runs log metrics to their experiment loggers (wandb, CSV), in one module.

The training module logs its curves under these names, the pipeline logs the final results through
``flatten``, and the wandb dashboard (``eisam.dashboard``) builds its panels from the same names, so
a renamed key fails the dashboard's test instead of leaving an empty panel.
"""

from __future__ import annotations

K = 10  # the cut-off the tables, figures and dashboard headline (HR@K, NDCG@K)
STEP = "trainer/global_step"  # Lightning's loggers log every metric with the optimizer step under this key

# Training curves (lightning/module.py): one point per optimizer step; val/* and probe/* once per validation
# pass: the target NLL of the validation samples and of as many training samples (the generalization
# gap), overall and by the target's head/tail group.
TRAIN_LOSS = "train/loss"
TRAIN_WEIGHTED_LOSS = "train/weighted_loss"
TRAIN_SHARPNESS = "train/sharpness"  # perturbed minus unperturbed weighted loss: methods with a perturbed pass only
TRAIN_EPS_NORM = "train/eps_norm"
TRAIN_GRAD_NORM = "train/grad_norm"
TRAIN_SKIPPED_STEPS = "train/skipped_steps"
TRAIN_LR = "train/lr"
VAL_NLL = "val/nll"
VAL_HEAD_NLL, VAL_TAIL_NLL = "val/head_nll", "val/tail_nll"
PROBE_NLL, PROBE_HEAD_NLL, PROBE_TAIL_NLL = "probe/nll", "probe/head_nll", "probe/tail_nll"

# Final results, logged once at the end of a run: these sections of metrics.json, flattened.
FINAL_SECTIONS = ("test", "valid", "cost")


def key(*path: str) -> str:
    """The logged name of the value at ``path`` in metrics.json: ("test", "tail", "ndcg@10") -> "test/tail/ndcg@10"."""
    return "/".join(path)


def flatten(tree: dict, *path: str) -> dict[str, float]:
    """Nested metrics -> {logged name: float}; values that are not numbers (None, strings) are left out."""
    flat = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, *path, name))
        elif isinstance(value, (int, float)):
            flat[key(*path, name)] = float(value)
    return flat
