import pytest
import torch
from pytorch_metric_learning import losses

from pml_tride import TrideMiner
from pml_tride.schedules import semi_hard_band


def points():
    """Hand-made 2-D embeddings on the unit circle: three classes."""
    angles = torch.tensor([0.0, 0.3, 0.5, 1.2, 1.4, 2.8, 3.0, 4.5])
    embeddings = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    return embeddings, labels


def brute_distance(embeddings, i, j):
    return float(((embeddings[i] - embeddings[j]) ** 2).sum().sqrt())


def test_every_triplet_is_valid_and_in_band_when_possible():
    embeddings, labels = points()
    miner = TrideMiner(margin=0.8, seed=0, collect_stats=True)
    for _ in range(20):
        anchors, positives, negatives = miner(embeddings, labels)
        assert len(anchors) == len(embeddings)  # every point has a positive and a negative
        fallbacks = 0
        for a, p, n in zip(anchors.tolist(), positives.tolist(), negatives.tolist()):
            assert p != a and labels[p] == labels[a] and labels[n] != labels[a]
            ap = brute_distance(embeddings, a, p)
            band = [j for j in range(len(labels)) if labels[j] != labels[a]
                    and ap < brute_distance(embeddings, a, j) < ap + 0.8]
            if band:
                assert n in band
            else:
                fallbacks += 1
        assert miner.num_fallback_negatives == fallbacks


def test_fallback_when_band_is_empty():
    embeddings = torch.tensor([[1.0, 0.0], [0.99, 0.14], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    miner = TrideMiner(margin=0.01, collect_stats=True, seed=0)
    anchors, positives, negatives = miner(embeddings, labels)
    assert miner.num_fallback_negatives == 2 and negatives.tolist() == [2, 2]


def test_triplets_per_anchor_and_skipped_anchors():
    embeddings, labels = points()
    labels = labels.clone()
    labels[7] = 9  # a class of one: no positive, so not an anchor
    anchors, _, _ = TrideMiner(triplets_per_anchor=3, seed=0)(embeddings, labels)
    assert len(anchors) == 3 * 7 and 7 not in anchors.tolist()
    empty = TrideMiner()(embeddings, torch.zeros(8, dtype=torch.long))
    assert all(len(index) == 0 for index in empty)


@pytest.mark.parametrize("schedule", ["paper", "reference"])
def test_band_follows_the_epoch_schedule(schedule):
    miner = TrideMiner(margin=0.2, schedule=schedule, collect_stats=True)
    embeddings, labels = points()
    miner(embeddings, labels)
    assert miner.eta == pytest.approx(0.2)
    miner.set_epoch(6, 10)
    miner(embeddings, labels)
    expected = 0.2 * (1 - 0.3 ** 2) if schedule == "paper" else 0.2 * (1 - 0.3) ** 2
    assert miner.eta == pytest.approx(expected) == pytest.approx(semi_hard_band(6, 10, 0.2, schedule))


def test_seeded_reproducibility_and_state_round_trip():
    embeddings, labels = points()
    first = TrideMiner(seed=5)
    second = TrideMiner(seed=5)
    assert all(torch.equal(a, b) for a, b in zip(first(embeddings, labels), second(embeddings, labels)))
    first.set_epoch(3, 7)
    state = first.state_dict()
    expected = first(embeddings, labels)
    restored = TrideMiner(seed=1)
    restored.load_state_dict(state)
    assert (restored.epoch, restored.total_epochs) == (3, 7)
    assert all(torch.equal(a, b) for a, b in zip(expected, restored(embeddings, labels)))


def test_inside_a_pml_loss_and_with_ref_emb():
    embeddings, labels = points()
    embeddings.requires_grad_(True)
    value = losses.TripletMarginLoss(margin=0.2)(embeddings, labels, TrideMiner(seed=0)(embeddings, labels))
    value.backward()
    assert torch.isfinite(value)
    reference = embeddings.detach()[[0, 3, 5, 1]]
    anchors, positives, negatives = TrideMiner(seed=0)(embeddings[:3], labels[:3], reference, labels[[0, 3, 5, 1]])
    ref_labels = labels[[0, 3, 5, 1]]
    for a, p, n in zip(anchors.tolist(), positives.tolist(), negatives.tolist()):
        assert ref_labels[p] == labels[a] and ref_labels[n] != labels[a]


@pytest.mark.parametrize(
    "kwargs, name",
    [({"margin": 0}, "margin"), ({"schedule": "linear"}, "schedule"),
     ({"triplets_per_anchor": 0}, "triplets_per_anchor")],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TrideMiner(**kwargs)
    with pytest.raises(ValueError, match="epoch"):
        TrideMiner().set_epoch(5, 3)


def test_spc2_anchors_are_the_even_rows_with_the_next_row_as_positive():
    torch.manual_seed(0)
    labels = torch.arange(56).repeat_interleave(2)  # an SPC-2 batch of 112 images: a0, p0, a1, p1, ...
    embeddings = torch.nn.functional.normalize(torch.randn(112, 8), dim=1)
    miner = TrideMiner(margin=0.2, anchors="spc2", seed=0, collect_stats=True)
    anchors, positives, negatives = miner(embeddings, labels)
    assert anchors.tolist() == list(range(0, 112, 2)) and positives.tolist() == list(range(1, 112, 2))
    fallbacks = 0
    for a, p, n in zip(anchors.tolist(), positives.tolist(), negatives.tolist()):
        assert labels[n] != labels[a]
        ap = brute_distance(embeddings, a, p)
        band = [j for j in range(112) if labels[j] != labels[a] and ap < brute_distance(embeddings, a, j) < ap + 0.2]
        if band:
            assert n in band
        else:
            fallbacks += 1
    assert miner.num_fallback_negatives == fallbacks
    twice = TrideMiner(anchors="spc2", triplets_per_anchor=2, seed=0)(embeddings, labels)
    assert len(twice[0]) == 112 and twice[1].tolist() == list(range(1, 112, 2)) * 2


def test_spc2_anchors_refuse_a_batch_that_is_not_spc2():
    embeddings = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    miner = TrideMiner(anchors="spc2")
    with pytest.raises(ValueError, match="rows 2 and 3 have labels 1 and 2"):
        miner(embeddings, torch.tensor([0, 0, 1, 2, 2, 1]))
    with pytest.raises(ValueError, match="even batch"):
        miner(embeddings[:5], torch.tensor([0, 0, 1, 1, 2]))
    with pytest.raises(ValueError, match="anchors"):
        TrideMiner(anchors="odd")
