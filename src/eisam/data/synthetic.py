"""A small, deterministic, long-tailed dataset generated in code: tests and smoke runs need no files."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from eisam.data.types import DataError

DEFAULTS = {"n_users": 300, "n_items": 400, "zipf_a": 1.1, "min_len": 5, "max_len": 20, "seed": 0}
_ADJ = ("Crimson", "Silent", "Golden", "Hidden", "Frozen", "Electric", "Wandering", "Broken", "Velvet", "Iron",
        "Lunar", "Scarlet", "Hollow", "Emerald", "Savage", "Quiet")
_NOUN = ("Harbor", "Forest", "Empire", "Garden", "Machine", "River", "Kingdom", "Signal", "Frontier", "Mirror",
         "Tower", "Voyage", "Storm", "Legacy", "Circuit", "Orchard")


def synthetic_frames(cfg: Mapping | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interactions [user, item, time], items [item, title]) with Zipf item popularity.

    Each user draws distinct items (no repeats), so a target can be told apart from history by
    its id alone; each user's timestamps increase from a random start, so temporal splits mix users.
    """
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise DataError(f"data.synthetic: unknown key(s) {unknown}; expected {sorted(DEFAULTS)}")
    c = {**DEFAULTS, **cfg}
    n_users, n_items, lo, hi = (int(c[k]) for k in ("n_users", "n_items", "min_len", "max_len"))
    if n_users < 1 or not 1 <= lo <= hi <= n_items or c["zipf_a"] < 0:
        raise DataError(f"data.synthetic: need n_users >= 1, 1 <= min_len <= max_len <= n_items and zipf_a >= 0; got {c}")
    rng = np.random.default_rng(int(c["seed"]))
    p = (rng.permutation(n_items) + 1.0) ** -float(c["zipf_a"])  # popularity rank is unrelated to item id
    p /= p.sum()
    users, items, times = [], [], []
    for u in range(n_users):
        n = int(rng.integers(lo, hi + 1))
        users += [str(u)] * n
        items += rng.choice(n_items, size=n, replace=False, p=p).tolist()
        times += (rng.integers(0, 1_000_000) + np.cumsum(rng.integers(1, 1000, size=n))).tolist()
    inter = pd.DataFrame({"user": users, "item": [str(i) for i in items], "time": np.asarray(times, float)})
    titles = [f"Item {i} {_ADJ[i % len(_ADJ)]} {_NOUN[i // len(_ADJ) % len(_NOUN)]}" for i in range(n_items)]
    return inter, pd.DataFrame({"item": [str(i) for i in range(n_items)], "title": titles})
