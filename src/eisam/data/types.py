"""The records the data layer hands to training, decoding and evaluation."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from eisam.data.item_stats import ItemStats


class DataError(ValueError):
    """Bad input data or data config; the message names the file/field/config key and what was expected."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One next-item case: the prompt is built from `history`, the response is `target`'s title."""

    user: str                 # original user token
    history: tuple[int, ...]  # item indices, oldest first, at most history_len
    target: int               # item index


@dataclass
class RecData:
    """A loaded dataset: catalogue, the three splits, training-split item statistics and a JSON record."""

    name: str
    items: pd.DataFrame  # row i = item index i; columns item_idx, item_id, title (unique, non-empty)
    train: list[Sample]
    valid: list[Sample]
    test: list[Sample]
    stats: ItemStats
    info: dict = field(default_factory=dict)  # JSON-serialisable; saved with every run
