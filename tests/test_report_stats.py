"""The report's statistics against values computed by hand: the paired t-test on per-user
differences averaged over seeds, the bootstrap interval, Holm's adjustment, the minimum detectable
difference, and the popularity bins of the figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from eisam.report.figures import popularity_bins
from eisam.report.stats import bootstrap_ci, cell_mean, holm, min_detectable_difference, paired_t
from eisam.report.tables import detectable_note


def test_paired_t_averages_each_users_seeds_then_tests_the_differences():
    # users x seeds; per-user means 1, 2, 3, 4, 6 (the last user was paired in one seed only)
    diff = np.array([[0, 2], [1, 3], [2, 4], [3, 5], [6, np.nan]], dtype=float)
    result = paired_t(diff)
    mean, sd = 3.2, np.sqrt(((np.array([1, 2, 3, 4, 6]) - 3.2) ** 2).sum() / 4)  # sd = sqrt(3.7)
    se = sd / np.sqrt(5)
    assert result["diff"] == pytest.approx(mean) and result["sd"] == pytest.approx(np.sqrt(3.7))
    assert result["n_users"] == 5
    assert result["p"] == pytest.approx(2 * stats.t.sf(mean / se, df=4))  # t = 3.7199
    assert result["p"] == pytest.approx(0.020476, abs=1e-6)
    assert (result["lo"], result["hi"]) == pytest.approx((mean - 2.776445 * se, mean + 2.776445 * se))  # t(0.975, 4)


def test_paired_t_without_variance():
    assert paired_t(np.zeros(6))["p"] == 1.0  # nobody differs: no evidence of a difference
    assert paired_t(np.full(6, 0.5))["p"] == 0.0 and paired_t(np.full(6, 0.5))["lo"] == 0.5
    assert np.isnan(paired_t(np.array([0.3]))["p"])


def test_bootstrap_interval_with_a_fixed_seed():
    x = np.random.default_rng(1).normal(size=50)
    lo, hi = bootstrap_ci(x, resamples=999, seed=7)
    # by hand: 999 resamples of the 50 users, the 2.5th and 97.5th percentiles of their means
    index = np.random.default_rng(7).integers(0, 50, (999, 50))
    assert (lo, hi) == pytest.approx(tuple(np.percentile(x[index].mean(axis=1), [2.5, 97.5])))
    # and these are scipy's percentile-bootstrap draws
    ref = stats.bootstrap((x,), np.mean, n_resamples=999, method="percentile", rng=np.random.default_rng(7))
    assert (lo, hi) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    # two users 0 and 1: resampled means are 0, 0.5 or 1, so the 95 % interval is [0, 1]
    assert bootstrap_ci([0.0, 1.0], resamples=4000) == (0.0, 1.0)


def test_bootstrap_resamples_a_users_seeds_together():
    v = np.random.default_rng(2).uniform(size=30)
    scores = np.stack([v, 1 - v], axis=1)  # every user's two seeds average to 0.5
    assert cell_mean(scores) == pytest.approx(0.5)
    assert bootstrap_ci(scores) == pytest.approx((0.5, 0.5))  # independent draws per seed would spread
    lo, hi = bootstrap_ci(np.stack([v, v[::-1]], axis=1))  # users not paired across seeds: they spread
    assert lo < 0.49 and hi > 0.51
    # a user missing from one seed counts in the other only: per-seed means 2 and 4
    assert cell_mean(np.array([[1.0, 3.0], [3.0, np.nan], [np.nan, 5.0]])) == pytest.approx(3.0)


def test_holm_adjustment():
    # sorted 0.01, 0.03, 0.04 (m = 3): 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04); NaN is no test
    adjusted = holm([0.01, 0.04, 0.03, np.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(adjusted[3])
    assert holm([0.01, 0.9]) == pytest.approx([0.02, 0.9])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1, and never below a smaller p's


def test_minimum_detectable_difference():
    # many users: the normal formula (z_0.975 + z_0.8) * sd / sqrt(n) = 2.8016 * 1 / 100
    assert min_detectable_difference(1.0, 10_000) == pytest.approx(2.801585 / 100, rel=1e-3)
    # few users: the paired t-test at that difference has exactly 80 % power (noncentral t)
    mdd = min_detectable_difference(2.0, 10)
    crit, shift = stats.t.ppf(0.975, df=9), mdd / 2.0 * np.sqrt(10)
    assert stats.nct.sf(crit, 9, shift) + stats.nct.cdf(-crit, 9, shift) == pytest.approx(0.8, abs=1e-6)
    assert mdd > 2.801585 * 2 / np.sqrt(10)  # wider than the normal formula
    assert np.isnan(min_detectable_difference(1.0, 1)) and min_detectable_difference(0.0, 50) == 0.0


def test_detectable_note_says_when_no_user_differs():
    """A zero std of the paired differences (e.g. both models hit the same single tail user) gives an
    MDD of 0, which must not read as 'any difference would have been seen'."""
    table = pd.DataFrame({"dataset": "d", "method": ["eisam", "sam"], "vs": "base", "users": "tail",
                          "metric": "ndcg@10", "mdd": [0.0, 0.0031], "n_users": 432})
    note = detectable_note(table, ["dataset", "method"])
    assert "eisam not estimable: every user's difference is 0 (n = 432)" in note
    assert "sam 0.0031 (n = 432)" in note and "eisam 0.0000" not in note


def test_popularity_bins_keep_targets_without_training_examples_apart_and_ties_together():
    n_train = np.array([0] * 5 + [1] * 4 + [2] * 4 + [7] * 4)
    code, names = popularity_bins(n_train, n_bins=4)
    assert names == ["0", "1", "2", "7"] and np.bincount(code).tolist() == [5, 4, 4, 4]
    code, names = popularity_bins(np.array([3, 3, 3, 3, 3, 9, 1]), n_bins=3)
    assert len(set(code[:5])) == 1  # equal counts always share a bin
    code, names = popularity_bins(np.array([0, 0, 0]), n_bins=10)
    assert names == ["0"] and set(code) == {0}
