"""Malformed atomic files, one case per row of docs/hostile_inputs.md: a clear error that names the
file, the line or field and what was expected, or a tolerated / repaired read whose result and
count in `RecData.info` are checked."""
import codecs
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from eisam.data import DataError, RecData, load_rec_data
from eisam.data.atomic import parse_time

INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float"
ITEM_HEADER = "item_id:token\ttitle:token_seq"
# user a: items 1 2 3 4 (lines 2-5); user b: 3 1 2 (lines 6-8); leave-one-out needs 3 per user
INTER_ROWS = ["a\t1\t1", "a\t2\t2", "a\t3\t3", "a\t4\t4", "b\t3\t1", "b\t1\t2", "b\t2\t3"]
ITEM_ROWS = ["1\tOne", "2\tTwo", "3\tThree", "4\tFour"]
PLAIN = {"a": ["1", "2", "3", "4"], "b": ["3", "1", "2"]}


def atomic(rows: list[str], header: str = INTER_HEADER, sep: str = "\n") -> str:
    """A file's text: the header, then one row per line, each line ended by `sep`."""
    return sep.join([header, *rows]) + sep


def inter(*replace: tuple[int, str], extra: tuple[str, ...] = ()) -> str:
    """INTER_ROWS with the rows on the given file lines replaced, and `extra` rows appended."""
    rows = list(INTER_ROWS)
    for line, row in replace:
        rows[line - 2] = row
    return atomic(rows + list(extra))


INTER, ITEMS = atomic(INTER_ROWS), atomic(ITEM_ROWS, ITEM_HEADER)


def sequences(d: RecData) -> dict[str, list[str]]:
    """Each evaluated user's whole sequence as item ids, oldest first (history_len 10 holds it all)."""
    ids = d.items["item_id"].tolist()
    return {s.user: [ids[i] for i in s.history + (s.target,)] for s in d.test}


def reads_plain(d: RecData, log: str) -> None:
    assert sequences(d) == PLAIN and d.info["n_interactions"] == 7 and d.info["time_format"] == "numeric"


def iso_converted(d: RecData, log: str) -> None:
    # a's item 2 at 11:30+02:00 is 09:30 UTC, before item 1 at 10:00Z
    assert sequences(d) == {"a": ["2", "1", "3", "4"], "b": ["3", "1", "2"]}
    assert d.info["time_format"] == "iso8601" and d.info["time_ties"] == 0


def negative_kept(d: RecData, log: str) -> None:
    assert sequences(d) == {"a": ["4", "2", "1", "3"], "b": ["3", "1", "2"]}
    assert d.info["time_format"] == "numeric" and d.info["n_interactions"] == 7


def ties_counted(d: RecData, log: str) -> None:
    assert sequences(d) == {"a": ["3", "1", "2", "4"], "b": ["3", "1", "2"]}  # ties in file order
    assert d.info["time_ties"] == 3  # a: 1 and 2 tie with 3; b: 2 ties with 1; b's 3 shares a time only with a
    assert "3 interaction(s) share their user's timestamp with an earlier one; kept in file order" in log


def short_user_dropped(n: int) -> Callable[[RecData, str], None]:
    def check(d: RecData, log: str) -> None:
        assert sequences(d) == PLAIN and d.info["raw"]["n_users"] == 3
        assert (d.info["dropped"]["short_users"], d.info["dropped"]["short_user_interactions"]) == (1, n)
    return check


def inner_space_kept(d: RecData, log: str) -> None:
    assert sequences(d) == {"a b": PLAIN["a"], "b": PLAIN["b"]}


def utf16_read(d: RecData, log: str) -> None:
    reads_plain(d, log)
    assert d.info["encoding"] == "utf-16"


@dataclass(frozen=True)
class Case:
    id: str
    inter: str | bytes | None = INTER  # file contents (str: written as UTF-8); None: no file
    item: str | bytes | None = ITEMS
    error: tuple[str, ...] = ()        # parts the DataError message must contain
    check: Callable[[RecData, str], None] | None = None  # (data, log text), when the load succeeds
    kw: dict = field(default_factory=dict)
    root: str = ""                     # data.root below tmp_path (the files are written to tmp_path)


ISO = ["a\t1\t2021-03-04T10:00:00Z", "a\t2\t2021-03-04T11:30:00+02:00", "a\t3\t2021-03-05",
       "a\t4\t2021-03-06 08:00:00", "b\t3\t1969-07-20T20:17:00Z", "b\t1\t2021-03-04T10:00:00Z",
       "b\t2\t2021-03-04T10:00:00.5Z"]
