"""Every dataset config instantiates, gives a unique non-empty title per item and sane splits.

games (440k interactions) and books are read once per session each; they are skipped when the
shared data folder is absent.
"""
import os
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"
DATA_DIR = Path(os.environ.get("EISAM_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def data_cfg(config, **overrides):
    cfg = OmegaConf.create({"paths": {"data_dir": str(DATA_DIR)}, "seed": 0,
                            "data": OmegaConf.load(CONF / f"{config}.yaml")})
    cfg.data.merge_with(overrides)
    return cfg.data


@pytest.fixture(scope="module", params=["ml100k", "synthetic", "games", "books"])
def dataset(request):
    name = request.param
    if name in ("games", "books") and not (DATA_DIR / name).is_dir():
        pytest.skip(f"{DATA_DIR / name} not found: set EISAM_DATA_DIR to the folder holding games/ and books/")
    return name, instantiate(data_cfg(name))


def test_titles_unique_and_catalogue_indexed(dataset):
    _, d = dataset
    assert not d.items["title"].duplicated().any() and (d.items["title"].str.strip() != "").all()
    assert d.items["item_idx"].tolist() == list(range(len(d.items)))
    assert d.stats.table["title"].tolist() == d.items["title"].tolist()
    n = len(d.items)
    assert all(0 <= s.target < n and all(0 <= i < n for i in s.history) for s in d.test)


def test_split_sizes_and_head(dataset):
    name, d = dataset
    users = d.info["n_users"]
    assert len(d.valid) == len(d.test) == users
    assert len(d.train) == d.info["n_interactions"] - 3 * users
    assert d.info["n_head_items"] == max(1, round(0.2 * d.info["n_items"]))
    assert d.info["head_share_of_train_targets"] > 0.5  # long tail in every dataset
    expected = {"ml100k": (943, 1682, 100000), "games": (50546, 16859, 440264), "books": (14585, 6343, 136956)}
    if name in expected:
        assert tuple(d.info["raw"].values()) == expected[name]
    if name == "books":  # data.rm_dup_inter=first: 121 exact duplicates and 1,703 repeats of a pair go
        assert d.info["dropped"]["empty_title_items"] == 1 and d.info["n_items"] == 6340
        assert (d.info["dropped_exact_duplicates"], d.info["dropped_repeated_pairs"]) == (121, 1703)
    else:
        assert d.info["dropped_exact_duplicates"] == d.info["dropped_repeated_pairs"] == 0
    assert d.info["test_targets_in_history"] == d.info["valid_targets_in_history"] == 0
    if name == "ml100k":
        assert d.items["title"][0] == "Toy Story (1995)" and not d.items["title"].str.contains(r"\(\d{4}\) \(").any()


def test_user_atomic_config(tmp_path):
    with pytest.raises(MissingMandatoryValue):
        instantiate(data_cfg("atomic"))
    (tmp_path / "mine.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                                         + "".join(f"u\t{i}\t{i}\n" for i in range(4)))
    (tmp_path / "mine.item").write_text("item_id:token\ttitle:token_seq\n" + "".join(f"{i}\tT{i}\n" for i in range(4)))
    d = instantiate(data_cfg("atomic", root=str(tmp_path), name="mine", history_len=2))
    assert d.test[0].history == (1, 2) and d.info["files"][0] == str(tmp_path / "mine.inter")
