"""`load_rec_data`: files or generator -> cleaned catalogue, per-user sequences, splits, item stats.

Decisions (all recorded in `RecData.info`):
- Exact duplicate rows (same user, item and time) are always dropped: one event written twice.
  Repeats of a (user, item) pair at other times are kept or reduced to the first / last by
  `rm_dup_inter`, RecBole's option of that name, before any other filter. Kept repeats can put a
  test target in its own prompt; `test_targets_in_history` counts those samples.
- An item whose title is empty after cleaning is dropped with its interactions: an LLM can
  neither read nor write an empty title, and a made-up "Item <id>" would teach it noise.
- Shared texts get ' [item_id]' appended on every member (see `text.make_unique`).
- The catalogue is the items left in the filtered interactions, indexed 0..M-1 in token order
  (numeric order when every token is a number, e.g. ml-100k item_idx i is item id i+1).
- Item statistics are computed on the training samples actually used (after subsampling).
- Times are numbers or ISO-8601 date-times (converted to seconds since 1970 UTC), never a mix:
  `time_format`. Interactions of one user at the same time keep their file order; `time_ties`
  counts those that share their (user, time) with an earlier kept row.
- Malformed files stop before any model is loaded (docs/hostile_inputs.md lists the cases).
"""
from __future__ import annotations

import codecs
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from eisam.data.atomic import atomic_columns, parse_time, read_atomic, recbole_root
from eisam.data.item_stats import compute_item_stats
from eisam.data.splits import MIN_INTERACTIONS, SPLITS, split_samples, subsample
from eisam.data.synthetic import synthetic_frames
from eisam.data.text import clean_title, make_unique, with_year
from eisam.data.types import DataError, RecData

log = logging.getLogger(__name__)
SOURCES = ("recbole_wheel", "atomic", "synthetic")
RM_DUP_INTER = (None, "first", "last")
FIELDS = {"user": "user_id", "item": "item_id", "time": "timestamp", "title": "title", "year": None}


def load_rec_data(*, name: str, source: str, root: str | None = None, fields: Mapping | None = None,
                  split: str = "leave_one_out", history_len: int = 10, k_core: int = 0, head_ratio: float = 0.2,
                  title_max_words: int | None = 32, max_train_samples: int | None = None,
                  max_eval_users: int | None = None, seed: int = 0, synthetic: Mapping | None = None,
                  rm_dup_inter: str | None = None, encoding: str = "utf-8") -> RecData:
    """Load dataset `name` from `source` ('recbole_wheel': ml-100k inside the recbole wheel;
    'atomic': `root/name.inter` + `root/name.item`, read as `encoding`; 'synthetic': generated from `synthetic`)."""
    check_data_config(source=source, split=split, history_len=history_len, k_core=k_core, head_ratio=head_ratio,
                  title_max_words=title_max_words, max_train_samples=max_train_samples,
                  max_eval_users=max_eval_users, root=root, rm_dup_inter=rm_dup_inter, encoding=encoding)
    fields = {**FIELDS, **dict(fields or {})}
    inter, items, files, time_format = _read(name, source, root, fields, synthetic, encoding)
    raw = {"n_users": inter["user"].nunique(), "n_items": inter["item"].nunique(), "n_interactions": len(inter)}
    inter, n_exact, n_repeated = _deduplicate(inter, name=name, rm_dup_inter=rm_dup_inter)
    items["title"] = _item_text(items, title_max_words)
    inter, dropped = _filter(inter, items, name=name, split=split, k_core=k_core)
    n_ties = _time_ties(inter, name)
    catalogue, n_suffixed = _catalogue(inter, items)
    users, seqs, times = _sequences(inter, catalogue["item_id"])
    train, valid, test = split_samples(users, seqs, times, split, history_len)
    if not train:
        raise DataError(f"{name}: the training split is empty (data.split={split}, {len(users)} users)")
    train, valid, test, record = subsample(train, valid, test, max_train_samples=max_train_samples,
                                           max_eval_users=max_eval_users, seed=seed)
    stats = compute_item_stats(catalogue, train, head_ratio)
    in_history = {split_name: sum(s.target in s.history for s in samples)
                  for split_name, samples in (("test", test), ("valid", valid))}
    if in_history["test"] or in_history["valid"]:
        log.warning("%s: %d of %d test and %d of %d validation targets are also in their prompt history "
                    "(data.rm_dup_inter=null keeps repeated items): repeating the history scores on them",
                    name, in_history["test"], len(test), in_history["valid"], len(valid))

    n_head = int(stats.head_mask.sum())
    info = {
        "name": name, "source": source, "files": [str(f) for f in files],
        "fields": None if source == "synthetic" else fields,
        "synthetic": dict(synthetic or {}) if source == "synthetic" else None,
        "encoding": None if source == "synthetic" else encoding, "rm_dup_inter": rm_dup_inter,
        "split": split, "k_core": k_core, "history_len": history_len, "head_ratio": head_ratio,
        "title_max_words": title_max_words, "time_format": time_format, "time_ties": n_ties,
        "n_users": len(users), "n_items": len(catalogue), "n_interactions": len(inter),
        "raw": raw, "dropped_exact_duplicates": n_exact, "dropped_repeated_pairs": n_repeated, "dropped": dropped,
        "n_titles_suffixed": n_suffixed,
        "n_samples": {"train": len(train), "valid": len(valid), "test": len(test)},
        "test_targets_in_history": in_history["test"], "valid_targets_in_history": in_history["valid"],
        "n_head_items": n_head,
        "head_share_of_train_targets": float(stats.n_train[stats.head_mask].sum() / len(train)),
        "subsampling": record,
    }
    log.info("%s: %d users, %d items, %d interactions; %d/%d/%d train/valid/test samples; %d head items",
             name, len(users), len(catalogue), len(inter), len(train), len(valid), len(test), n_head)
    return RecData(name, catalogue, train, valid, test, stats, info)