UNKNOWN_TYPE = ("unknown type", "the types are ('token', 'token_seq', 'float', 'float_seq')")
NOT_A_TIME = "expected a finite number (seconds since 1970) or an ISO-8601 date-time"
NOT_AN_ID = "expected a non-empty id without leading or trailing whitespace"
UTF16_FIX = ("UTF-16 byte-order mark", "re-encode it as UTF-8", "data.encoding=utf-16")

CASES = [
    # timestamps
    Case("iso8601_timestamps", inter=atomic(ISO), check=iso_converted),
    Case("iso8601_mixed_with_numbers", inter=atomic([ISO[0], "a\t2\t1614852000", *ISO[2:]]),
         error=("toy.inter", "field 'timestamp' mixes numbers (line 3: '1614852000')",
                "date-times (line 2: '2021-03-04T10:00:00Z')", "expected one format for the whole column")),
    Case("iso8601_invalid_date", inter=atomic([*ISO[:3], "a\t4\t2021-13-45T10:00:00Z", *ISO[4:]]),
         error=("toy.inter, line 5", "field 'timestamp' is '2021-13-45T10:00:00Z'", NOT_A_TIME)),
    Case("time_word_now", inter=atomic([*ISO[:3], "a\t4\tnow", *ISO[4:]]),
         error=("toy.inter, line 5", "field 'timestamp' is 'now'", NOT_A_TIME)),
    Case("negative_timestamps", inter=inter((2, "a\t1\t-100"), (3, "a\t2\t-200.5"), (5, "a\t4\t-1e9")),
         check=negative_kept),
    Case("nan_time", inter=inter((3, "a\t2\tnan")),
         error=("toy.inter, line 3", "field 'timestamp' is 'nan'", NOT_A_TIME)),
    Case("inf_time", inter=inter((4, "a\t3\tinf")),
         error=("toy.inter, line 4", "field 'timestamp' is 'inf'", NOT_A_TIME)),
    Case("empty_time", inter=inter((6, "b\t3\t")), error=("toy.inter, line 6", "field 'timestamp' is ''", NOT_A_TIME)),
    Case("equal_timestamps_counted", check=ties_counted, inter=atomic(
        ["a\t3\t5", "a\t1\t5", "a\t2\t5", "a\t4\t6", "b\t3\t5", "b\t1\t6", "b\t2\t6"])),
    # users too short for leave-one-out
    Case("user_with_one_interaction", inter=inter(extra=("c\t4\t1",)), check=short_user_dropped(1)),
    Case("user_with_two_interactions", inter=inter(extra=("c\t4\t1", "c\t1\t2")), check=short_user_dropped(2)),
    # line forms and encodings
    Case("blank_lines", inter="\n\n".join([INTER_HEADER, "", *INTER_ROWS[:3], "", "", *INTER_ROWS[3:]]) + "\n\n",
         check=reads_plain),
    Case("blank_lines_keep_line_numbers", inter=atomic(["", "a\t1\t1", "", "a \t2\t2", *INTER_ROWS[2:]]),
         error=("toy.inter, line 5", "field 'user_id' is 'a '")),
    Case("no_final_newline", inter=INTER.rstrip("\n"), check=reads_plain),
    Case("mixed_crlf_lf", inter="".join(line + ("\r\n" if i % 2 else "\n")
                                        for i, line in enumerate([INTER_HEADER, *INTER_ROWS])), check=reads_plain),
    Case("lone_cr_line_ends", inter=atomic(INTER_ROWS, sep="\r"),
         error=("toy.inter, line 1", "carriage return (CR) not followed by a line feed", "expected LF or CRLF")),
    Case("lone_cr_in_value", item=atomic(["1\tOne", "2\tTw\ro", *ITEM_ROWS[2:]], ITEM_HEADER),
         error=("toy.item, line 3", "carriage return (CR)", "expected LF or CRLF")),
    Case("nul_byte", inter=inter((4, "a\t3\x00\t3")),
         error=("toy.inter, line 4", "a NUL character", "expected text", "data.encoding=utf-16")),
    Case("utf16_le_bom", inter=codecs.BOM_UTF16_LE + INTER.encode("utf-16-le"),
         error=("toy.inter", "(b'\\xff\\xfe')", "read as utf-8", *UTF16_FIX)),
    Case("utf16_be_bom", inter=codecs.BOM_UTF16_BE + INTER.encode("utf-16-be"),
         error=("toy.inter", "(b'\\xfe\\xff')", *UTF16_FIX)),
    Case("utf16_bom_read_as_latin1", inter=INTER.encode("utf-16"), kw={"encoding": "latin-1"},
         error=("toy.inter", "read as latin-1", *UTF16_FIX)),
    Case("utf16_without_bom", inter=INTER.encode("utf-16-le"),
         error=("toy.inter, line 1", "a NUL character", "UTF-16 without a byte-order mark", "data.encoding=utf-16")),
    Case("utf16_with_encoding_set", inter=INTER.encode("utf-16"), item=ITEMS.encode("utf-16"),
         kw={"encoding": "utf-16"}, check=utf16_read),
    # header
    Case("unknown_type_tok", inter=atomic(INTER_ROWS, INTER_HEADER.replace("user_id:token", "user_id:tok")),
         error=("toy.inter", "header entry(ies) ['user_id:tok']", *UNKNOWN_TYPE)),
    Case("unknown_type_date", inter=atomic(INTER_ROWS, INTER_HEADER.replace("timestamp:float", "timestamp:date")),
         error=("toy.inter", "header entry(ies) ['timestamp:date']", *UNKNOWN_TYPE)),
    Case("duplicate_field_name", inter=atomic([r + "\tx" for r in INTER_ROWS], INTER_HEADER + "\titem_id:token"),
         error=("toy.inter", "field name(s) ['item_id'] appear more than once", "expected each name once")),
    Case("header_only_inter", inter=atomic([]), error=("toy.inter: no rows after the header line", "expected one")),
    Case("header_only_item", item=atomic([], ITEM_HEADER), error=("toy.item: no rows after the header line",)),
    Case("empty_file", inter="", error=("toy.inter", "the first line must be tab-separated 'name:type' fields")),
    # ids
    Case("id_with_inner_space", inter=atomic([r.replace("a\t", "a b\t") for r in INTER_ROWS]), check=inner_space_kept),
    Case("user_id_trailing_space", inter=inter((3, "a \t2\t2")),
         error=("toy.inter, line 3", "field 'user_id' is 'a ', with leading or trailing whitespace", NOT_AN_ID)),
    Case("item_id_leading_space", item=atomic(["1\tOne", " 2\tTwo", *ITEM_ROWS[2:]], ITEM_HEADER),
         error=("toy.item, line 3", "field 'item_id' is ' 2'", NOT_AN_ID)),
    Case("empty_user_id", inter=inter((2, "\t1\t1")),
         error=("toy.inter, line 2", "field 'user_id' is empty", NOT_AN_ID)),
    Case("empty_item_id", item=atomic([*ITEM_ROWS, "\tNo id"], ITEM_HEADER),
         error=("toy.item, line 6", "field 'item_id' is empty", NOT_AN_ID)),
    # item ids across the two files
    Case("item_missing_from_item_file", inter=inter(extra=("b\t9\t9",)),
         error=("toy.inter, line 9: item id '9' is absent from", "toy.item", "1 item id(s) in all")),
    Case("duplicate_item_ids", item=atomic([*ITEM_ROWS, "2\tTwo again"], ITEM_HEADER),
         error=("toy.item: item id(s) listed more than once, expected once each: '2' on lines 3, 6",)),
    # missing files
    Case("missing_data_root", root="nope",
         error=("data.root=", "nope': folder not found", "expected a folder holding toy.inter and toy.item")),
    Case("missing_item_file", item=None, error=("toy.item: file not found", "check data.root and data.name")),
]


