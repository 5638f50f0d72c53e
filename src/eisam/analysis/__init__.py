"""The long-tail study (docs/longtail_study.md): prior long tail versus data long tail.

- ``prior``: prior popularity of items (base-model mean token log-likelihood under a neutral prompt), cached.
- ``quadrants``: HR/NDCG in prior-head/tail x data-head/tail.
- ``study``: the hooks ``eisam.pipeline`` calls when ``analysis.prior.enabled``.
- ``figures``, ``longtail``: tables and figures from run folders (``python -m eisam.analysis.longtail``).
- ``prior_check``: the sanity check on a real dataset (``python -m eisam.analysis.prior_check``).
"""

from eisam.analysis.prior import prior_groups, prior_scores
from eisam.analysis.quadrants import quadrant_metrics

__all__ = ["prior_groups", "prior_scores", "quadrant_metrics"]