def check_data_config(*, source, split, history_len, k_core, head_ratio, title_max_words, max_train_samples,
                  max_eval_users, root, rm_dup_inter, encoding) -> None:
    """Reject bad config values up front, naming the key as the user would override it."""
    def count(v, lo):
        return isinstance(v, int) and not isinstance(v, bool) and v >= lo

    rules = {
        "source": (source, source in SOURCES, f"one of {SOURCES}"),
        "split": (split, split in SPLITS, f"one of {SPLITS}"),
        "history_len": (history_len, count(history_len, 1), "an integer >= 1"),
        "k_core": (k_core, count(k_core, 0), "an integer >= 0"),
        "head_ratio": (head_ratio, isinstance(head_ratio, (int, float)) and 0 < head_ratio < 1, "a number in (0, 1)"),
        "title_max_words": (title_max_words, title_max_words is None or count(title_max_words, 1),
                            "null or an integer >= 1"),
        "max_train_samples": (max_train_samples, max_train_samples is None or count(max_train_samples, 1),
                              "null or an integer >= 1"),
        "max_eval_users": (max_eval_users, max_eval_users is None or count(max_eval_users, 1),
                           "null or an integer >= 1"),
        "root": (root, source != "atomic" or root is not None, "a folder holding NAME.inter and NAME.item"),
        "rm_dup_inter": (rm_dup_inter, rm_dup_inter in RM_DUP_INTER, "null (keep repeated user-item pairs), "
                         "first or last (keep only the earliest / latest)"),
        "encoding": (encoding, _is_codec(encoding), "a Python codec name such as utf-8 or latin-1"),
    }
    for key, (value, ok, expected) in rules.items():
        if not ok:
            raise DataError(f"data.{key}={value!r}: expected {expected}")


def _is_codec(name) -> bool:
    try:
        return isinstance(name, str) and bool(codecs.lookup(name))
    except LookupError:
        return False


def _read(name: str, source: str, root: str | None, fields: dict, synthetic: Mapping | None, encoding: str):
    """(interactions [user, item, time], items [item, title(, year)], files read, time format);
    file frames are indexed by line number."""
    if source == "synthetic":
        return *synthetic_frames(synthetic), [], None
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise DataError(f"data.fields: unknown role(s) {unknown}; roles are {list(FIELDS)}")
    folder = recbole_root(name) if source == "recbole_wheel" else Path(root)
    if not folder.is_dir():
        raise DataError(f"data.root={root!r}: folder not found; expected a folder holding {name}.inter and {name}.item")
    inter_path, item_path = folder / f"{name}.inter", folder / f"{name}.item"
    roles = ["item", "title"] + (["year"] if fields["year"] else [])
    inter_cols = atomic_columns(inter_path, {r: fields[r] for r in ("user", "item", "time")}, encoding)
    item_cols = atomic_columns(item_path, {r: fields[r] for r in roles}, encoding)
    inter = read_atomic(inter_path, inter_cols, encoding, ids=("user", "item"))
    items = read_atomic(item_path, item_cols, encoding, ids=("item",))
    inter["time"], time_format = parse_time(inter["time"], inter_path, fields["time"])
    _check_item_ids(inter, items, inter_path, item_path)
    return inter, items, [inter_path, item_path], time_format


def _check_item_ids(inter: pd.DataFrame, items: pd.DataFrame, inter_path: Path, item_path: Path) -> None:
    """Each item is listed once in the item file and every interacted item is listed; errors give line numbers."""
    repeated = items[items["item"].duplicated(keep=False)]
    if len(repeated):
        lines = repeated.index.astype(str).to_series().groupby(repeated["item"].to_numpy(), sort=False).agg(", ".join)
        where = "; ".join(f"{item!r} on lines {numbers}" for item, numbers in lines.head(5).items())
        raise DataError(f"{item_path}: item id(s) listed more than once, expected once each: {where}")
    absent = inter[~inter["item"].isin(items["item"])]
    if len(absent):
        examples = absent["item"].unique()[:5].tolist()
        raise DataError(f"{inter_path}, line {absent.index[0]}: item id {absent['item'].iloc[0]!r} is absent from "
                        f"{item_path}; {absent['item'].nunique()} item id(s) in all are absent, e.g. {examples}")


