"""Training-split item frequencies n_i and the head/tail split: the one place they are computed.

Saved with every run as `item_stats.csv`; later studies add columns (prior_score, prior_group)
that survive a save/load round trip.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from eisam.data.types import Sample
from eisam.run_files import ITEM_STATS

PRIOR_SCORE, PRIOR_GROUP = "prior_score", "prior_group"  # the long-tail study's columns (eisam.longtail.prior)
_TEXT = ("item_id", "title", "group")  # read verbatim: an item id or title may be 'NA'


class ItemStats:
    """`table`: one row per item index, columns item_idx, item_id, title, n_train, group (+ extras)."""

    def __init__(self, table: pd.DataFrame):
        self.table = table

    @property
    def n_train(self) -> np.ndarray:
        """[M] int: how often each item is a target in the training split."""
        return self.table["n_train"].to_numpy(np.int64)

    @property
    def head_mask(self) -> np.ndarray:
        """[M] bool: True for head items."""
        return (self.table["group"] == "head").to_numpy(bool)

    def most_popular(self, k: int) -> list[int]:
        """The k item indices with most training targets, ties by item index (the `mostpop` list)."""
        return popularity_order(self.n_train)[:k].tolist()

    def with_columns(self, **columns) -> ItemStats:
        """A copy with ``columns`` added (or replaced): later studies extend a run's statistics this way."""
        return ItemStats(self.table.assign(**columns))

    def save(self, path: str | Path) -> Path:
        """Write the table to `path` (a .csv file, or a folder that gets `item_stats.csv`); return the file."""
        path = _csv(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(path, index=False)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ItemStats:
        """Read what `save` wrote, given the same `path`."""
        path = _csv(path)
        columns = pd.read_csv(path, nrows=0).columns
        na = {c: ["", "nan", "NaN", "NA"] for c in columns if c not in _TEXT}
        table = pd.read_csv(path, dtype={c: str for c in _TEXT}, keep_default_na=False, na_values=na)
        return cls(table)


def _csv(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".csv" else path / ITEM_STATS


def popularity_order(scores) -> np.ndarray:
    """Item indices by score descending, ties by item index: the order behind head/tail and mostpop."""
    scores = np.asarray(scores, dtype=float)
    return np.lexsort((np.arange(len(scores)), -scores))  # last key is primary


def head_tail(scores, head_ratio: float) -> np.ndarray:
    """'head' for the top max(1, round(head_ratio * M)) items by score, ties by item index; else 'tail'.

    The one head/tail rule: by training-target count here, by prior score in the long-tail study.
    """
    m = len(scores)
    head = np.zeros(m, bool)
    head[popularity_order(scores)[:max(1, round(head_ratio * m))]] = True
    return np.where(head, "head", "tail")


def compute_item_stats(items: pd.DataFrame, train_samples: Iterable[Sample], head_ratio: float = 0.2) -> ItemStats:
    """Head = the top max(1, round(head_ratio * M)) items by training-target count, ties by item_idx."""
    n = np.bincount([s.target for s in train_samples], minlength=len(items))
    table = items[["item_idx", "item_id", "title"]].reset_index(drop=True).assign(
        n_train=n, group=head_tail(n, head_ratio))
    return ItemStats(table)
