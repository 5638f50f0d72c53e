"""Data layer: reader errors, text cleaning, splits without leakage, subsampling, synthetic data."""
import importlib.metadata
from collections import defaultdict

import numpy as np
import pytest

from eisam.data import DataError, load_rec_data
from eisam.data.synthetic import synthetic_frames
from eisam.data.text import clean_title, with_year

SYN = {"n_users": 120, "n_items": 150, "zipf_a": 1.1, "min_len": 4, "max_len": 15, "seed": 3}


def syn(**kw):
    return load_rec_data(name="syn", source="synthetic", synthetic=SYN, **kw)


def write_atomic(root, inter, items, inter_header="user_id:token\titem_id:token\ttimestamp:float",
                 item_header="item_id:token\ttitle:token_seq", name="toy"):
    """Write NAME.inter / NAME.item under root from lists of tab-joined rows."""
    (root / f"{name}.inter").write_text("\n".join([inter_header, *inter]) + "\n", encoding="utf-8")
    (root / f"{name}.item").write_text("\n".join([item_header, *items]) + "\n", encoding="utf-8")


def toy(root, **kw):
    return load_rec_data(name="toy", source="atomic", root=str(root), **kw)


# users a (4 items), b (3), c (2: too short for leave-one-out); item 4's title is HTML whitespace only
INTER = ["a\t1\t1", "a\t2\t2", "a\t3\t3", "a\t4\t4", "a\t5\t5", "b\t3\t1", "b\t1\t2", "b\t2\t3", "c\t1\t1", "c\t2\t2"]
ITEMS = ['1\tHalo &amp; "Friends"', "2\tHalo", "3\t  Zelda   II ", "4\t&nbsp;", "5\tHalo"]


def test_toy_atomic_cleaning_and_filters(tmp_path):
    write_atomic(tmp_path, INTER, ITEMS)
    d = toy(tmp_path)
    assert d.items["item_id"].tolist() == ["1", "2", "3", "5"]  # item 4 dropped: empty title
    assert d.items["title"].tolist() == ['Halo & "Friends"', "Halo [2]", "Zelda II", "Halo [5]"]
    assert d.info["dropped"] == {"empty_title_items": 1, "empty_title_interactions": 1, "k_core_interactions": 0,
                                 "short_users": 1, "short_user_interactions": 2}
    assert d.info["raw"] == {"n_users": 3, "n_items": 5, "n_interactions": 10}
    assert (d.info["n_users"], d.info["n_items"], d.info["n_interactions"]) == (2, 4, 7)
    # a: 1 2 3 5 -> idx 0 1 2 3; b: 3 1 2 -> 2 0 1
    assert [(s.user, s.history, s.target) for s in d.train] == [("a", (0,), 1)]  # b: 3 items, none to train
    assert [(s.user, s.history, s.target) for s in d.valid] == [("a", (0, 1), 2), ("b", (2,), 0)]
    assert [(s.user, s.history, s.target) for s in d.test] == [("a", (0, 1, 2), 3), ("b", (2, 0), 1)]


def test_time_ties_keep_file_order_and_history_window(tmp_path):
    inter = [f"u\t{i}\t{0 if i < 4 else i}" for i in (3, 1, 2, 4, 5, 6)]  # 3, 1, 2 share time 0
    write_atomic(tmp_path, inter, [f"{i}\tT{i}" for i in range(1, 7)])
    d = toy(tmp_path, history_len=2)
    assert [s.history for s in d.train] == [(2,), (2, 0), (0, 1)]
    assert d.test[0].history == (3, 4) and d.test[0].target == 5


