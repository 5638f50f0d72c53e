"""Framework-free optimizer core: item weights, EISAM and its baselines as step objects (plain PyTorch)."""

from __future__ import annotations

import torch

from .sharpness import GroupSAM, ItemwiseSAM, StepMethod, StepReport, WeightedLoss
from .weights import group_mean_weights, item_weights, popularity_groups

__all__ = ["GroupSAM", "ItemwiseSAM", "StepMethod", "StepReport", "WeightedLoss", "build_method",
           "group_mean_weights", "item_weights", "popularity_groups"]

KINDS = ("weighted", "sam", "group")


def build_method(params, n_train, head_mask, *, name: str, kind: str, lr: float = 1e-3,
                 weight_decay: float = 0.0, betas=(0.9, 0.999), rho: float = 0.05, lam: float = 1.0,
                 weights: str = "uniform", alpha: float = 0.5, beta: float = 0.999, w_max: float = 10.0,
                 direction: str = "current", adaptive: bool = False, eta: float = 0.01, replay_rng: bool = True,
                 groups: int = 1,
                 max_grad_norm: float | None = None, max_consecutive_skips: int = 10,
                 grad_reduce=None) -> StepMethod:
    """AdamW on the trainable ``params`` wrapped in the step object that ``kind`` names.

    Called by the Hydra configs in ``conf/method/`` (``_partial_: true``) with the run's params,
    training target counts and head mask. ``kind``: ``weighted`` (base, reweight_*), ``sam``
    (sam, imbsam, eisam, eisam_fast) or ``group`` (groupsam); ``name`` is stored as ``.name``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    params = [p for p in params if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    omega = item_weights(n_train, weights, alpha=alpha, beta=beta, w_max=w_max, head_mask=head_mask)
    omega = None if weights == "uniform" else omega  # None lets SAM skip the second backward at θ
    common = dict(max_grad_norm=max_grad_norm, max_consecutive_skips=max_consecutive_skips,
                  grad_reduce=grad_reduce)
    sharpness = dict(rho=rho, lam=lam, adaptive=adaptive, eta=eta, replay_rng=replay_rng, **common)
    if kind == "weighted":
        method = WeightedLoss(params, optimizer, omega, **common)
    elif kind == "sam":
        method = ItemwiseSAM(params, optimizer, omega, direction=direction, **sharpness)
    else:
        item_groups = popularity_groups(n_train, groups)
        group_weights = None if omega is None else group_mean_weights(omega, n_train, item_groups)
        method = GroupSAM(params, optimizer, item_groups, group_weights, **sharpness)
    method.name = name
    return method
