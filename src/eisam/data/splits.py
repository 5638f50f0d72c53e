"""Per-user sequences -> (history, target) samples for train/valid/test, and seeded subsampling."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eisam.data.types import Sample

SPLITS = ("leave_one_out", "temporal")
MIN_INTERACTIONS = {"leave_one_out": 3, "temporal": 2}  # fewer leave nothing to train on
TEMPORAL_RATIOS = (0.8, 0.1, 0.1)


def _samples(user: str, seq: Sequence[int], history_len: int) -> list[Sample]:
    """Every prefix with at least one item predicts the next item; the first item is history only."""
    return [Sample(user, tuple(seq[max(0, t - history_len):t]), seq[t]) for t in range(1, len(seq))]


def split_samples(users: Sequence[str], seqs: Sequence[Sequence[int]], times: Sequence[np.ndarray],
                  split: str, history_len: int) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """`leave_one_out`: per user, last target -> test, second last -> valid, the rest -> train.
    `temporal`: all samples ranked by target time (ties: user order, then position) and cut 8:1:1,
    so every split holds the same share whatever the ties (games' timestamps are positions).
    Histories only ever hold items before the target in the user's own sequence.
    """
    per_user = [_samples(u, s, history_len) for u, s in zip(users, seqs)]
    if split == "leave_one_out":
        return ([x for s in per_user for x in s[:-2]], [s[-2] for s in per_user], [s[-1] for s in per_user])
    flat = [x for s in per_user for x in s]
    target_time = np.concatenate([t[1:] for t in times])
    rank = np.empty(len(flat), int)
    rank[np.argsort(target_time, kind="stable")] = np.arange(len(flat))
    cut_valid, cut_test = (round(len(flat) * r) for r in np.cumsum(TEMPORAL_RATIOS[:2]))
    return ([x for x, r in zip(flat, rank) if r < cut_valid],
            [x for x, r in zip(flat, rank) if cut_valid <= r < cut_test],
            [x for x, r in zip(flat, rank) if r >= cut_test])


def subsample(train: list[Sample], valid: list[Sample], test: list[Sample], *, max_train_samples: int | None,
              max_eval_users: int | None, seed: int) -> tuple[list[Sample], list[Sample], list[Sample], dict]:
    """Seeded uniform subsets for small machines: training samples (kept in their original order),
    and users evaluated (the same users in valid and test). The two draws use independent streams,
    so changing one limit does not change the other subset."""
    rng_train, rng_eval = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    eval_users = list(dict.fromkeys(s.user for s in valid + test))
    record = {"max_train_samples": max_train_samples, "max_eval_users": max_eval_users, "seed": seed,
              "n_train_before": len(train), "n_eval_users_before": len(eval_users)}
    if max_train_samples is not None and max_train_samples < len(train):
        keep = np.sort(rng_train.choice(len(train), size=max_train_samples, replace=False))
        train = [train[i] for i in keep]
    if max_eval_users is not None and max_eval_users < len(eval_users):
        chosen = {eval_users[i] for i in rng_eval.choice(len(eval_users), size=max_eval_users, replace=False)}
        valid, test = [s for s in valid if s.user in chosen], [s for s in test if s.user in chosen]
        eval_users = [u for u in eval_users if u in chosen]
    record.update(n_train_after=len(train), n_eval_users_after=len(eval_users))
    return train, valid, test, record
