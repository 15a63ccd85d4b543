"""The miners with a PML similarity (larger = closer): the same triplets as with LpDistance, which orders unit
vectors the same way, TrideMiner's band in similarity units, and PML's statistics (the similarity values)."""

import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
from spc2_batches import spc2_batch

from pml_tride import SPC2RandomMiner, SPC2SoftHardMiner, TrideMiner

from triplet_loops import loop_similarity

# A band wider than any distance or dissimilarity of unit vectors (at most 2): every harder negative is in it.
WIDE_BAND = 4.0


def mined(miner, embeddings, labels):
    return [column.tolist() for column in miner(embeddings, labels)]


@pytest.mark.parametrize("anchors", ["all", "spc2"])
def test_tride_miner_picks_the_same_triplets_as_with_the_euclidean_distance(anchors):
    embeddings, labels = spc2_batch([0, 1, 2, 0, 1], dim=4, seed=3)
    embeddings = embeddings.double()
    by_distance = TrideMiner(margin=WIDE_BAND, seed=7, anchors=anchors, triplets_per_anchor=3)
    by_similarity = TrideMiner(margin=WIDE_BAND, seed=7, anchors=anchors, triplets_per_anchor=3,
                               distance=CosineSimilarity())
    triplets = mined(by_similarity, embeddings, labels)
    assert triplets == mined(by_distance, embeddings, labels) and len(triplets[0]) > 0


def test_tride_miner_band_in_similarity_units_matches_loops():
    embeddings, labels = spc2_batch([0, 1, 2, 3, 0, 1], dim=3, seed=5)
    miner = TrideMiner(margin=0.3, seed=1, triplets_per_anchor=2, distance=CosineSimilarity(), collect_stats=True)
    anchors, positives, negatives = mined(miner, embeddings, labels)
    rows = embeddings.tolist()
    eta, fallbacks = miner.current_eta, 0
    for a, p, n in zip(anchors, positives, negatives):
        ap = loop_similarity(rows[a], rows[p])
        band = [j for j in range(len(rows)) if labels[j] != labels[a]
                and ap - eta < loop_similarity(rows[a], rows[j]) < ap]
        if band:
            assert n in band  # harder than the positive (more similar to the anchor), by less than eta
        else:
            fallbacks += 1
    assert miner.num_fallback_negatives == fallbacks < len(anchors)
    assert miner.pos_pair_dist == pytest.approx(
        sum(loop_similarity(rows[a], rows[p]) for a, p in zip(anchors, positives)) / len(anchors), abs=1e-6)


@pytest.mark.parametrize("miner_class", [SPC2SoftHardMiner, SPC2RandomMiner])
def test_spc2_miners_pick_the_same_triplets_as_with_the_euclidean_distance(miner_class):
    embeddings, labels = spc2_batch([0, 1, 2, 3, 1, 2], dim=4, seed=2)
    embeddings = embeddings.double()
    similarity = miner_class(seed=4, distance=CosineSimilarity(), collect_stats=True)
    triplets = mined(similarity, embeddings, labels)
    assert triplets == mined(miner_class(seed=4, distance=LpDistance()), embeddings, labels)
    rows = embeddings.tolist()
    assert similarity.neg_pair_dist == pytest.approx(
        sum(loop_similarity(rows[a], rows[n]) for a, _, n in zip(*triplets)) / len(triplets[0]), abs=1e-9)


def test_soft_hard_negatives_are_more_similar_than_the_least_similar_positive():
    embeddings, labels = spc2_batch([0, 1, 2, 0, 1, 2], dim=3, seed=9)
    anchors, positives, negatives = mined(SPC2SoftHardMiner(seed=0, distance=CosineSimilarity()), embeddings, labels)
    rows = embeddings.tolist()
    for a, n in zip(anchors, negatives):
        least_similar_positive = min(loop_similarity(rows[a], rows[j]) for j in range(len(rows))
                                     if j != a and labels[j] == labels[a])
        soft = [j for j in range(len(rows)) if labels[j] != labels[a]
                and loop_similarity(rows[a], rows[j]) > least_similar_positive]
        assert n in soft or not soft
    assert torch.equal(torch.tensor(anchors), torch.arange(0, len(rows), 2))
