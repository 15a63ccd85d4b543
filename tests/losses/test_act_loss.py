import pytest

from pml_tride import ACTLoss

import triplet_loops as loops
from triplet_loops import HAND_IMAGES, HAND_TRIPLETS, Identity

EPS, ALPHA, STEPS, MARGIN = 0.05, 0.02, 4, 0.2


def loop_act(images, triplets, perturb, steps=STEPS, margin=MARGIN):
    """ACT by loops: collapse each P' onto its N' (anchor clean); hinge on (A, P', N')."""
    keys = loops.triplet_keys(triplets, perturb, roles=(1, 2))
    variables = loops.loop_variables(images, triplets, keys, perturb)

    def objective(current):
        distances = [loops.loop_distance(current[keys[(i, 1)]], current[keys[(i, 2)]]) for i in range(len(triplets))]
        return sum(distances) / len(triplets)

    adversarial, taken = loops.loop_pgd(variables, objective, EPS, ALPHA, steps)
    losses = [
        loops.loop_hinge(images[a], adversarial[keys[(i, 1)]], adversarial[keys[(i, 2)]], margin)
        for i, (a, _, _) in enumerate(triplets)
    ]
    return sum(losses) / len(losses), adversarial, objective(variables), objective(adversarial)


def test_collapse_loss_matches_loops():
    loss = ACTLoss(Identity())
    positives, negatives = HAND_IMAGES[:3], HAND_IMAGES[3:]
    expected = sum(loops.loop_distance(p, n) for p, n in zip(positives.tolist(), negatives.tolist())) / 3
    assert loss.collapse_loss(positives, negatives).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("perturb", ["unique", "per_triplet"])
def test_full_loss_matches_a_loop_rederivation_of_attack_and_training(perturb):
    loss, value = loops.hand_loss(ACTLoss, eps=EPS, alpha=ALPHA, steps=STEPS, perturb=perturb, collect_stats=True)
    expected, adversarial, clean_objective, adversarial_objective = loop_act(HAND_IMAGES.tolist(), HAND_TRIPLETS,
                                                                             perturb)
    assert value.item() == pytest.approx(expected, abs=1e-9)
    assert adversarial_objective < clean_objective  # positives moved towards their negatives
    candidates = {p for _, p, _ in HAND_TRIPLETS} | {n for _, _, n in HAND_TRIPLETS}
    assert loss.num_perturbed == (len(candidates) if perturb == "unique" else 2 * len(HAND_TRIPLETS))
    assert loss.pgd_steps == STEPS and loss.max_perturbation == pytest.approx(EPS)
    assert loss.embedding_shift_positive > 0 and loss.embedding_shift_negative > 0
    assert not hasattr(loss, "embedding_shift_anchor")  # the anchor is never perturbed


def test_trains_on_clean_anchor_and_adversarial_candidates():
    """Only the caller's anchor rows get a gradient: P' and N' come from the adversarial forward."""
    embeddings, value = loops.hand_leaf_call(ACTLoss, eps=EPS, alpha=ALPHA, steps=2)
    value.backward()
    anchors = {a for a, _, _ in HAND_TRIPLETS}
    for row in range(len(HAND_IMAGES)):
        assert (embeddings.grad[row].abs().sum() > 0) == (row in anchors)


def test_forward_passes_cover_only_the_candidates():
    seen = loops.hand_forward_sizes(ACTLoss, eps=EPS, alpha=ALPHA, steps=3)
    candidates = {p for _, p, _ in HAND_TRIPLETS} | {n for _, _, n in HAND_TRIPLETS}
    assert seen == [len(candidates)] * 4  # no clean anchor forward: the ACT objective does not involve A

