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
import io
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


def atomic_columns(path: Path, columns: dict[str, str], encoding: str = "utf-8") -> dict[str, str]:
    """Check that `path` exists and its header has the fields `columns` (role -> field name);
    return role -> header entry. Cheap, so every file is checked before any is read."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (the path is data.root/data.name{path.suffix}; check data.root and data.name)")
    with open(path, "rb") as f:
        header = _header(_decode(f.readline(), path, encoding))
    if not all(":" in h for h in header):
        raise DataError(f"{path}: the first line must be tab-separated 'name:type' fields, got {header}")
    present = {h.split(":", 1)[0]: h for h in header}
    missing = [f for f in columns.values() if f not in present]
    if missing:
        raise DataError(f"{path}: missing field(s) {missing} (set them in data.fields); fields present: {list(present)}")
    return {role: present[f] for role, f in columns.items()}


def read_atomic(path: Path, columns: dict[str, str], encoding: str = "utf-8") -> pd.DataFrame:
    """Read the header entries `columns` (role -> entry, from `atomic_columns`) as strings named by role.

    Every line must have the header's field count (see `_check_field_counts`): pandas alone would
    drop extra fields and pad missing ones without a word. Quoting is off: titles contain quote
    characters. Strings are kept verbatim (no 'NA' -> NaN).
    """
    text = _decode(path.read_bytes(), path, encoding).replace("\r\n", "\n")
    _check_field_counts(text.split("\n"), path)
    df = pd.read_csv(io.StringIO(text), sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False,
                     lineterminator="\n", index_col=False, usecols=list(columns.values()))
    return df.rename(columns={h: role for role, h in columns.items()})[list(columns)]


def _decode(raw: bytes, path: Path, encoding: str) -> str:
    """`raw` as text, without a leading byte-order mark (spreadsheet exports write one). Bytes that
    are not valid `encoding` stop with the line they are on and the two ways out."""
    try:
        return raw.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        start = raw.rfind(b"\n", 0, e.start) + 1
        context = raw[max(start, e.start - 30):e.end + 30].split(b"\n")[0]
        raise DataError(f"{path}, line {line}: bytes {raw[e.start:e.end]!r} are not valid {encoding} (in {context!r}); "
                        f"re-encode the file as UTF-8 (e.g. iconv -f latin-1 -t utf-8) or set the file's encoding "
                        f"in the dataset config, e.g. data.encoding=latin-1") from None


def _check_field_counts(lines: list[str], path: Path) -> None:
    """Every non-blank line has as many tab-separated fields as the header (`lines[0]`), or one more
    that is empty (a trailing tab). A title with an unescaped tab would otherwise lose its tail."""
    n = len(_header(lines[0]))
    for number, line in enumerate(lines[1:], start=2):
        count = line.count("\t") + 1
        if count != n and line and not (count == n + 1 and line.endswith("\t")):
            fix = ("a tab inside a value splits it: replace it with a space" if count > n
                   else "an empty value still needs its tab")
            raise DataError(f"{path}, line {number}: {count} tab-separated field(s), the header has {n}: "
                            f"{line[:120]!r}; {fix}")


def _header(line: str) -> list[str]:
    """Header entries, without the newline and without one trailing empty entry (a trailing tab)."""
    header = line.rstrip("\r\n").split("\t")
    return header[:-1] if len(header) > 1 and header[-1] == "" else header


def parse_time(values: pd.Series, path: Path, field: str) -> pd.Series:
    """Timestamps as floats; a non-numeric value is a data error, not a silent NaN."""
    out = pd.to_numeric(values, errors="coerce")
    bad = values[out.isna()]
    if len(bad):
        raise DataError(f"{path}: field {field!r} must be numeric; bad values (first rows): {bad.head(3).tolist()}")
    return out.astype(float)
