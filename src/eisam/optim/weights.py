"""Per-item frequency weights ω and popularity groups, computed from training target counts."""

from __future__ import annotations

import torch

WEIGHT_KINDS = ("uniform", "power", "tail_only", "class_balanced")


def item_weights(n_train, kind: str, *, alpha: float = 0.5, beta: float = 0.999,
                 w_max: float = 10.0, head_mask=None) -> torch.Tensor:
    """One weight per item (float32, shape [M]) from the training target counts ``n_train``.

    - ``uniform``: ω_i = 1.
    - ``power``: ω_i = n_i^(-alpha) / Z.
    - ``class_balanced``: ω_i = (1 - beta) / (1 - beta^n_i) / Z.
    - ``tail_only``: 1 on tail items, 0 on head items (``head_mask``, True = head); not normalized.

    For ``power`` and ``class_balanced``, Z makes the mean of ω over the training *samples*
    (Σ n_i ω_i / Σ n_i) equal 1; the weights are then clipped at ``w_max``, so after clipping
    that mean can be below 1. Items never seen as a training target (n_i = 0) get ``w_max``,
    the weight of the rarest possible item; they never enter a training loss anyway.
    """
    if kind not in WEIGHT_KINDS:
        raise ValueError(f"weights kind must be one of {WEIGHT_KINDS}, got {kind!r}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if not 0 < beta < 1:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    if w_max <= 0:
        raise ValueError(f"w_max must be > 0, got {w_max}")
    n = torch.as_tensor(n_train, dtype=torch.float64)
    if n.dim() != 1 or (n < 0).any():
        raise ValueError("n_train must be a 1-D sequence of non-negative counts, one per item")
    if kind == "uniform":
        return torch.ones(len(n))
    if kind == "tail_only":
        if head_mask is None:
            raise ValueError("head_mask (bool [M], True = head item) is required for weights 'tail_only'")
        head = torch.as_tensor(head_mask, dtype=torch.bool)
        if head.shape != n.shape:
            raise ValueError(f"head_mask must have shape {tuple(n.shape)}, got {tuple(head.shape)}")
        return (~head).float()
    if n.sum() == 0:
        raise ValueError(f"weights {kind!r} need at least one training target in n_train")
    seen = n.clamp_min(1)
    raw = seen.pow(-alpha) if kind == "power" else (1 - beta) / (1 - beta ** seen)
    weights = (raw * n.sum() / (n * raw).sum()).clamp(max=w_max)
    return torch.where(n > 0, weights, torch.full_like(weights, w_max)).float()


def popularity_groups(n_train, groups: int) -> torch.Tensor:
    """Group id per item (LongTensor [M]): ``groups`` equal-size item quantiles of n_i.

    Group 0 holds the most popular items. Items are ranked by n_i descending, ties by item id
    ascending (the same order as the head/tail split), so the grouping is deterministic.
    """
    n = torch.as_tensor(n_train, dtype=torch.float64)
    if not 1 <= groups <= len(n):
        raise ValueError(f"groups must be between 1 and the number of items ({len(n)}), got {groups}")
    order = torch.sort(-n, stable=True).indices
    rank = torch.empty(len(n), dtype=torch.long)
    rank[order] = torch.arange(len(n))
    return rank * groups // len(n)


def group_mean_weights(weights: torch.Tensor, n_train, item_groups: torch.Tensor) -> torch.Tensor:
    """ω̄_g (float32 [G]): the mean item weight over the training samples whose target is in group g."""
    n = torch.as_tensor(n_train, dtype=torch.float64)
    size = int(item_groups.max()) + 1
    total = torch.zeros(size, dtype=torch.float64).index_add_(0, item_groups, n * weights.double())
    count = torch.zeros(size, dtype=torch.float64).index_add_(0, item_groups, n)
    return (total / count.clamp_min(1)).float()
