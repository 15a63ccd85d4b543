import pytest
import torch
from scipy.stats import chisquare

from pml_tride import SPC2SoftHardMiner
from spc2_batches import brute_distance, spc2_batch


def soft_sets(embeddings, labels, anchor, anchor_as_positive=False):
    """The rule by plain loops: soft negatives, soft positives and the fallback positive set of one anchor."""
    rows = range(len(labels))
    same = [j for j in rows if j != anchor and labels[j] == labels[anchor]]
    other = [j for j in rows if labels[j] != labels[anchor]]
    farthest_positive = max(brute_distance(embeddings, anchor, j) for j in same)
    nearest_negative = min(brute_distance(embeddings, anchor, j) for j in other)
    soft_negatives = [j for j in other if brute_distance(embeddings, anchor, j) < farthest_positive]
    soft_positives = [j for j in same if brute_distance(embeddings, anchor, j) > nearest_negative]
    fallback_positives = same + [anchor] if anchor_as_positive else same
    return soft_negatives or other, soft_positives or fallback_positives, not soft_negatives, not soft_positives


@pytest.mark.parametrize("seed", range(4))
def test_every_triplet_follows_the_soft_hard_rule(seed):
    # three same-label rows for class 1 (two pairs), so the positive has a choice
    embeddings, labels = spc2_batch([0, 1, 2, 1, 3, 4], dim=2, seed=seed)
    miner = SPC2SoftHardMiner(seed=seed, collect_stats=True)
    for _ in range(10):
        anchors, positives, negatives = miner(embeddings, labels)
        assert anchors.tolist() == list(range(0, len(labels), 2))
        fallback_negatives = fallback_positives = 0
        for a, p, n in zip(anchors.tolist(), positives.tolist(), negatives.tolist()):
            allowed_n, allowed_p, negative_fallback, positive_fallback = soft_sets(embeddings, labels, a)
            assert n in allowed_n and p in allowed_p
            fallback_negatives += negative_fallback
            fallback_positives += positive_fallback
        assert miner.num_fallback_negatives == fallback_negatives
        assert miner.num_fallback_positives == fallback_positives


def test_soft_choices_are_taken_when_they_exist_and_fallbacks_otherwise():
    # anchor 0 at angle 0, its pair at 1.0 rad; other labels at 0.5 rad (soft) and 2.5, 3.0 rad (not soft)
    angles = torch.tensor([0.0, 1.0, 0.5, 0.6, 2.5, 2.6, 3.0, 3.1])
    embeddings = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    miner = SPC2SoftHardMiner(seed=0, collect_stats=True)
    for _ in range(10):
        anchors, positives, negatives = miner(embeddings, labels)
        assert negatives[0] in (2, 3) and positives[0] == 1  # d(0, 1) = 1 rad apart > d(0, 2)
    # the pair of anchor 6 (3.1 rad) is its nearest row: no soft negative, no soft positive
    # (the same for anchors 2 and 4)
    row = anchors.tolist().index(6)
    assert positives[row] == 7 and soft_sets(embeddings, labels, 6)[2:] == (True, True)
    assert miner.num_fallback_negatives == miner.num_fallback_positives == 3


def test_negatives_are_uniform_over_the_soft_set_and_fallback_positive_may_be_the_anchor():
    angles = torch.tensor([0.0, 2.0, 0.2, 2.2, 0.4, 0.5, 1.0, 1.1, 3.0, 3.1])
    embeddings = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    labels = torch.arange(5).repeat_interleave(2)
    miner = SPC2SoftHardMiner(seed=1)
    soft_negatives = soft_sets(embeddings, labels, 0)[0]
    assert soft_negatives == [2, 4, 5, 6, 7]  # row 3 (2.2 rad) is farther than the pair (2.0 rad)
    counts = torch.zeros(len(labels))
    for _ in range(3000):
        counts[miner(embeddings, labels)[2][0]] += 1
    assert counts.sum() == counts[soft_negatives].sum()
    assert chisquare(counts[soft_negatives].numpy()).pvalue > 1e-3
    # anchor 8 (3.0 rad): its pair (3.1 rad) is nearer than every other label, so the positive is a fallback
    reference = SPC2SoftHardMiner(anchor_as_positive=True, seed=2)
    drawn = [reference(embeddings, labels)[1][4].item() for _ in range(200)]
    assert set(drawn) == {8, 9}
    assert {SPC2SoftHardMiner(seed=2)(embeddings, labels)[1][4].item() for _ in range(50)} == {9}


def test_rejects_a_non_bool_option():
    with pytest.raises(ValueError, match="anchor_as_positive"):
        SPC2SoftHardMiner(anchor_as_positive=1)