@pytest.mark.parametrize("case, expect", [
    ("missing_file", ["nope.inter", "data.root", "data.name"]),
    ("untyped_header", ["toy.inter", "name:type"]),
    ("missing_field", ["toy.item", "'title'", "'name'"]),
    ("unknown_item", ["toy.inter", "toy.item", "'9'"]),
    ("bad_time", ["toy.inter", "'timestamp'", "'yesterday'"]),
    ("duplicate_item", ["toy.item", "'2'"]),
    ("all_short", ["data.split=leave_one_out", ">= 3"]),
    ("no_training", ["training split is empty"]),
    ("extra_field", ["toy.item, line 3", "3 tab-separated field(s), the header has 2", "'2\\tHalo\\tII'"]),
    ("short_row", ["toy.inter, line 2", "2 tab-separated field(s), the header has 3"]),
])
def test_reader_errors_name_the_culprit(tmp_path, case, expect):
    inter, items, kw = list(INTER), list(ITEMS), {}
    if case == "untyped_header":
        kw["inter_header"] = "user_id\titem_id\ttimestamp"
    elif case == "missing_field":
        kw["item_header"] = "item_id:token\tname:token_seq"
    elif case == "unknown_item":
        inter.append("a\t9\t9")
    elif case == "bad_time":
        inter[0] = "a\t1\tyesterday"
    elif case == "duplicate_item":
        items.append("2\tHalo again")
    elif case == "all_short":
        inter = ["a\t1\t1", "a\t2\t2", "b\t1\t1"]
    elif case == "no_training":
        inter = ["a\t1\t1", "a\t2\t2", "a\t3\t3"]
    elif case == "extra_field":
        items[1] = "2\tHalo\tII"  # an unescaped tab in a title
    elif case == "short_row":
        inter[0] = "a\t1"
    write_atomic(tmp_path, inter, items, **kw)
    with pytest.raises(DataError) as e:
        load_rec_data(name="nope" if case == "missing_file" else "toy", source="atomic", root=str(tmp_path))
    for part in expect:
        assert part in str(e.value), (part, str(e.value))


@pytest.mark.parametrize("key, value", [
    ("head_ratio", 0.0), ("head_ratio", 1.0), ("history_len", 0), ("split", "random"), ("source", "csv"),
    ("max_train_samples", 0), ("max_eval_users", 0), ("k_core", -1), ("title_max_words", 0),
    ("rm_dup_inter", "none"), ("encoding", "utf-9"),
])
def test_bad_config_values_name_the_key(key, value):
    kw = {"name": "syn", "source": "synthetic", "synthetic": SYN, key: value}
    with pytest.raises(DataError, match=f"data.{key}="):
        load_rec_data(**kw)


def test_tolerated_line_forms(tmp_path):
    """A byte-order mark, CRLF line ends, a trailing tab (header and rows) and blank lines read as the plain file."""
    write_atomic(tmp_path, INTER, ITEMS)
    plain = toy(tmp_path)
    inter = "\ufeff" + "\r\n".join(["user_id:token\titem_id:token\ttimestamp:float\t", *(r + "\t" for r in INTER)])
    (tmp_path / "toy.inter").write_text(inter + "\r\n", encoding="utf-8")
    (tmp_path / "toy.item").write_text("\n\n".join(["item_id:token\ttitle:token_seq", *ITEMS]) + "\n", encoding="utf-8")
    d = toy(tmp_path)
    assert d.items.equals(plain.items) and (d.train, d.valid, d.test) == (plain.train, plain.valid, plain.test)


def test_encoding_errors_say_where_and_what_to_do(tmp_path):
    write_atomic(tmp_path, INTER, ITEMS)
    latin1 = "\n".join(["item_id:token\ttitle:token_seq", *ITEMS[:2], "3\tCaf\xe9 Zelda", *ITEMS[3:]])
    (tmp_path / "toy.item").write_bytes(latin1.encode("latin-1"))
    with pytest.raises(DataError) as e:
        toy(tmp_path)
    for part in ("toy.item, line 4", "b'\\xe9'", "not valid utf-8", "b'3\\tCaf\\xe9 Zelda'", "re-encode",
                 "data.encoding=latin-1"):
        assert part in str(e.value), (part, str(e.value))
    assert "Café Zelda" in toy(tmp_path, encoding="latin-1").items["title"].tolist()


