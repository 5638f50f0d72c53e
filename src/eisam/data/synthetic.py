"""A small, deterministic, long-tailed dataset generated in code: tests and smoke runs need no files."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from eisam.data.types import DataError

DEFAULTS = {"n_users": 300, "n_items": 400, "zipf_a": 1.1, "min_len": 5, "max_len": 20, "seed": 0,
            "generator": "loop"}
GENERATORS = ("loop", "vectorized")
TITLE_WORDS = (3, 10)  # vectorized titles: words per title, inclusive
# 64 short pseudo-words: the tiny model's byte-level BPE (vocab 512) learns each as one token.
_WORDS = tuple(c + v + e for c in "bdgklmprstvz" for v in "aeiou" for e in "nrs")[:64]
_ADJ = ("Crimson", "Silent", "Golden", "Hidden", "Frozen", "Electric", "Wandering", "Broken", "Velvet", "Iron",
        "Lunar", "Scarlet", "Hollow", "Emerald", "Savage", "Quiet")
_NOUN = ("Harbor", "Forest", "Empire", "Garden", "Machine", "River", "Kingdom", "Signal", "Frontier", "Mirror",
         "Tower", "Voyage", "Storm", "Legacy", "Circuit", "Orchard")


def synthetic_frames(cfg: Mapping | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interactions [user, item, time], items [item, title]) with Zipf item popularity.

    Each user draws distinct items (no repeats), so a target can be told apart from history by
    its id alone; each user's timestamps increase from a random start, so temporal splits mix users.
    ``generator``: ``loop`` (the default, one draw per user, O(users x items)) or ``vectorized``
    (``_vectorized``: every item at least once, titles of 3-10 words, 10^6 items in seconds).
    """
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise DataError(f"data.synthetic: unknown key(s) {unknown}; expected {sorted(DEFAULTS)}")
    c = {**DEFAULTS, **cfg}
    n_users, n_items, lo, hi = (int(c[k]) for k in ("n_users", "n_items", "min_len", "max_len"))
    if n_users < 1 or not 1 <= lo <= hi <= n_items or c["zipf_a"] < 0 or c["generator"] not in GENERATORS:
        raise DataError(f"data.synthetic: need n_users >= 1, 1 <= min_len <= max_len <= n_items, zipf_a >= 0 and "
                        f"generator in {GENERATORS}; got {c}")
    rng = np.random.default_rng(int(c["seed"]))
    p = (rng.permutation(n_items) + 1.0) ** -float(c["zipf_a"])  # popularity rank is unrelated to item id
    p /= p.sum()
    if c["generator"] == "vectorized":
        return _vectorized(rng, p, n_users, lo, hi)
    users, items, times = [], [], []
    for u in range(n_users):
        n = int(rng.integers(lo, hi + 1))
        users += [str(u)] * n
        items += rng.choice(n_items, size=n, replace=False, p=p).tolist()
        times += (rng.integers(0, 1_000_000) + np.cumsum(rng.integers(1, 1000, size=n))).tolist()
    inter = pd.DataFrame({"user": users, "item": [str(i) for i in items], "time": np.asarray(times, float)})
    titles = [f"Item {i} {_ADJ[i % len(_ADJ)]} {_NOUN[i // len(_ADJ) % len(_NOUN)]}" for i in range(n_items)]
    return inter, pd.DataFrame({"item": [str(i) for i in range(n_items)], "title": titles})


def _vectorized(rng: np.random.Generator, p: np.ndarray, n_users: int, lo: int, hi: int):
    """Catalogue-scale frames: every item once (so the catalogue keeps all of them), the remaining
    interactions drawn from the Zipf popularity ``p``, shuffled and dealt to users of lengths in
    [lo, hi]; a user's repeated items are dropped, so a few users end shorter than ``lo``. Titles:
    random words, then the item's rank in a random order written in base 64 (unique)."""
    n_items = len(p)
    lengths = rng.integers(lo, hi + 1, size=n_users)
    total = int(lengths.sum())
    if total < n_items:
        raise DataError(f"data.synthetic: {n_users} users of {lo}-{hi} items make {total} interactions, fewer than "
                        f"the {n_items} items; the vectorized generator needs at least one per item")
    items = np.concatenate([np.arange(n_items), rng.choice(n_items, size=total - n_items, p=p)])
    rng.shuffle(items)
    users = np.repeat(np.arange(n_users), lengths)
    steps = rng.integers(1, 1000, size=total).cumsum()
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)  # each row's user's first row
    times = (rng.integers(0, 1_000_000, size=n_users)[users] + steps - steps[first] + 1).astype(float)
    inter = pd.DataFrame({"user": users.astype(str), "item": items.astype(str), "time": times})
    inter = inter[~pd.DataFrame({"u": users, "i": items}).duplicated().to_numpy()].reset_index(drop=True)

    digits = max(1, int(np.ceil(np.log(n_items) / np.log(len(_WORDS)))))
    n_words = rng.integers(max(TITLE_WORDS[0], digits), max(TITLE_WORDS[1], digits) + 1, size=n_items)
    code = rng.permutation(n_items)[:, None] // len(_WORDS) ** np.arange(digits - 1, -1, -1) % len(_WORDS)
    filler = rng.integers(0, len(_WORDS), size=(n_items, int(n_words.max()) - digits))
    words, code_words = np.asarray(_WORDS)[filler].tolist(), np.asarray(_WORDS)[code].tolist()
    titles = [" ".join(f[:n - digits] + c) for f, c, n in zip(words, code_words, n_words.tolist())]
    return inter, pd.DataFrame({"item": np.arange(n_items).astype(str), "title": titles})
