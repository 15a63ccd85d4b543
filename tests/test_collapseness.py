import math

import pytest
import torch

from pml_tride.collapseness import (
    collapseness,
    embedding_shift,
    entanglement,
    hardness,
    mean_hardness,
    mean_pairwise_distance,
    separability,
    triplet_hinge,
    weighted_collapseness,
    weighted_distance,
)

AP = [0.31, 0.52, 0.47, 0.95, 0.22]
AN = [0.61, 0.44, 0.83, 0.72, 0.35]


def loop_weighted(values, lam, weighting):
    if weighting == "paper":
        weights = [math.exp(-lam * (v - min(values))) for v in values]
    else:
        weights = [math.exp(lam * (v - max(values))) for v in values]
    return sum(w * v for w, v in zip(weights, values)) / sum(weights)


def unshifted(values, lam, weighting):
    sign = -1 if weighting == "paper" else 1
    weights = [math.exp(sign * lam * v) for v in values]
    return sum(w * v for w, v in zip(weights, values)) / sum(weights)


def t(values):
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("weighting", ["paper", "reference"])
@pytest.mark.parametrize("lam", [0.0, 1.0, 10.0])
def test_weighted_distance_and_collapseness_match_loops(weighting, lam):
    assert weighted_distance(t(AP), lam, weighting).item() == pytest.approx(loop_weighted(AP, lam, weighting))
    assert weighted_distance(t(AP), lam, weighting).item() == pytest.approx(unshifted(AP, lam, weighting))
    expected_c = loop_weighted(AP, lam, weighting) - loop_weighted(AN, lam, weighting)
    assert collapseness(t(AP), t(AN), lam, weighting).item() == pytest.approx(expected_c)


@pytest.mark.parametrize("weighting", ["paper", "reference"])
def test_unchecked_equations_are_the_checked_ones_and_match_loops(weighting):
    """Eq. 5 and Eq. 2 have one implementation each: the checked functions call the unchecked ones."""
    expected_c = loop_weighted(AP, 2.0, weighting) - loop_weighted(AN, 2.0, weighting)
    assert weighted_collapseness(t(AP), t(AN), 2.0, weighting).item() == pytest.approx(expected_c)
    assert torch.equal(weighted_collapseness(t(AP), t(AN), 2.0, weighting), collapseness(t(AP), t(AN), 2.0, weighting))
    assert mean_hardness(t(AP), t(AN)).item() == pytest.approx(sum(AP) / 5 - sum(AN) / 5)
    assert torch.equal(mean_hardness(t(AP), t(AN)), hardness(t(AP), t(AN)))


def test_triplet_hinge_matches_loops():
    margin = 0.1
    expected = [max(p - n + margin, 0.0) for p, n in zip(AP, AN)]
    assert triplet_hinge(t(AP), t(AN), margin).tolist() == pytest.approx(expected)
    assert min(expected) == 0.0 < max(expected)  # both sides of the hinge are exercised


def test_paper_weighting_leans_to_near_pairs_and_reference_to_far_ones():
    assert weighted_distance(t(AP), 10.0, "paper") < sum(AP) / 5 < weighted_distance(t(AP), 10.0, "reference")


def test_lam_zero_is_hardness():
    expected = sum(AP) / 5 - sum(AN) / 5
    assert hardness(t(AP), t(AN)).item() == pytest.approx(expected)
    assert collapseness(t(AP), t(AN), lam=0.0).item() == pytest.approx(expected)


def test_weighted_distance_gradient_matches_finite_differences():
    values = t(AP).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: weighted_distance(v, 4.0, "paper"), (values,))
    assert torch.autograd.gradcheck(lambda v: weighted_distance(v, 4.0, "reference"), (values,))


def test_diagnostics_match_loops():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [-1.0, 0.5]])
    labels = torch.tensor([0, 0, 1, 1])
    unit = [[x / math.hypot(*row) for x in row] for row in embeddings.tolist()]
    dist = [[math.dist(a, b) for b in unit] for a in unit]
    pairs = [dist[i][j] for i in range(4) for j in range(4) if i != j]
    mean_distance = sum(pairs) / len(pairs)
    assert mean_pairwise_distance(embeddings).item() == pytest.approx(mean_distance, rel=1e-6)
    intra = [dist[i][j] for i in range(4) for j in range(4) if i != j and labels[i] == labels[j]]
    inter = [dist[i][j] for i in range(4) for j in range(4) if labels[i] != labels[j]]
    expected_entanglement = (sum(intra) / len(intra)) / (sum(inter) / len(inter))
    assert entanglement(embeddings, labels).item() == pytest.approx(expected_entanglement, rel=1e-6)
    assert separability(t(AP), t(AN), torch.tensor(0.5, dtype=torch.float64)).item() == pytest.approx(
        (sum(AN) / 5 - sum(AP) / 5) / 0.5)
    shifted = embeddings + torch.tensor([[0.0, 0.1]])
    expected_shift = sum(math.dist([x / math.hypot(*r) for x in r], [x / math.hypot(*s) for x in s])
                         for r, s in zip(embeddings.tolist(), shifted.tolist())) / 4
    assert embedding_shift(embeddings, shifted).item() == pytest.approx(expected_shift, rel=1e-6)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: weighted_distance(torch.tensor([]), 1.0), "dists"),
        (lambda: weighted_distance(torch.ones(2, 2), 1.0), "dists"),
        (lambda: weighted_distance(torch.tensor([1.0, float("nan")]), 1.0), "NaN"),
        (lambda: weighted_distance(torch.ones(2), -1.0), "lam"),
        (lambda: weighted_distance(torch.ones(2), 1.0, "softmin"), "weighting"),
        (lambda: collapseness(torch.ones(2), torch.tensor([]), 1.0), "an_dists"),
        (lambda: mean_pairwise_distance(torch.ones(1, 3)), "embeddings"),
        (lambda: embedding_shift(torch.ones(2, 3), torch.ones(3, 3)), "share a shape"),
        (lambda: entanglement(torch.ones(2, 3), torch.tensor([0, 1])), "same-class"),
    ],
)
def test_bad_inputs_raise(call, name):
    with pytest.raises(ValueError, match=name):
        call()
