"""Accuracy in the four quadrants prior-head/tail x data-head/tail of the test targets.

Data head/tail: the run's training-split ``group`` column; prior head/tail: its ``prior_group``
column (``eisam.longtail.prior``). HR and NDCG are ``eisam.metrics.ranking.hit_ndcg``: nothing is
redefined here, cases are only split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from eisam.data.item_stats import PRIOR_GROUP
from eisam.metrics.ranking import KS, hit_ndcg

PRIOR_LEVELS = ("prior_head", "prior_tail")
DATA_LEVELS = ("data_head", "data_tail")
CELLS = tuple((p, d) for p in PRIOR_LEVELS for d in DATA_LEVELS)


def item_quadrants(table: pd.DataFrame) -> pd.DataFrame:
    """Per item: ``prior`` ('prior_head'/'prior_tail') and ``data`` ('data_head'/'data_tail')."""
    missing = {"group", PRIOR_GROUP} - set(table.columns)
    if missing:
        raise KeyError(f"item table lacks {sorted(missing)}: run with analysis.prior.enabled=true")
    for col in ("group", PRIOR_GROUP):
        bad = set(table[col]) - {"head", "tail"}
        if bad:
            raise ValueError(f"item table column {col!r} has values other than head/tail: {sorted(bad)}")
    return pd.DataFrame({"prior": "prior_" + table[PRIOR_GROUP].astype(str),
                         "data": "data_" + table["group"].astype(str)})


def quadrant_metrics(ranks, targets, table: pd.DataFrame, ks: Sequence[int] = KS) -> dict:
    """``{prior_head|prior_tail: {data_head|data_tail|all: {hr@K, ndcg@K..., n_users}}}`` over the
    cases (1-based ``ranks`` of their ``targets``, -1 = not recommended); an empty cell has None metrics."""
    ranks = np.asarray(ranks, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    quad = item_quadrants(table)
    prior = quad["prior"].to_numpy()[targets] if len(targets) else np.array([], dtype=object)
    data = quad["data"].to_numpy()[targets] if len(targets) else np.array([], dtype=object)
    out = {}
    for p in PRIOR_LEVELS:
        out[p] = {}
        for d in (*DATA_LEVELS, "all"):
            mask = (prior == p) & ((data == d) if d != "all" else True)
            out[p][d] = {**hit_ndcg(ranks[mask], ks), "n_users": int(mask.sum())}
    return out


def quadrant_frame(quadrants: dict, metrics: Sequence[str] = ("hr@10", "ndcg@10")) -> pd.DataFrame:
    """The four cells of ``quadrant_metrics`` as rows: prior, data, the chosen metrics, n_users."""
    rows = [{"prior": p, "data": d, **{m: quadrants[p][d].get(m) for m in metrics},
             "n_users": quadrants[p][d]["n_users"]} for p, d in CELLS]
    return pd.DataFrame(rows)
