"""Every defense with a PML similarity (larger = closer) as its distance: the clean hinge is PML's
TripletMarginLoss with that similarity, the attacks equal those with a distance that orders unit vectors the same
way, and a defense trains on digits."""

import math

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.distances import CosineSimilarity, DotProductSimilarity, LpDistance
from pytorch_metric_learning.reducers import MeanReducer

from pml_tride import ESTLoss, TrideLoss, TrideMiner, losses
from pml_tride.losses.adversarial_triplet_loss import AdversarialTripletLoss

from triplet_loops import HAND_IMAGES, HAND_LABELS, HAND_TRIPLETS, Identity, hand_indices, loop_similarity_hinge

LOSS_CLASSES = [value for value in map(losses.__dict__.get, losses.__all__)
                if isinstance(value, type) and issubclass(value, AdversarialTripletLoss)
                and value is not AdversarialTripletLoss]
# A margin in cosine units that three of the five clean hand triplets violate and two do not (s(a, n) - s(a, p)
# is about -0.60, -0.32, -0.36, -0.60, -0.32).
MARGIN = 0.4
ATTACK = {"eps": 0.1, "alpha": 0.02, "steps": 3, "progressive_alpha": False}
# TrideLoss's top-rank term is an extra sub-loss; the clean comparison is of the triplet hinge alone.
HINGE_ONLY = {"TrideLoss": {"top_rank": False}}


class HalfSquaredEuclidean(LpDistance):
    """||a - b||^2 / 2 of unit vectors, = 1 - cos(a, b): a distance that orders pairs as CosineSimilarity does."""

    def compute_mat(self, query_emb, ref_emb):
        ref_emb = query_emb if ref_emb is None else ref_emb
        return torch.cdist(query_emb, ref_emb).pow(2) / 2

    def pairwise_distance(self, query_emb, ref_emb):
        return (query_emb - ref_emb).pow(2).sum(dim=1) / 2


@pytest.fixture(params=LOSS_CLASSES, ids=lambda loss_class: loss_class.__name__)
def loss_class(request):
    return request.param


def test_the_clean_hinge_is_pml_triplet_margin_loss_with_the_similarity(loss_class):
    model = Identity()
    loss = loss_class(model, distance=CosineSimilarity(), margin=MARGIN, eps=0.0,
                      **HINGE_ONLY.get(loss_class.__name__, {}))
    value = loss(model(HAND_IMAGES), HAND_LABELS, hand_indices())
    images = HAND_IMAGES.tolist()
    hinges = [loop_similarity_hinge(images[a], images[p], images[n], MARGIN) for a, p, n in HAND_TRIPLETS]
    expected = sum(hinges) / len(hinges)
    pml = pml_losses.TripletMarginLoss(margin=MARGIN, distance=CosineSimilarity(), reducer=MeanReducer())
    assert sum(hinge > 0 for hinge in hinges) == 3
    if loss_class.__name__ != "HMLoss":  # HM adds its intra-class structure term to the hinge
        assert value.item() == pytest.approx(expected, abs=1e-12)
    assert pml(model(HAND_IMAGES), HAND_LABELS, hand_indices()).item() == pytest.approx(expected, abs=1e-12)
    assert loss.triplet_losses(*(model(HAND_IMAGES)[list(column)] for column in zip(*HAND_TRIPLETS))).mean().item() \
        == pytest.approx(expected, abs=1e-12)


def test_the_attack_with_a_similarity_equals_the_attack_with_a_distance_of_the_same_order(loss_class):
    """1 - cos = ||a - b||^2 / 2 for unit vectors: every objective sees the same numbers, so PGD takes the same
    signed steps (the attack moves the same way) and the loss and its statistics agree. (EST's shift objective is
    Euclidean under a similarity: see the next test.)"""
    if loss_class is ESTLoss:
        return
    model = Identity()
    results = []
    for distance in (CosineSimilarity(), HalfSquaredEuclidean()):
        loss = loss_class(model, distance=distance, margin=MARGIN, collect_stats=True, **ATTACK)
        assert loss.distance is distance
        calls = []
        for _ in range(2):  # TrideLoss: CAP, then ANP
            value = loss(model(HAND_IMAGES), HAND_LABELS, hand_indices())
            calls.append((value.item(), loss.pgd_steps, loss.separability, loss.mean_distance, loss.embedding_shift))
        results.append(calls)
    for cosine, half_squared in zip(*results):
        assert cosine[1] == half_squared[1]
        assert cosine[0] > 0 and cosine[4] > 0
        assert cosine == pytest.approx(half_squared, abs=1e-9)


class Recording(Identity):
    """Identity that keeps the images of its last forward pass (the loss's training forward of the attacked images)."""

    def forward(self, x):
        self.last_images = x.detach().clone()
        return super().forward(x)


@pytest.mark.parametrize("perturb", ["unique", "per_triplet"])
def test_est_attack_with_a_similarity_moves_as_with_the_euclidean_distance(perturb):
    """EST maximises the Euclidean shift of the normalised embedding under a similarity too (1 - s has no gradient
    at the clean embedding, where the attack starts): the attacked images are those of LpDistance."""
    attacked = []
    for distance in (CosineSimilarity(), LpDistance()):
        model = Recording()
        loss = ESTLoss(model, distance=distance, margin=MARGIN, perturb=perturb, collect_stats=True, **ATTACK)
        loss(model(HAND_IMAGES), HAND_LABELS, hand_indices())
        assert loss.pgd_steps == ATTACK["steps"]
        attacked.append(model.last_images)
    assert attacked[0].shape == attacked[1].shape
    assert torch.equal(attacked[0], attacked[1])
    # each attacked image lies within eps (L-inf) of its clean image, and the attack moved them
    offsets = (attacked[0][:, None, :] - HAND_IMAGES[None, :, :]).abs().amax(dim=2).amin(dim=1)
    assert offsets.max() <= ATTACK["eps"] + 1e-12 and offsets.max() > 0


def test_a_defense_with_cosine_similarity_trains_on_digits(loss_class, tiny_model, digits_batch):
    images, labels = digits_batch
    distance = CosineSimilarity()
    extra = {"lam": "auto"} if loss_class is TrideLoss else {}
    loss = loss_class(tiny_model, distance=distance, collect_stats=True, **ATTACK, **extra)
    miner = TrideMiner(distance=distance, seed=0, anchors="spc2")
    optimizer = torch.optim.SGD(tiny_model.parameters(), lr=0.05)
    for _ in range(2):
        embeddings = tiny_model(images)
        value = loss(embeddings, labels, miner(embeddings, labels))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        assert math.isfinite(value.item())
        assert math.isfinite(loss.separability) and math.isfinite(loss.mean_distance)


def test_an_unnormalised_dot_product_trains_but_its_distance_ratios_are_refused(loss_class):
    model = Identity()
    dot = DotProductSimilarity(normalize_embeddings=False)
    loss = loss_class(model, distance=dot, margin=MARGIN, **ATTACK)
    assert math.isfinite(loss(model(HAND_IMAGES), HAND_LABELS, hand_indices()).item())
    with pytest.raises(ValueError, match="mean_pairwise_distance.*normalize_embeddings=False"):
        loss_class(model, distance=dot, collect_stats=True, **ATTACK)(model(HAND_IMAGES), HAND_LABELS, hand_indices())
