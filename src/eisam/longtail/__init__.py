"""The long-tail study (docs/longtail_study.md): the items' prior long tail against the data's, in one package.

- ``prior``: prior popularity of items (base-model mean token log-likelihood under a neutral prompt),
  cached; ``attach_prior`` adds it to a run's item statistics (``analysis.prior.enabled``).
- ``quadrants``: HR/NDCG in prior-head/tail x data-head/tail.
- ``check``: the instrument's sanity check on a real dataset (``python -m eisam.report prior-check``).
- ``report``: the study's tables and figures from run folders (``python -m eisam.report longtail``).

Nothing here reads a Hydra config or imports Lightning: the entry points hand in a ``RunContext`` and
``PriorSettings``.
"""

from eisam.longtail.prior import PriorSettings, attach_prior, prior_groups, prior_scores
from eisam.longtail.quadrants import quadrant_metrics

__all__ = ["PriorSettings", "attach_prior", "prior_groups", "prior_scores", "quadrant_metrics"]
