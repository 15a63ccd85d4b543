import math

import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance

from pml_tride import CollapsenessReducer, TrideLoss

from triplet_loops import Identity, loop_similarity_weighted_mean


def loop_weighted(values, lam, weighting):
    shift = min(values) if weighting == "paper" else max(values)
    sign = -1 if weighting == "paper" else 1
    weights = [math.exp(sign * lam * (v - shift)) for v in values]
    return sum(w * v for w, v in zip(weights, values)) / sum(weights)


def loss_dict(values, reduction_type):
    indices = torch.arange(len(values))
    index = indices if reduction_type == "element" else (indices, indices)
    return {"loss": {"losses": values, "indices": index, "reduction_type": reduction_type}}


@pytest.mark.parametrize("reduction_type", ["pos_pair", "neg_pair", "element"])
@pytest.mark.parametrize("weighting", ["paper", "reference"])
def test_pair_and_element_reductions_give_weighted_distance(reduction_type, weighting):
    values = torch.tensor([0.4, 0.9, 0.55, 1.3], dtype=torch.float64)
    reducer = CollapsenessReducer(lam=3.0, weighting=weighting, collect_stats=True)
    embeddings = torch.zeros(4, 2, dtype=torch.float64)
    reduced = reducer(loss_dict(values, reduction_type), embeddings, torch.zeros(4))
    assert reduced.item() == pytest.approx(loop_weighted(values.tolist(), 3.0, weighting))
    assert reducer.weighted_distance == pytest.approx(reduced.item())
    assert reducer.collapseness(values, values.flip(0)).item() == pytest.approx(
        loop_weighted(values.tolist(), 3.0, weighting) - loop_weighted(values.flip(0).tolist(), 3.0, weighting)
    )


def test_triplet_reduction_is_refused_with_an_explanation():
    reducer = CollapsenessReducer()
    triplet = {"loss": {"losses": torch.rand(3), "indices": (torch.arange(3),) * 3, "reduction_type": "triplet"}}
    with pytest.raises(ValueError, match="separately"):
        reducer(triplet, torch.zeros(3, 2), torch.zeros(3))


def test_empty_losses_give_a_connected_zero():
    embeddings = torch.rand(3, 2, requires_grad=True)
    reduced = CollapsenessReducer()(loss_dict(torch.zeros(0), "pos_pair"), embeddings, torch.zeros(3))
    assert reduced.item() == 0 and reduced.requires_grad


def test_invalid_arguments():
    with pytest.raises(ValueError, match="lam"):
        CollapsenessReducer(lam=-1)
    with pytest.raises(ValueError, match="weighting"):
        CollapsenessReducer(weighting="softmin")


@pytest.mark.parametrize("reduction_type", ["pos_pair", "neg_pair", "element"])
def test_similarities_are_reduced_as_one_minus_s(reduction_type):
    similarities = torch.tensor([0.9, -0.3, 0.55, 0.7], dtype=torch.float64)
    reducer = CollapsenessReducer(lam=3.0, distance=CosineSimilarity())
    reduced = reducer(loss_dict(similarities, reduction_type), torch.zeros(4, 2, dtype=torch.float64), torch.zeros(4))
    expected = loop_similarity_weighted_mean(similarities.tolist(), 3.0)
    assert reduced.item() == pytest.approx(expected, abs=1e-12)
    assert reducer.weighted_mean(similarities).item() == pytest.approx(expected, abs=1e-12)
    assert reducer.collapseness(similarities, similarities.flip(0)).item() == pytest.approx(
        expected - loop_similarity_weighted_mean(similarities.flip(0).tolist(), 3.0), abs=1e-12)
    # a distance is reduced as it is
    assert CollapsenessReducer(lam=3.0, distance=LpDistance()).weighted_mean(similarities).item() == pytest.approx(
        loop_weighted(similarities.tolist(), 3.0, "paper"))


def test_a_distance_that_is_not_a_pml_distance_and_a_reducer_with_a_distance_in_tride_loss_are_refused():
    with pytest.raises(TypeError, match="distance must be a PML distance or similarity"):
        CollapsenessReducer(distance="cosine")
    with pytest.raises(ValueError, match="without a distance"):
        TrideLoss(Identity(), distance=CosineSimilarity(),
                  collapseness_reducer=CollapsenessReducer(distance=CosineSimilarity()))
