"""The report wing: the paper's tables and figures from run folders, with their statistics.

- ``runs``: reading run folders (metrics.json, predictions.csv, item_stats.csv, config), per-user scores.
- ``stats``: bootstrap intervals over users, paired t-tests, Holm's correction, minimum detectable differences.
- ``tables``, ``figures``: accuracy, paired comparisons, long-tail indicators, cost; head/tail and popularity figures.
- ``cli``: ``python -m eisam.report COMMAND ...``, one command per module:

  - ``tables`` (``sweep``): the report of sweeps, ``tables SWEEP_DIR... [--out DIR] [--only tables|figures]``;
  - ``longtail`` (``eisam.longtail.report``): the long-tail study's tables and figures, ``longtail RUN_DIR... --out DIR``;
  - ``prior-check`` (``prior_check``): the prior instrument's sanity check on a dataset's catalogue;
  - ``base-search`` (``base_search``): the search for a base worth regularizing, on validation runs;
  - ``compare``: a few run folders side by side, each paired by user with the first;
  - ``decoders``: a run's beam search against its exact re-evaluation, per head and tail users;
  - ``rerun``: whether a rerun's runs.csv reproduces a committed one;
  - ``plan``: the paper-scale sweep on a Slurm cluster, its jobs, FLOPs and GPU hours (submits nothing).
"""

from eisam.report.runs import load_runs
from eisam.report.sweep import build_report

__all__ = ["build_report", "load_runs"]
