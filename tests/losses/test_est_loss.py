import copy

import pytest
import torch
from pytorch_metric_learning.miners import BaseMiner

from pml_tride import ESTLoss, SPC2RandomMiner

import triplet_loops as loops
from tiny_models import tiny_cnn
from triplet_loops import HAND_IMAGES, HAND_LABELS, HAND_TRIPLETS, Identity, hand_indices

EPS, ALPHA, STEPS, MARGIN = 0.05, 0.02, 4, 0.2


def loop_est(images, triplets, perturb, margin=MARGIN):
    """EST by loops: every perturbed copy maximises its own embedding shift; hinge on (A', P', N')."""
    keys = loops.triplet_keys(triplets, perturb)
    variables = loops.loop_variables(images, triplets, keys, perturb)

    def objective(current):
        return -sum(loops.loop_distance(current[key], variables[key]) for key in current) / len(current)

    adversarial, taken = loops.loop_pgd(variables, objective, EPS, ALPHA, STEPS)
    losses = [loops.loop_hinge(*(adversarial[keys[(i, role)]] for role in range(3)), margin)
              for i in range(len(triplets))]
    return sum(losses) / len(losses), adversarial, taken


def test_embedding_shift_loss_matches_loops():
    loss = ESTLoss(Identity())
    clean = HAND_IMAGES
    shifted = HAND_IMAGES.flip(1)
    expected = -sum(loops.loop_distance(s, c) for s, c in zip(shifted.tolist(), clean.tolist())) / len(clean)
    assert loss.embedding_shift_loss(shifted, clean).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("perturb", ["unique", "per_triplet"])
def test_full_loss_matches_a_loop_rederivation_of_attack_and_training(perturb):
    loss, value = loops.hand_loss(ESTLoss, eps=EPS, alpha=ALPHA, steps=STEPS, perturb=perturb, collect_stats=True)
    expected, adversarial, taken = loop_est(HAND_IMAGES.tolist(), HAND_TRIPLETS, perturb)
    assert value.item() == pytest.approx(expected, abs=1e-9)
    assert loss.pgd_steps == taken == STEPS
    assert loss.num_perturbed == len(adversarial) == (6 if perturb == "unique" else 3 * len(HAND_TRIPLETS))
    assert loss.max_perturbation == pytest.approx(EPS)
    for role in ("anchor", "positive", "negative"):
        assert getattr(loss, f"embedding_shift_{role}") > 0


def test_all_three_members_come_from_the_adversarial_forward():
    """EST trains on (A', P', N'): no gradient reaches the caller's clean embeddings."""
    _, value = loops.hand_leaf_call(ESTLoss, eps=EPS, alpha=ALPHA, steps=2)
    assert value.item() > 0 and not value.requires_grad  # Identity has no weights: nothing left in the graph


def test_forward_passes_clean_once_then_perturbed_images_per_step():
    seen = loops.hand_forward_sizes(ESTLoss, eps=EPS, alpha=ALPHA, steps=3)
    assert seen == [6] + [6] * 3 + [6]


class FixedMiner(BaseMiner):
    """Returns fixed triplets and remembers the embeddings it was given."""

    def __init__(self, triplets):
        super().__init__()
        self.triplets, self.seen = triplets, []

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        self.seen.append(embeddings.clone())
        return hand_indices(self.triplets)


def test_remining_on_adversarial_embeddings_matches_loops():
    model = Identity()
    mined = [(0, 1, 3), (2, 3, 4), (5, 4, 0)]
    miner = FixedMiner(mined)
    loss = ESTLoss(model, eps=EPS, alpha=ALPHA, steps=STEPS, miner=miner, collect_stats=True)
    value = loss(model(HAND_IMAGES), HAND_LABELS, hand_indices([(0, 1, 2)]))
    images = HAND_IMAGES.tolist()
    variables = dict(enumerate(images))

    def objective(current):
        return -sum(loops.loop_distance(current[key], variables[key]) for key in current) / len(current)

    adversarial, _ = loops.loop_pgd(variables, objective, EPS, ALPHA, STEPS)
    expected = sum(loops.loop_hinge(adversarial[a], adversarial[p], adversarial[n], MARGIN) for a, p, n in mined) / 3
    assert value.item() == pytest.approx(expected, abs=1e-9)
    assert loss.num_perturbed == len(images)  # the whole batch, not only the caller's triplet
    seen = miner.seen[0]
    assert not seen.requires_grad
    assert torch.allclose(seen, torch.tensor([adversarial[row] for row in range(6)], dtype=seen.dtype))


def test_remining_needs_labels_and_unique_perturbation():
    model = Identity()
    with pytest.raises(ValueError, match="unique"):
        ESTLoss(model, miner=FixedMiner(HAND_TRIPLETS), perturb="per_triplet")
    with pytest.raises(TypeError, match="BaseMiner"):
        ESTLoss(model, miner=lambda embeddings, labels: None)
    loss = ESTLoss(model, miner=FixedMiner(HAND_TRIPLETS))
    with pytest.raises(ValueError, match="labels"):
        loss(model(HAND_IMAGES), None, hand_indices())


def test_remined_empty_triplets_give_zero():
    model = Identity()
    loss = ESTLoss(model, steps=1, miner=FixedMiner([]))
    embeddings = HAND_IMAGES.clone().requires_grad_(True)
    value = loss(embeddings, HAND_LABELS, hand_indices(), inputs=HAND_IMAGES)
    assert value.item() == 0 and value.requires_grad


def test_spc2_random_mined_on_the_clean_batch_equals_robrank_remining():
    # the est recipe mines spc2-random on the clean batch: the draw depends on the labels only and every row of an
    # SPC-2 batch is an anchor or a positive, so the same images are perturbed and the same triplets trained on as
    # when ESTLoss re-mines on the adversarial embeddings (robrank est.py:63-68)
    torch.manual_seed(0)
    model = tiny_cnn()
    images, labels = torch.rand(12, 1, 6, 6), torch.arange(6).repeat_interleave(2)
    embeddings = model(images)
    twin = copy.deepcopy(model)  # the training forward updates BatchNorm statistics: one model per loss
    remining = ESTLoss(model, eps=EPS, alpha=ALPHA, steps=STEPS, miner=SPC2RandomMiner(seed=3), collect_stats=True)
    clean_mined = ESTLoss(twin, eps=EPS, alpha=ALPHA, steps=STEPS, collect_stats=True)
    expected = remining(embeddings, labels, inputs=images)
    value = clean_mined(embeddings, labels, SPC2RandomMiner(seed=3)(embeddings.detach(), labels), inputs=images)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert clean_mined.num_perturbed == remining.num_perturbed == len(images)
