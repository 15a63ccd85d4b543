import itertools

import pytest
import torch

from pml_tride.evaluation import (
    COLLAPSE_LIFT,
    DEGRADED_POINTS,
    chance_recall_at_1,
    collapse_threshold,
    is_collapsed,
    is_degraded,
    retrieval_metrics,
)


def pair_count_chance(labels):
    """The definition, by brute force: the share of ordered pairs (q, j), j != q, with the same label, in %."""
    pairs = [(q, j) for q in range(len(labels)) for j in range(len(labels)) if j != q]
    return 100 * sum(labels[q] == labels[j] for q, j in pairs) / len(pairs)


@pytest.mark.parametrize("labels", [[0, 1], [0, 0], [0, 0, 1], [3, 1, 3, 2, 1, 3], [5] * 4 + [7] * 2 + [9],
                                    list(range(10))])
def test_chance_is_the_share_of_same_class_pairs(labels):
    assert chance_recall_at_1(labels) == pytest.approx(pair_count_chance(labels), abs=1e-12)
    assert chance_recall_at_1(torch.tensor(labels)) == pytest.approx(pair_count_chance(labels), abs=1e-12)


def test_chance_is_the_mean_r1_over_every_relabelling():
    """An embedding that carries no class information: the R@1 of one fixed embedding averaged over every
    permutation of the labels (all 6! = 720) is exactly the chance R@1."""
    labels = [0, 0, 0, 1, 1, 2]
    embeddings = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    recalls = [retrieval_metrics(embeddings, torch.tensor(perm))["R@1"] for perm in itertools.permutations(labels)]
    assert sum(recalls) / len(recalls) == pytest.approx(chance_recall_at_1(labels), abs=1e-9)
    assert chance_recall_at_1(labels) == pytest.approx(100 * (3 * 2 + 2 * 1) / (6 * 5))


def test_threshold_and_flag():
    assert COLLAPSE_LIFT == 0.1
    assert collapse_threshold(20.0) == pytest.approx(28.0)  # 20 + 0.1 * 80
    assert collapse_threshold(0.0) == pytest.approx(10.0) and collapse_threshold(100.0) == 100.0
    assert collapse_threshold(20.0, lift=0.5) == pytest.approx(60.0)
    assert is_collapsed(20.0, 20.0) and is_collapsed(27.9, 20.0) and is_collapsed(5.0, 20.0)
    assert not is_collapsed(28.1, 20.0) and not is_collapsed(99.0, 20.0)
    assert is_collapsed(100.0, 100.0)  # one class: retrieval cannot tell anything


def test_degraded_is_more_than_the_fixed_points_below_the_reference():
    assert DEGRADED_POINTS == 10.0
    assert is_degraded(79.9, 90.0) and is_degraded(0.0, 10.1)
    assert not is_degraded(80.0, 90.0) and not is_degraded(95.0, 90.0) and not is_degraded(0.0, 10.0)
    assert is_degraded(85.0, 90.0, points=4.0) and not is_degraded(85.0, 90.0, points=5.0)


@pytest.mark.parametrize("call, match", [
    (lambda: is_degraded(50.0, 101.0), "reference_r1"),
    (lambda: is_degraded(-1.0, 50.0), "benign_r1"),
    (lambda: is_degraded(50.0, 60.0, points=-1.0), "points"),
    (lambda: chance_recall_at_1([1]), "at least 2"),
    (lambda: chance_recall_at_1(torch.zeros(2, 2)), "1-D"),
    (lambda: is_collapsed(float("nan"), 20.0), "benign_r1"),
    (lambda: is_collapsed(101.0, 20.0), "benign_r1"),
    (lambda: is_collapsed(50.0, -1.0), "chance_r1"),
    (lambda: collapse_threshold(20.0, lift=1.0), "lift"),
    (lambda: is_collapsed(True, 20.0), "benign_r1"),
])
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
