"""Readers for RecBole atomic files: tab-separated, one `name:type` header line.

Root rule: a dataset NAME under ROOT is `ROOT/NAME.inter` plus `ROOT/NAME.item` (so
`data.root=/work/shared/data/games data.name=games`). MovieLens-100K ships inside the recbole
wheel (`pip install --no-deps recbole==1.2.1`) and is found there without importing recbole.
Users with internet get more datasets in this format from RecBole's dataset collection
(https://github.com/RUCAIBox/RecSysDatasets: ml-1m, Amazon categories, steam, lastfm, ...).
"""
from __future__ import annotations

import csv
import importlib.metadata
from pathlib import Path

import pandas as pd

from eisam.data.types import DataError

RECBOLE_PIN = "recbole==1.2.1"


def recbole_root(name: str) -> Path:
    """The folder of a dataset that ships inside the recbole wheel (only 'ml-100k' does)."""
    try:
        dist = importlib.metadata.distribution("recbole")
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"data.source=recbole_wheel needs the recbole wheel, which ships MovieLens-100K: "
                        f"pip install --no-deps {RECBOLE_PIN}") from None
    root = Path(dist.locate_file(f"recbole/dataset_example/{name}"))
    if not root.is_dir():
        raise DataError(f"data.name={name!r}: {root} does not exist; the recbole wheel ships only 'ml-100k'")
    return root


def atomic_columns(path: Path, columns: dict[str, str]) -> dict[str, str]:
    """Check that `path` exists and its header has the fields `columns` (role -> field name);
    return role -> header entry. Cheap, so every file is checked before any is read."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (the path is data.root/data.name{path.suffix}; check data.root and data.name)")
    with open(path, encoding="utf-8", newline="") as f:
        header = f.readline().rstrip("\r\n").split("\t")
    if not all(":" in h for h in header):
        raise DataError(f"{path}: the first line must be tab-separated 'name:type' fields, got {header}")
    present = {h.split(":", 1)[0]: h for h in header}
    missing = [f for f in columns.values() if f not in present]
    if missing:
        raise DataError(f"{path}: missing field(s) {missing} (set them in data.fields); fields present: {list(present)}")
    return {role: present[f] for role, f in columns.items()}


def read_atomic(path: Path, columns: dict[str, str]) -> pd.DataFrame:
    """Read the header entries `columns` (role -> entry, from `atomic_columns`) as strings named by role.

    Quoting is off: titles contain quote characters. Strings are kept verbatim (no 'NA' -> NaN).
    """
    try:
        df = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False,
                         encoding="utf-8", usecols=list(columns.values()))
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a valid tab-separated UTF-8 atomic file: {e}") from None
    return df.rename(columns={h: role for role, h in columns.items()})[list(columns)]


def parse_time(values: pd.Series, path: Path, field: str) -> pd.Series:
    """Timestamps as floats; a non-numeric value is a data error, not a silent NaN."""
    out = pd.to_numeric(values, errors="coerce")
    bad = values[out.isna()]
    if len(bad):
        raise DataError(f"{path}: field {field!r} must be numeric; bad values (first rows): {bad.head(3).tolist()}")
    return out.astype(float)
