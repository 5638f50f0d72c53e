"""The report's statistics: per-user scores, users the unit of resampling and of pairing.

A cell's scores are a users x seeds matrix (NaN where a user was not evaluated in a seed). Its
value is the mean over seeds of the mean over users; its 95 % interval is a percentile bootstrap
that resamples users with the same indices in every seed, so a user's seeds stay together. Two
methods are compared on each user's difference, averaged over the seeds that paired them, with the
paired t-test (not Wilcoxon: with many users its Type I error is inflated on recommender data,
Ihemelandu and Ekstrand, SIGIR 2023), Holm's correction over the methods of a table, and the
smallest difference the test would detect with 80 % power.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

LEVEL = 0.95
ALPHA = 0.05
POWER = 0.8
RESAMPLES = 2000
SEED = 0  # the bootstrap's own generator: a report rebuilt from the same runs gives the same intervals


def _matrix(scores) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    return scores[:, None] if scores.ndim == 1 else scores


def cell_mean(scores) -> float:
    """Mean over seeds (columns) of the mean over users (rows), NaNs left out; NaN for no score."""
    with np.errstate(invalid="ignore", divide="ignore"):
        valid = ~np.isnan(_matrix(scores))
        per_seed = np.where(valid, _matrix(scores), 0.0).sum(axis=0) / valid.sum(axis=0)
    return float(np.nanmean(per_seed)) if np.isfinite(per_seed).any() else np.nan


def bootstrap_ci(scores, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of `cell_mean` over ``resamples`` draws of users (rows, with replacement),
    one draw shared by all seeds (columns). For one seed the draws are scipy.stats.bootstrap's."""
    scores = _matrix(scores)
    scores = scores[~np.isnan(scores).all(axis=1)]
    if len(scores) == 0:
        return np.nan, np.nan
    n = len(scores)
    index = np.random.default_rng(seed).integers(0, n, (resamples, n))
    # how often each user is drawn in each resample: sums over the draws become one product
    counts = np.bincount((np.arange(resamples)[:, None] * n + index).ravel(), minlength=resamples * n)
    counts = counts.reshape(resamples, n).astype(float)
    valid = ~np.isnan(scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_seed = (counts @ np.where(valid, scores, 0.0)) / (counts @ valid)  # resamples x seeds
    means = np.nanmean(per_seed, axis=1)
    tail = (1 - level) / 2 * 100
    return tuple(float(v) for v in np.percentile(means, [tail, 100 - tail]))


def user_differences(diff) -> np.ndarray:
    """Each user's paired difference, averaged over the seeds that paired the user (users x seeds in)."""
    diff = _matrix(diff)
    diff = diff[~np.isnan(diff).all(axis=1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(diff, axis=1) if len(diff) else np.empty(0)


def paired_t(diff, level: float = LEVEL) -> dict:
    """Paired t-test of per-user differences (users x seeds, averaged over seeds first): mean
    difference, its t interval, the two-sided p-value, the number of users and the differences' std.
    No variance: p is 1 when every difference is 0 (no evidence of one) and 0 when all equal another value."""
    d = user_differences(diff)
    n = len(d)
    if n < 2:
        return {"diff": float(d.mean()) if n else np.nan, "lo": np.nan, "hi": np.nan, "p": np.nan, "n_users": n,
                "sd": np.nan}
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        return {"diff": mean, "lo": mean, "hi": mean, "p": 1.0 if mean == 0 else 0.0, "n_users": n, "sd": 0.0}
    test = stats.ttest_1samp(d, 0.0)
    lo, hi = test.confidence_interval(level)
    return {"diff": mean, "lo": float(lo), "hi": float(hi), "p": float(test.pvalue), "n_users": n, "sd": sd}


def holm(pvalues) -> np.ndarray:
    """Holm-adjusted p-values of one family (the methods of a table); NaN stays NaN and is not counted."""
    pvalues = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(pvalues, np.nan)
    known = ~np.isnan(pvalues)
    if known.any():
        adjusted[known] = multipletests(pvalues[known], alpha=ALPHA, method="holm")[1]
    return adjusted


def min_detectable_difference(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest mean paired difference that the two-sided paired t-test at ``alpha`` detects with
    probability ``power`` over ``n`` users whose differences have standard deviation ``sd``."""
    if not n or n < 2 or not np.isfinite(sd):
        return np.nan
    return _detectable_effect(int(n), alpha, power) * sd


@functools.lru_cache(maxsize=None)
def _detectable_effect(n: int, alpha: float, power: float) -> float:
    """Cohen's d detected with ``power`` by the paired t-test over ``n`` users (cached: the solver is
    slow and a table's comparisons share a few user counts)."""
    return float(TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided"))
