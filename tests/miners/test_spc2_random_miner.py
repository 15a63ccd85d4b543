import pytest
import torch
from scipy.stats import chisquare

from pml_tride import SPC2RandomMiner
from spc2_batches import brute_distance, spc2_batch


def test_anchor_2i_positive_2i_plus_1_negative_of_another_label():
    # class 1 holds two pairs, so its anchors have three same-label rows and the positive is still 2i + 1
    embeddings, labels = spc2_batch([0, 1, 1, 2, 3])
    miner = SPC2RandomMiner(seed=0, collect_stats=True)
    for _ in range(20):
        anchors, positives, negatives = miner(embeddings, labels)
        assert anchors.tolist() == [0, 2, 4, 6, 8] and positives.tolist() == [1, 3, 5, 7, 9]
        for a, n in zip(anchors.tolist(), negatives.tolist()):
            assert labels[n] != labels[a]
        expected = [brute_distance(embeddings, a, p) for a, p in zip(anchors.tolist(), positives.tolist())]
        assert miner.pos_pair_dist == pytest.approx(sum(expected) / len(expected), abs=1e-6)
        expected = [brute_distance(embeddings, a, n) for a, n in zip(anchors.tolist(), negatives.tolist())]
        assert miner.neg_pair_dist == pytest.approx(sum(expected) / len(expected), abs=1e-6)


def test_negative_is_uniform_over_the_other_label_rows():
    embeddings, labels = spc2_batch([0, 1, 2, 3, 1])
    miner = SPC2RandomMiner(seed=3)
    draws = 3000
    counts = torch.zeros(len(labels) // 2, len(labels))
    for _ in range(draws):
        anchors, _, negatives = miner(embeddings, labels)
        counts[torch.arange(len(anchors)), negatives] += 1
    for row, anchor in enumerate(range(0, len(labels), 2)):
        candidates = [j for j in range(len(labels)) if labels[j] != labels[anchor]]
        assert counts[row].sum() == counts[row, candidates].sum() == draws
        assert chisquare(counts[row, candidates].numpy()).pvalue > 1e-3


def test_anchors_without_another_label_get_no_triplet_and_seed_reproduces():
    embeddings, labels = spc2_batch([4, 4, 4])
    assert all(len(index) == 0 for index in SPC2RandomMiner(seed=0)(embeddings, labels))
    embeddings, labels = spc2_batch([0, 1, 2, 3])
    first, second = SPC2RandomMiner(seed=7), SPC2RandomMiner(seed=7)
    assert all(torch.equal(x, y) for x, y in zip(first(embeddings, labels), second(embeddings, labels)))
    restored = SPC2RandomMiner(seed=1)
    restored.load_state_dict(first.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(first(embeddings, labels), restored(embeddings, labels)))
