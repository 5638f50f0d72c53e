"""The long-tail study inside a run (``analysis.prior.enabled=true``): what ``eisam.pipeline`` calls.

- ``ensure_prior`` (before training, and again at test time, where it is a no-op if already done):
  prior scores of the catalogue, added to the run's item statistics as ``prior_score``/``prior_group``.
- ``longtail_results`` (at test time): ``test.quadrants`` and the ``prior`` block of metrics.json.
"""

from __future__ import annotations

import weakref
from pathlib import Path

from eisam.analysis.prior import PRIOR_GROUP, attach_prior, prior_config
from eisam.analysis.quadrants import quadrant_metrics

# ItemStats object -> its prior block, so a second call in the same process does not score again.
_ATTACHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def ensure_prior(cfg, model, datamodule) -> dict | None:
    """The ``prior`` block (scoring the catalogue once per item table); None when the prior is off."""
    if prior_config(cfg) is None:
        return None
    stats = datamodule.data.stats
    if stats not in _ATTACHED or PRIOR_GROUP not in stats.table.columns:
        _ATTACHED[stats] = attach_prior(cfg, model, datamodule)
    return _ATTACHED[stats]


def longtail_results(cfg, model, datamodule, predictions, out_dir: Path | None = None) -> dict | None:
    """``{"quadrants": ..., "prior": ...}`` for metrics.json, or None when the prior is off.

    If the prior was not attached yet (e.g. ``eisam.evaluate`` of a finished run), it is computed now
    (adapters disabled) and the item table with the prior columns is saved to ``out_dir``.
    """
    if prior_config(cfg) is None:
        return None
    stats = datamodule.data.stats
    fresh = PRIOR_GROUP not in stats.table.columns
    prior = ensure_prior(cfg, model, datamodule)
    if fresh and out_dir is not None:
        from eisam.run_files import ITEM_STATS

        stats.save(Path(out_dir) / ITEM_STATS)
    quadrants = quadrant_metrics(predictions["rank"].to_numpy(), predictions["target"].to_numpy(), stats.table,
                                 ks=tuple(cfg.decoding.ks))
    return {"quadrants": quadrants, "prior": prior}
