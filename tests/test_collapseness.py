import math

import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity, DotProductSimilarity, LpDistance

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

from triplet_loops import loop_similarity, loop_similarity_weighted_mean

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


# ---------------------------------------------------------------- similarities: Eq. 2, 5-7 on 1 - s

COS_AP = [0.91, 0.35, 0.62, -0.20, 0.77]
COS_AN = [0.45, 0.88, 0.10, 0.52, -0.61]


@pytest.mark.parametrize("lam", [0.0, 3.0, 10.0])
def test_collapseness_of_a_similarity_is_eq5_on_one_minus_s(lam):
    cosine = CosineSimilarity()
    expected = loop_similarity_weighted_mean(COS_AP, lam) - loop_similarity_weighted_mean(COS_AN, lam)
    assert collapseness(t(COS_AP), t(COS_AN), lam=lam, distance=cosine).item() == pytest.approx(expected, abs=1e-12)
    assert weighted_distance(t(COS_AP), lam=lam, distance=cosine).item() == pytest.approx(
        loop_similarity_weighted_mean(COS_AP, lam), abs=1e-12)
    # the sign convention of PML's distance.margin(ap, an): H = mean s(A, N) - mean s(A, P)
    assert hardness(t(COS_AP), t(COS_AN), distance=cosine).item() == pytest.approx(
        sum(COS_AN) / 5 - sum(COS_AP) / 5, abs=1e-12)


def test_a_collapsing_batch_has_positive_collapseness_under_both_conventions():
    generator = torch.Generator().manual_seed(0)
    anchors, positives, negatives = (torch.randn(8, 4, generator=generator, dtype=torch.float64) for _ in range(3))
    negatives = anchors + 0.05 * negatives  # every negative next to its anchor: collapse
    for distance in (LpDistance(), CosineSimilarity()):
        ap = distance.pairwise_distance(distance.maybe_normalize(anchors), distance.maybe_normalize(positives))
        an = distance.pairwise_distance(distance.maybe_normalize(anchors), distance.maybe_normalize(negatives))
        assert collapseness(ap, an, distance=distance) > 0
        assert hardness(ap, an, distance=distance) > 0
        assert separability(ap, an, mean_pairwise_distance(torch.cat([anchors, positives]), distance),
                            distance=distance) < 0


def test_mean_distance_and_entanglement_of_a_similarity_use_one_minus_s():
    generator = torch.Generator().manual_seed(1)
    embeddings = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    rows = embeddings.tolist()
    pairs = [(i, j) for i in range(6) for j in range(6) if i != j]
    dissimilar = {(i, j): 1 - loop_similarity(rows[i], rows[j]) for i, j in pairs}
    mean = sum(dissimilar.values()) / len(pairs)
    intra = [v for (i, j), v in dissimilar.items() if labels[i] == labels[j]]
    inter = [v for (i, j), v in dissimilar.items() if labels[i] != labels[j]]
    for similarity in (CosineSimilarity(), DotProductSimilarity()):  # both normalise by default
        assert mean_pairwise_distance(embeddings, similarity).item() == pytest.approx(mean, abs=1e-12)
        assert entanglement(embeddings, labels, similarity).item() == pytest.approx(
            (sum(intra) / len(intra)) / (sum(inter) / len(inter)), abs=1e-12)
    unnormalised = DotProductSimilarity(normalize_embeddings=False)
    with pytest.raises(ValueError, match="entanglement.*unit vectors.*normalize_embeddings=False"):
        entanglement(embeddings, labels, unnormalised)
    with pytest.raises(ValueError, match="mean_pairwise_distance.*unit vectors"):
        mean_pairwise_distance(embeddings, unnormalised)
    with pytest.raises(ValueError, match="separability.*unit vectors"):
        separability(t(COS_AP), t(COS_AN), torch.tensor(1.0), distance=unnormalised)
