"""Item text: the exact string an LLM reads in a prompt and must write as its response."""
from __future__ import annotations

import html
import re

import pandas as pd

from eisam.data.types import DataError

_YEAR = re.compile(r"\d{4}")
_ENDS_WITH_YEAR = re.compile(r"\(\d{4}\)$")


def clean_title(raw: str, max_words: int | None = None) -> str:
    """Unescape HTML entities (Amazon titles carry `&amp;`, `&reg;`), collapse whitespace, cap the length.

    Capping keeps prompts short: some Amazon titles are 40+ word product listings.
    """
    words = html.unescape(raw).split()
    return " ".join(words if max_words is None else words[:max_words])


def with_year(title: str, year: str) -> str:
    """'Title (Year)' as in MovieLens (22 bare ml100k titles repeat), unless the year is not a
    4-digit number or the title already ends with one (ml100k item 1412 does, with year 'V')."""
    year = year.strip()
    if not _YEAR.fullmatch(year) or _ENDS_WITH_YEAR.search(title):
        return title
    return f"{title} ({year})"


def make_unique(titles: pd.Series, item_ids: pd.Series) -> pd.Series:
    """Give every item of a shared text the suffix ' [item_id]'.

    All members of a group get it (not all but the first), so the rule does not depend on row
    order and no item keeps the bare text that several real items share.
    """
    shared = titles.duplicated(keep=False)
    out = titles.where(~shared, titles + " [" + item_ids + "]")
    if out.duplicated().any():
        clash = out[out.duplicated(keep=False)].unique()[:5].tolist()
        raise DataError(f"item titles still not unique after adding ' [item_id]': {clash}")
    return out