# user a, in shuffled file order: 1@1 2@2 2@2 (exact duplicate) 3@3 1@4 4@5 2@6; user b: 1 2 3
REPEATS = ["a\t1\t4", "a\t2\t2", "a\t1\t1", "a\t2\t2", "a\t3\t3", "a\t2\t6", "a\t4\t5", "b\t1\t1", "b\t2\t2", "b\t3\t3"]


@pytest.mark.parametrize("rm_dup_inter, sequence, dropped, test_in_history", [
    (None, (0, 1, 2, 0, 3, 1), 0, 1),  # a's test target 2 is in its prompt
    ("first", (0, 1, 2, 3), 2, 0),     # earliest by time, whatever the file order
    ("last", (2, 0, 3, 1), 2, 0),
])
def test_repeated_interactions(tmp_path, caplog, rm_dup_inter, sequence, dropped, test_in_history):
    write_atomic(tmp_path, REPEATS, [f"{i}\tT{i}" for i in range(1, 5)])
    d = toy(tmp_path, rm_dup_inter=rm_dup_inter)
    test = {s.user: s for s in d.test}
    assert test["a"].history + (test["a"].target,) == sequence and test["b"].history == (0, 1)
    assert (d.info["dropped_exact_duplicates"], d.info["dropped_repeated_pairs"]) == (1, dropped)
    assert (d.info["test_targets_in_history"], d.info["valid_targets_in_history"]) == (test_in_history, 0)
    assert d.info["n_interactions"] == 9 - dropped and d.info["rm_dup_inter"] == rm_dup_inter
    assert "dropped 1 exact duplicate row(s)" in caplog.text
    warned = "1 of 2 test and 0 of 2 validation targets are also in their prompt history" in caplog.text
    assert warned == bool(test_in_history)


def test_atomic_needs_root_and_known_roles(tmp_path):
    with pytest.raises(DataError, match="data.root="):
        load_rec_data(name="toy", source="atomic")
    with pytest.raises(DataError, match=r"data.fields: unknown role\(s\) \['genre'\]"):
        load_rec_data(name="toy", source="atomic", root=str(tmp_path), fields={"genre": "class"})
    with pytest.raises(DataError, match=r"data.synthetic: unknown key\(s\) \['users'\]"):
        load_rec_data(name="syn", source="synthetic", synthetic={"users": 3})


def test_vectorized_synthetic_keeps_every_item_and_the_loop_default():
    inter, items = synthetic_frames({**SYN, "generator": "vectorized", "n_items": 300})
    assert set(inter["item"]) == set(items["item"]) and len(items) == 300  # the catalogue keeps every item
    assert not inter.duplicated(["user", "item"]).any() and items["title"].is_unique
    assert items["title"].str.split().str.len().between(3, 10).all()
    assert (inter.sort_values(["user", "time"]).groupby("user")["time"].diff().dropna() > 0).all()
    counts = inter["item"].value_counts()
    assert counts.iloc[0] > 10 * counts.median()  # long-tailed
    loop = synthetic_frames(SYN)
    assert all(a.equals(b) for a, b in zip(loop, synthetic_frames({**SYN, "generator": "loop"})))
    with pytest.raises(DataError, match="at least one per item"):
        synthetic_frames({**SYN, "generator": "vectorized", "n_users": 5})
    with pytest.raises(DataError, match="generator in"):
        synthetic_frames({**SYN, "generator": "fast"})


