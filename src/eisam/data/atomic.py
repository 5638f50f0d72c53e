"""Readers for RecBole atomic files: tab-separated, one `name:type` header line.

Root rule: a dataset NAME under ROOT is `ROOT/NAME.inter` plus `ROOT/NAME.item` (so
`data.root=/work/shared/data/games data.name=games`). MovieLens-100K ships inside the recbole
wheel (`pip install --no-deps recbole==1.2.1`) and is found there without importing recbole.
Users with internet get more datasets in this format from RecBole's dataset collection
(https://github.com/RUCAIBox/RecSysDatasets: ml-1m, Amazon categories, steam, lastfm, ...).

What a file may look like (docs/hostile_inputs.md lists every case and its test): a UTF-8
byte-order mark, CRLF or mixed CRLF/LF line ends, blank lines and a trailing tab are read as the
plain file. A NUL character, a lone CR, a UTF-16 byte-order mark (unless data.encoding says UTF-16),
a header type other than RecBole's, a field name given twice, a file without rows, and an id that
is empty or has surrounding whitespace stop with the file and line. Ids are kept verbatim: an inner
space is part of the id.
"""
from __future__ import annotations

import codecs
import csv
import importlib.metadata
import io
from pathlib import Path

import numpy as np
import pandas as pd

from eisam.data.types import DataError

RECBOLE_PIN = "recbole==1.2.1"
ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")  # RecBole's FeatureType values
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
ISO_DATE = r"[+-]?\d{4}-\d{2}-\d{2}"  # pandas also reads 'now' and 'today' as ISO-8601
TEXT_FAULTS = {
    "\x00": "a NUL character: the file is binary, UTF-16 without a byte-order mark, or corrupt; expected "
            "text (for UTF-16, re-encode as UTF-8 with iconv -f utf-16 -t utf-8 or set data.encoding=utf-16)",
    "\r": "a carriage return (CR) not followed by a line feed: old Mac line ends or a CR inside a value; "
          "expected LF or CRLF line ends (convert old Mac files with tr '\\r' '\\n')",
}


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
    """Check that `path` exists and its header is well-formed (`_check_header`) with the fields `columns`
    (role -> field name); return role -> header entry. Cheap, so every file is checked before any is read."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (the path is data.root/data.name{path.suffix}; check data.root and data.name)")
    header = _header(_first_line(path, encoding))
    present = _check_header(header, path)
    missing = [f for f in columns.values() if f not in present]
    if missing:
        raise DataError(f"{path}: missing field(s) {missing} (set them in data.fields); fields present: {list(present)}")
    return {role: present[f] for role, f in columns.items()}


def read_atomic(path: Path, columns: dict[str, str], encoding: str = "utf-8",
                ids: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read the header entries `columns` (role -> entry, from `atomic_columns`) as strings named by role,
    indexed by file line number (for error messages); the roles in `ids` are checked by `_check_ids`.

    Every line must have the header's field count (see `_check_field_counts`): pandas alone would
    drop extra fields and pad missing ones without a word. Quoting is off: titles contain quote
    characters. Strings are kept verbatim (no 'NA' -> NaN).
    """
    text = _check_text(_decode(path.read_bytes(), path, encoding), path)
    lines = text.split("\n")
    _check_field_counts(lines, path)
    df = pd.read_csv(io.StringIO(text), sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False,
                     lineterminator="\n", index_col=False, usecols=list(columns.values()))
    if df.empty:
        raise DataError(f"{path}: no rows after the header line; expected one tab-separated row per line")
    df.index = _row_line_numbers(lines)
    df = df.rename(columns={h: role for role, h in columns.items()})[list(columns)]
    for role in ids:
        _check_ids(df[role], path, columns[role])
    return df


def parse_time(values: pd.Series, path: Path, field: str) -> tuple[pd.Series, str]:
    """Timestamps as float seconds, and the column's format: 'numeric' (finite numbers; negative ones
    are before 1970) or 'iso8601' (every value an ISO-8601 date, with optional time and offset; no
    offset means UTC), as seconds since 1970-01-01 UTC. Anything else would sort nowhere in particular,
    so a value that is neither, or a column mixing the two, stops with its line (`values`' index)."""
    numbers = pd.to_numeric(values, errors="coerce")
    finite = np.isfinite(numbers)
    if finite.all():
        return numbers.astype(float), "numeric"
    others = values[~finite]
    dates = pd.to_datetime(others.where(others.str.match(ISO_DATE)), format="ISO8601", utc=True, errors="coerce")
    if dates.isna().any():
        line = dates.isna().idxmax()
        raise DataError(f"{path}, line {line}: field {field!r} is {values[line]!r}; expected a finite number "
                        f"(seconds since 1970) or an ISO-8601 date-time such as 2021-03-04T10:00:00Z")
    if finite.any():
        number, date = finite.idxmax(), dates.index[0]
        raise DataError(f"{path}: field {field!r} mixes numbers (line {number}: {values[number]!r}) and ISO-8601 "
                        f"date-times (line {date}: {values[date]!r}); expected one format for the whole column")
    return (dates - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1), "iso8601"


