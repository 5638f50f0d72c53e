"""The long-tail study's instrument (docs/longtail_study.md): prior long tail versus data long tail.

- ``prior``: prior popularity of items (base-model mean token log-likelihood under a neutral prompt), cached.
- ``quadrants``: HR/NDCG in prior-head/tail x data-head/tail.
- ``study``: the hooks ``eisam.pipeline`` calls when ``analysis.prior.enabled``.
- ``prior_check``: the sanity check on a real dataset (``python -m eisam.analysis.prior_check``).

Its tables and figures, read from run folders, are the report's: ``eisam.report.longtail``.
"""

from eisam.analysis.prior import prior_groups, prior_scores
from eisam.analysis.quadrants import quadrant_metrics

__all__ = ["prior_groups", "prior_scores", "quadrant_metrics"]
