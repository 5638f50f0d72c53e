"""Item weights and popularity groups against hand-computed examples."""

import math

import pytest
import torch

from eisam.optim import group_mean_weights, item_weights, popularity_groups


def test_power_weights_have_sample_mean_one_and_give_unseen_items_w_max():
    n = [8, 2, 0, 1]
    raw = [8 ** -0.5, 2 ** -0.5, None, 1.0]
    z = (8 * raw[0] + 2 * raw[1] + 1 * raw[3]) / 11
    w = item_weights(n, "power", alpha=0.5)
    assert w.dtype == torch.float32 and w.shape == (4,)
    expected = torch.tensor([raw[0] / z, raw[1] / z, 10.0, raw[3] / z])
    torch.testing.assert_close(w, expected)
    assert math.isclose(float((torch.tensor(n) * w).sum() / 11), 1.0, rel_tol=1e-6)


def test_power_weights_are_clipped_after_normalization():
    w = item_weights([100, 1], "power", alpha=1.0, w_max=10.0)
    torch.testing.assert_close(w, torch.tensor([101 / 200, 10.0]))  # unclipped: 101/200, 101/2


def test_alpha_zero_is_uniform():
    torch.testing.assert_close(item_weights([5, 1, 3], "power", alpha=0.0), torch.ones(3))


def test_uniform_and_tail_only():
    torch.testing.assert_close(item_weights([5, 0, 3], "uniform"), torch.ones(3))
    head = torch.tensor([True, False, False])
    tail_only = item_weights([5, 0, 3], "tail_only", head_mask=head)
    torch.testing.assert_close(tail_only, torch.tensor([0.0, 1.0, 1.0]))


def test_class_balanced_normalized_like_power():
    beta, n = 0.9, [10, 1, 3]
    raw = [(1 - beta) / (1 - beta ** k) for k in n]
    z = sum(k * r for k, r in zip(n, raw)) / sum(n)
    w = item_weights(n, "class_balanced", beta=beta)
    torch.testing.assert_close(w, torch.tensor([r / z for r in raw]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="inverse"), "kind"),
    (dict(kind="power", alpha=-0.1), "alpha"),
    (dict(kind="class_balanced", beta=1.0), "beta"),
    (dict(kind="power", w_max=0.0), "w_max"),
    (dict(kind="tail_only"), "head_mask"),
])
def test_bad_weight_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        item_weights([3, 1], **kwargs)


def test_popularity_groups_are_rank_quantiles_with_ties_by_item_id():
    n = [5, 1, 5, 3, 0, 2]  # ranks: item 0, 2, 3, 5, 1, 4
    assert popularity_groups(n, 3).tolist() == [0, 2, 0, 1, 2, 1]
    assert popularity_groups(n, 1).tolist() == [0] * 6
    assert popularity_groups(n, 6).tolist() == [0, 4, 1, 2, 5, 3]
    for bad in (0, 7):
        with pytest.raises(ValueError, match="groups"):
            popularity_groups(n, bad)


def test_group_mean_weights_average_over_training_samples():
    weights = torch.tensor([1.0, 2.0, 4.0, 8.0])
    groups = torch.tensor([0, 0, 1, 1])
    got = group_mean_weights(weights, [3, 1, 0, 2], groups)
    torch.testing.assert_close(got, torch.tensor([(3 * 1 + 1 * 2) / 4, 8.0]))