def test_missing_recbole_says_how_to_install(monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(DataError, match=r"pip install --no-deps recbole==1\.2\.1"):
        load_rec_data(name="ml-100k", source="recbole_wheel")


def test_title_text():
    assert clean_title("Tom Clancy&rsquo;s  Ghost\tRecon &amp; more", 4) == "Tom Clancy’s Ghost Recon"
    assert clean_title("&nbsp; ") == ""
    assert with_year("Toy Story", "1995") == "Toy Story (1995)"
    assert with_year("Land Before Time III: The Time of the Great Giving (1995)", "V").endswith("Giving (1995)")
    assert with_year("Heat (1995)", "1995") == "Heat (1995)"
    assert with_year("unkonwn", "unkonwn") == "unkonwn"


def test_k_core_iterates_until_stable(tmp_path):
    # 2-core: item 9 (once) and user d (once) go; then item 8 has one interaction and goes; then user c
    inter = [f"{u}\t{i}\t{i}" for u in "ab" for i in range(1, 5)] + ["c\t8\t1", "c\t9\t2", "c\t1\t3", "d\t8\t1"]
    write_atomic(tmp_path, inter, [f"{i}\tT{i}" for i in (1, 2, 3, 4, 8, 9)])
    d = toy(tmp_path, k_core=2)
    assert d.items["item_id"].tolist() == ["1", "2", "3", "4"] and d.info["dropped"]["k_core_interactions"] == 4


def test_leave_one_out_has_no_leakage():
    d = syn()
    inter, _ = synthetic_frames(SYN)
    lengths = inter.groupby("user").size()
    per_user = defaultdict(list)
    for s in d.train:
        per_user[s.user].append(s)
    valid, test = {s.user: s for s in d.valid}, {s.user: s for s in d.test}
    assert set(valid) == set(test) == set(lengths.index)
    for user, n in lengths.items():
        train = per_user[user]
        assert len(train) == n - 3  # every prefix with >= 1 history item
        seen = {i for s in train for i in s.history} | {s.target for s in train}
        assert test[user].target not in seen and valid[user].target not in seen
        assert test[user].history[-1] == valid[user].target  # test history includes the validation item
        assert valid[user].target not in valid[user].history and test[user].target not in test[user].history
        assert all(len(s.history) <= 10 for s in train + [valid[user], test[user]])


def test_temporal_split_by_target_time():
    d = syn(split="temporal")
    inter, _ = synthetic_frames(SYN)
    idx = dict(zip(d.items["item_id"], d.items["item_idx"]))
    time = {(u, idx[i]): t for u, i, t in zip(inter["user"], inter["item"], inter["time"])}
    when = {name: [time[s.user, s.target] for s in split] for name, split in
            (("train", d.train), ("valid", d.valid), ("test", d.test))}
    assert max(when["train"]) <= min(when["valid"]) and max(when["valid"]) <= min(when["test"])
    n = len(inter) - inter["user"].nunique()
    assert (len(d.train), len(d.valid), len(d.test)) == (round(0.8 * n), round(0.9 * n) - round(0.8 * n),
                                                         n - round(0.9 * n))
    for s in d.train + d.valid + d.test:
        assert all(time[s.user, h] < time[s.user, s.target] for h in s.history)


def test_subsampling_is_seeded_and_recorded():
    full = syn()
    a, b, c = (syn(max_train_samples=200, max_eval_users=30, seed=s) for s in (1, 1, 2))
    assert a.train == b.train and a.valid == b.valid and a.test == b.test
    assert a.train != c.train and {s.user for s in a.test} != {s.user for s in c.test}
    assert len(a.train) == 200 and {s.user for s in a.valid} == {s.user for s in a.test} and len(a.test) == 30
    assert set(a.train) <= set(full.train) and set(a.test) <= set(full.test)
    assert a.info["subsampling"] == {"max_train_samples": 200, "max_eval_users": 30, "seed": 1,
                                     "n_train_before": len(full.train), "n_eval_users_before": 120,
                                     "n_train_after": 200, "n_eval_users_after": 30}
    assert a.stats.n_train.sum() == 200  # item stats describe the training samples actually used
    only_train = syn(max_train_samples=200, seed=1)
    assert only_train.train == a.train  # the two draws are independent


def test_synthetic_is_deterministic_and_long_tailed():
    d1, d2 = syn(), syn()
    assert d1.train == d2.train and d1.items.equals(d2.items)
    inter, _ = synthetic_frames(SYN)
    counts = np.sort(inter["item"].value_counts().to_numpy())[::-1]
    assert counts[: round(0.2 * len(counts))].sum() > 0.5 * counts.sum()
    assert d1.info["head_share_of_train_targets"] > 0.5
    assert (inter.groupby("user")["time"].apply(lambda t: t.is_monotonic_increasing)).all()