def _first_line(path: Path, encoding: str) -> str:
    """The header line, decoding only that line; a line that does not decode alone (UTF-16, bad bytes)
    gets the whole file decoded, so a real error names its own line."""
    with open(path, "rb") as f:
        raw = f.readline()
    try:
        text = _decode(raw, path, encoding)
    except DataError:
        text = _decode(path.read_bytes(), path, encoding)
    return _check_text(text, path).partition("\n")[0]


def _check_header(header: list[str], path: Path) -> dict[str, str]:
    """Field name -> header entry, after checking every entry is `name:type` with a RecBole type and
    no name comes twice (pandas would rename the second one 'name.1' without a word)."""
    if not all(":" in h for h in header):
        raise DataError(f"{path}: the first line must be tab-separated 'name:type' fields, got {header}")
    unknown = [h for h in header if h.split(":", 1)[1] not in ATOMIC_TYPES]
    if unknown:
        raise DataError(f"{path}: header entry(ies) {unknown} have an unknown type; the types are {ATOMIC_TYPES}")
    names = pd.Series([h.split(":", 1)[0] for h in header])
    twice = names[names.duplicated()].unique().tolist()
    if twice:
        raise DataError(f"{path}: field name(s) {twice} appear more than once in the header {header}; "
                        f"expected each name once")
    return dict(zip(names, header))


def _decode(raw: bytes, path: Path, encoding: str) -> str:
    """`raw` as text, without a leading byte-order mark (spreadsheet exports write one). Bytes that
    are not valid `encoding`, or a UTF-16 file read as anything else, stop with the ways out."""
    if raw.startswith(UTF16_BOMS) and not codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        raise DataError(f"{path}: the file starts with a UTF-16 byte-order mark ({raw[:2]!r}) but is read as "
                        f"{encoding}; re-encode it as UTF-8 (iconv -f utf-16 -t utf-8) or set data.encoding=utf-16")
    try:
        return raw.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        start = raw.rfind(b"\n", 0, e.start) + 1
        context = raw[max(start, e.start - 30):e.end + 30].split(b"\n")[0]
        raise DataError(f"{path}, line {line}: bytes {raw[e.start:e.end]!r} are not valid {encoding} (in {context!r}); "
                        f"re-encode the file as UTF-8 (e.g. iconv -f latin-1 -t utf-8) or set the file's encoding "
                        f"in the dataset config, e.g. data.encoding=latin-1") from None


def _check_text(text: str, path: Path) -> str:
    """`text` with CRLF line ends as LF; a character in `TEXT_FAULTS` stops with its line."""
    text = text.replace("\r\n", "\n")
    for char, fault in TEXT_FAULTS.items():
        at = text.find(char)
        if at >= 0:
            line = text.count("\n", 0, at) + 1
            raise DataError(f"{path}, line {line}: {fault}")
    return text


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


def _row_line_numbers(lines: list[str]) -> np.ndarray:
    """File line numbers (1 = header) of the rows pandas reads: it skips empty lines, error messages must not."""
    lengths = np.fromiter(map(len, lines[1:]), dtype=np.int64, count=len(lines) - 1)
    return np.flatnonzero(lengths) + 2


def _check_ids(values: pd.Series, path: Path, entry: str) -> None:
    """An id is non-empty and has no leading or trailing whitespace ('a ' next to 'a' would split one
    user in two); an inner space is part of the id. Checked on distinct values, then located."""
    distinct = pd.Series(values.unique())
    bad = distinct[(distinct == "") | (distinct.str.strip() != distinct)]
    if len(bad):
        value = bad.iloc[0]
        problem = "is empty" if value == "" else f"is {value!r}, with leading or trailing whitespace"
        raise DataError(f"{path}, line {(values == value).idxmax()}: field {entry.split(':')[0]!r} {problem}; expected "
                        f"a non-empty id without leading or trailing whitespace (an inner space is part of the id)")


def _header(line: str) -> list[str]:
    """Header entries, without the newline and without one trailing empty entry (a trailing tab)."""
    header = line.rstrip("\r\n").split("\t")
    return header[:-1] if len(header) > 1 and header[-1] == "" else header
