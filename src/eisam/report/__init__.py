"""The report wing: the paper's tables and figures from run folders, with their statistics.

- ``runs``: reading run folders (metrics.json, predictions.csv, item_stats.csv, config), per-user scores.
- ``stats``: bootstrap intervals over users, paired t-tests, Holm's correction, minimum detectable differences.
- ``tables``, ``figures``: accuracy, paired comparisons, long-tail indicators, cost; head/tail and popularity figures.
- ``cli``: ``python -m eisam.report SWEEP_DIR... [--out DIR] [--only tables|figures]``.
- ``longtail``: the long-tail study's tables and figures (``python -m eisam.report.longtail RUN_DIR...``).
"""

from eisam.report.cli import build_report, main
from eisam.report.runs import load_runs

__all__ = ["build_report", "load_runs", "main"]