def _item_text(items: pd.DataFrame, max_words: int | None) -> list[str]:
    """Cleaned title, as 'Title (Year)' when the dataset has a year field."""
    titles = [clean_title(t, max_words) for t in items["title"]]
    return [with_year(t, y) for t, y in zip(titles, items["year"])] if "year" in items else titles


def _deduplicate(inter: pd.DataFrame, *, name: str, rm_dup_inter: str | None) -> tuple[pd.DataFrame, int, int]:
    """Drop exact duplicate rows, then (`rm_dup_inter` first / last) every row of a repeated (user, item)
    pair but its earliest / latest, time ties in file order; (rows left, rows each rule dropped)."""
    exact = inter.duplicated(["user", "item", "time"])
    if exact.any():
        log.warning("%s: dropped %d exact duplicate row(s) (same user, item and time)", name, exact.sum())
    inter = inter[~exact]
    n = len(inter)
    if rm_dup_inter is not None:
        by_time = inter.sort_values("time", kind="stable")
        inter = by_time[~by_time.duplicated(["user", "item"], keep=rm_dup_inter)]
        log.info("%s: data.rm_dup_inter=%s dropped %d repeated (user, item) row(s)", name, rm_dup_inter, n - len(inter))
    return inter, int(exact.sum()), n - len(inter)


def _filter(inter: pd.DataFrame, items: pd.DataFrame, *, name: str, split: str, k_core: int):
    """Drop items with empty text, then the k-core, then users too short for `split`; count every drop."""
    empty = items.loc[items["title"] == "", "item"]
    in_empty = inter["item"].isin(empty)
    if len(empty):
        log.warning("%s: dropped %d item(s) with an empty title (ids %s) and their %d interaction(s)",
                    name, len(empty), empty.head(5).tolist(), in_empty.sum())
    if len(inter) and in_empty.all():
        raise DataError(f"{name}: every interacted item has an empty title after cleaning (e.g. ids "
                        f"{empty.head(5).tolist()}); expected text in the item file's title column (data.fields.title)")
    dropped = {"empty_title_items": len(empty), "empty_title_interactions": int(in_empty.sum())}
    inter = inter[~in_empty]
    n = len(inter)
    inter = _k_core(inter, k_core)
    dropped["k_core_interactions"] = n - len(inter)
    min_len = MIN_INTERACTIONS[split]
    short = inter["user"].map(inter["user"].value_counts()) < min_len
    dropped.update(short_users=inter.loc[short, "user"].nunique(), short_user_interactions=int(short.sum()))
    inter = inter[~short]
    if inter.empty:
        raise DataError(f"{name}: no user has >= {min_len} interactions, as data.split={split} needs "
                        f"(after data.k_core={k_core} and dropping items with empty titles)")
    return inter, dropped


def _time_ties(inter: pd.DataFrame, name: str) -> int:
    """Interactions sharing their (user, time) with an earlier row: their order is file order, not time."""
    n = int(inter.duplicated(["user", "time"]).sum())
    if n:
        log.info("%s: %d interaction(s) share their user's timestamp with an earlier one; kept in file order", name, n)
    return n


def _catalogue(inter: pd.DataFrame, items: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Items left in the interactions, indexed in token order, with unique titles; and how many got a suffix."""
    item_ids = _sorted_tokens(inter["item"])
    title = items.set_index("item")["title"].loc[item_ids].reset_index(drop=True)
    unique = make_unique(title, pd.Series(item_ids))
    return (pd.DataFrame({"item_idx": np.arange(len(item_ids)), "item_id": item_ids, "title": unique}),
            int((unique != title).sum()))


def _sequences(inter: pd.DataFrame, item_ids: pd.Series) -> tuple[list[str], list[list[int]], list[np.ndarray]]:
    """Per user (in token order): item indices and times, chronological, ties in file order."""
    users = _sorted_tokens(inter["user"])
    u = pd.Categorical(inter["user"], categories=users).codes
    i = pd.Categorical(inter["item"], categories=item_ids).codes.astype(np.int64)
    t = inter["time"].to_numpy(float)
    order = np.lexsort((np.arange(len(inter)), t, u))
    bounds = np.flatnonzero(np.diff(u[order])) + 1
    return users, [s.tolist() for s in np.split(i[order], bounds)], np.split(t[order], bounds)


def _k_core(inter: pd.DataFrame, k: int) -> pd.DataFrame:
    """Drop users and items with fewer than k interactions, repeatedly, until none is left to drop."""
    while k > 0:
        keep = ((inter["user"].map(inter["user"].value_counts()) >= k)
                & (inter["item"].map(inter["item"].value_counts()) >= k))
        if keep.all():
            break
        inter = inter[keep]
    return inter


def _sorted_tokens(tokens: pd.Series) -> list[str]:
    """Distinct tokens in numeric order when all are numbers, else in string order: deterministic either way."""
    uniq = tokens.unique().tolist()
    numeric = all(x.isascii() and x.isdecimal() for x in uniq)
    return sorted(uniq, key=(lambda x: (int(x), x)) if numeric else None)