def write(path: Path, contents: str | bytes | None) -> None:
    if isinstance(contents, str):
        path.write_bytes(contents.encode("utf-8"))
    elif contents is not None:
        path.write_bytes(contents)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hostile_file(tmp_path, caplog, case):
    write(tmp_path / "toy.inter", case.inter)
    write(tmp_path / "toy.item", case.item)
    caplog.set_level(logging.INFO, logger="eisam.data")
    kw = {"name": "toy", "source": "atomic", "root": str(tmp_path / case.root), **case.kw}
    if case.error:
        with pytest.raises(DataError) as e:
            load_rec_data(**kw)
        for part in case.error:
            assert part in str(e.value), (part, str(e.value))
    else:
        case.check(load_rec_data(**kw), caplog.text)


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


def test_iso8601_to_epoch_seconds():
    """Offsets are honoured, no offset means UTC, a date alone is midnight UTC, before 1970 is negative."""
    values = pd.Series(["1970-01-01T00:00:00Z", "2021-03-04T10:00:00Z", "2021-03-04T12:00:00+02:00",
                        "1969-12-31T23:59:00", "2021-03-04"], index=[2, 3, 4, 5, 6])
    seconds, time_format = parse_time(values, Path("toy.inter"), "timestamp")
    assert time_format == "iso8601" and seconds.index.tolist() == [2, 3, 4, 5, 6]
    assert seconds.tolist() == [0.0, 1614852000.0, 1614852000.0, -60.0, 1614816000.0]
