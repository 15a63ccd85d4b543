import pytest
import torch
from pytorch_metric_learning.miners import BaseMiner

from pml_tride import HMLoss
from pml_tride.losses.hm_loss import saturation_stop

import triplet_loops as loops
from triplet_loops import HAND_IMAGES, HAND_LABELS, HAND_TRIPLETS, Identity, hand_indices

EPS, ALPHA, STEPS, MARGIN, ICS = 0.05, 0.02, 6, 0.2, 0.5


def loop_hardness(a, p, n):
    return loops.loop_distance(a, p) - loops.loop_distance(a, n)


def loop_saturation(tolerance):
    history = []

    def stop(value):
        done = value <= 0 or (len(history) > 0 and abs(value - history[-1]) < tolerance)
        history.append(value)
        return done

    return stop


def loop_hm(images, triplets, perturb, destinations, steps=STEPS, ics=ICS, unbounded=False, tolerance=1e-7, eps=EPS,
            alpha=ALPHA):
    """HM by loops: ET push of every source triplet (A, P, N all perturbed) up to its destination hardness, with the
    saturation stop; hinge on (A', P', N') plus ics * max(d(A, A') - d(A, P), 0). ``destinations[i]`` is None for
    a triplet without a destination."""
    keys = loops.triplet_keys(triplets, perturb)
    variables = loops.loop_variables(images, triplets, keys, perturb)

    def member(current, i, role):
        return current[keys[(i, role)]]

    def objective(current):
        hardness = [loop_hardness(*(member(current, i, role) for role in range(3))) for i in range(len(triplets))]
        if unbounded:
            return -sum(hardness) / len(hardness)
        return sum(min(h - d, 0.0) ** 2 for h, d in zip(hardness, destinations) if d is not None) / len(hardness)

    stop = None if unbounded else loop_saturation(tolerance)
    adversarial, taken = loops.loop_pgd(variables, objective, eps, alpha, steps, stop=stop)
    triplet_losses = [loops.loop_hinge(*(member(adversarial, i, role) for role in range(3)), MARGIN)
                      for i in range(len(triplets))]
    ics_losses = [ics * max(loops.loop_distance(images[a], member(adversarial, i, 0))
                            - loops.loop_distance(images[a], images[p]), 0.0) for i, (a, p, _) in enumerate(triplets)]
    mean_triplet = sum(triplet_losses) / len(triplets)
    return mean_triplet + sum(ics_losses) / len(triplets), mean_triplet, taken, objective


def test_et_loss_and_gradual_destination_match_loops():
    loss = HMLoss(Identity(), margin=MARGIN)
    source = [-0.3, -0.1, 0.05, -0.25]
    destination = [-0.2, -0.2, 0.0, -0.1]
    expected = sum(min(s - d, 0.0) ** 2 for s, d in zip(source, destination)) / 4
    value = loss.et_loss(torch.tensor(source, dtype=torch.float64), torch.tensor(destination, dtype=torch.float64))
    assert value.item() == pytest.approx(expected, abs=1e-15)
    for previous, expected_destination in [(2.0, -0.2), (0.2, -0.2), (0.05, -0.05), (0.0, 0.0)]:
        loss.previous_loss = previous
        assert loss.gradual_destination_hardness() == pytest.approx(expected_destination)


def test_ics_matches_loops():
    loss = HMLoss(Identity(), ics_weight=ICS)
    anchors, adversarial, positives = HAND_IMAGES[:2], HAND_IMAGES[2:4], HAND_IMAGES[4:]
    expected = [ICS * max(loops.loop_distance(a, b) - loops.loop_distance(a, p), 0.0)
                for a, b, p in zip(anchors.tolist(), adversarial.tolist(), positives.tolist())]
    assert loss.ics_losses(anchors, adversarial, positives).tolist() == pytest.approx(expected, abs=1e-12)
    assert loss.ics_losses(anchors, anchors, positives).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("perturb", ["unique", "per_triplet"])
def test_gradual_adversary_over_two_calls_matches_loops(perturb):
    """Call 1 uses D = -margin (L_prev = 2.0); call 2 uses D = -clip(L_1, 0, margin) with L_1 the adversarial
    triplet loss of call 1."""
    model = Identity()
    loss = HMLoss(model, eps=EPS, alpha=ALPHA, steps=STEPS, perturb=perturb, collect_stats=True)
    images = HAND_IMAGES.tolist()
    previous = 2.0
    for _ in range(2):
        destination = -min(max(previous, 0.0), MARGIN)
        value = loss(model(HAND_IMAGES), HAND_LABELS, hand_indices())
        expected, mean_triplet, taken, _ = loop_hm(images, HAND_TRIPLETS, perturb, [destination] * 5)
        assert value.item() == pytest.approx(expected, abs=1e-9)
        assert loss.previous_loss == pytest.approx(mean_triplet, abs=1e-9)
        assert loss.hardness_destination == pytest.approx(destination)
        assert loss.pgd_steps == taken
        assert loss.num_perturbed == (6 if perturb == "unique" else 15)
        previous = mean_triplet
    assert loss.previous_loss != 2.0


def test_saturation_stop_ends_the_attack_early():
    model = Identity()
    # with a destination far above every triplet, the ET loss keeps falling until the eps-ball clips it, then
    # saturates: the attack stops well before its 32 steps
    loss = HMLoss(model, eps=EPS, alpha=ALPHA, steps=32, initial_previous_loss=0.0, collect_stats=True)
    value = loss(model(HAND_IMAGES), HAND_LABELS, hand_indices())
    expected, _, taken, _ = loop_hm(HAND_IMAGES.tolist(), HAND_TRIPLETS, "unique", [0.0] * 5, steps=32)
    assert value.item() == pytest.approx(expected, abs=1e-9)
    assert loss.pgd_steps == taken < 32


def test_saturation_stop_closure():
    stop = saturation_stop(1e-3)
    assert [stop(torch.tensor(v)) for v in (0.5, 0.4, 0.4005, 0.2)] == [False, False, True, False]
    assert saturation_stop(0.0)(torch.tensor(0.0))  # a zero ET loss has a zero gradient: nothing left to do
    fresh = saturation_stop(1e-3)
    assert not fresh(torch.tensor(0.4))  # each attack starts without a previous loss


def test_no_attack_step_when_every_triplet_is_already_at_its_destination():
    model = Identity()
    loss = HMLoss(model, steps=32, collect_stats=True)  # D = -0.2 and every hand triplet has H > -0.2
    calls = []
    embeddings = model(HAND_IMAGES)
    model.register_forward_hook(lambda *args: calls.append(1))
    loss(embeddings, HAND_LABELS, hand_indices([(0, 3, 1), (2, 0, 3)]))
    assert loss.pgd_steps == 0 and loss.max_perturbation == 0 and len(calls) == 1  # one attack evaluation only


def test_unbounded_destination_is_the_naive_adversary():
    model = Identity()
    loss = HMLoss(model, eps=EPS, alpha=ALPHA, steps=STEPS, destination="unbounded", ics_weight=0.0,
                  collect_stats=True)
    value = loss(model(HAND_IMAGES), HAND_LABELS, hand_indices())
    expected, _, taken, objective = loop_hm(HAND_IMAGES.tolist(), HAND_TRIPLETS, "unique", [None] * 5, ics=0.0,
                                            unbounded=True)
    assert value.item() == pytest.approx(expected, abs=1e-9)
    assert loss.pgd_steps == taken == STEPS  # no stop
    assert loss.hardness_adv > loss.hardness_clean
    assert loss.sub_loss_names() == ["loss"]
    assert not hasattr(loss, "hardness_destination")  # no destination: no statistic that would read as D = 0


class FixedMiner(BaseMiner):
    def __init__(self, triplets):
        super().__init__()
        self.triplets = triplets

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        return hand_indices(self.triplets)


def test_mined_destination_is_the_mean_hardness_per_anchor():
    model = Identity()
    destination_triplets = [(0, 1, 4), (0, 1, 3), (2, 3, 0)]  # anchors 0 (twice) and 2; none for 1, 3, 4
    loss = HMLoss(model, eps=EPS, alpha=ALPHA, steps=STEPS, destination="miner",
                  destination_miner=FixedMiner(destination_triplets), collect_stats=True)
    images = HAND_IMAGES.tolist()
    per_anchor = {}
    for a, p, n in destination_triplets:
        per_anchor.setdefault(a, []).append(loop_hardness(images[a], images[p], images[n]))
    destinations = [sum(per_anchor[a]) / len(per_anchor[a]) if a in per_anchor else None for a, _, _ in HAND_TRIPLETS]
    value = loss(model(HAND_IMAGES), HAND_LABELS, hand_indices())
    expected, _, taken, _ = loop_hm(images, HAND_TRIPLETS, "unique", destinations)
    assert value.item() == pytest.approx(expected, abs=1e-9)
    assert loss.pgd_steps == taken


def test_default_destination_miner_is_semi_hard():
    from pytorch_metric_learning.miners import TripletMarginMiner

    loss = HMLoss(Identity(), destination="miner")
    assert isinstance(loss.destination_miner, TripletMarginMiner)
    assert loss.destination_miner.type_of_triplets == "semihard" and loss.destination_miner.margin == 0.2
    with pytest.raises(ValueError, match="labels"):
        loss(Identity()(HAND_IMAGES), None, hand_indices())


def test_trains_on_adversarial_triplet_and_ics_reaches_clean_anchor_and_positive():
    model = Identity()
    triplets = [(0, 1, 2), (2, 3, 4), (3, 2, 5)]
    for ics_weight in (0.0, 0.5):
        # a large budget moves the anchors further from their clean selves than their positives: ICS is active
        loss = HMLoss(model, eps=0.4, alpha=0.2, steps=2, destination="unbounded", ics_weight=ics_weight)
        embeddings = HAND_IMAGES.clone().requires_grad_(True)
        value = loss(embeddings, HAND_LABELS, hand_indices(triplets), inputs=HAND_IMAGES)
        if not ics_weight:
            assert not value.requires_grad  # (A', P', N') all come from the adversarial forward
            continue
        value.backward()
        rows = {row for row in range(6) if embeddings.grad[row].abs().sum() > 0}
        assert rows and rows <= {0, 1, 2, 3}  # ICS reaches the clean anchors and positives only
        expected, _, _, _ = loop_hm(HAND_IMAGES.tolist(), triplets, "unique", [None] * 3, steps=2, unbounded=True,
                                    eps=0.4, alpha=0.2)
        assert value.item() == pytest.approx(expected, abs=1e-9)
        assert loss.sub_loss_names() == (["loss", "ics_loss"] if ics_weight else ["loss"])


def test_state_dict_round_trip_keeps_the_previous_loss():
    model = Identity()
    loss = HMLoss(model, eps=EPS, alpha=ALPHA, steps=2)
    loss.set_epoch(2, 5)
    loss(model(HAND_IMAGES), HAND_LABELS, hand_indices())
    state = loss.state_dict()
    resumed = HMLoss(model, eps=EPS, alpha=ALPHA, steps=2)
    assert resumed.previous_loss == 2.0
    resumed.load_state_dict(state)
    assert resumed.previous_loss == loss.previous_loss != 2.0 and (resumed.epoch, resumed.total_epochs) == (2, 5)
    assert resumed(model(HAND_IMAGES), HAND_LABELS, hand_indices()).item() == pytest.approx(
        loss(model(HAND_IMAGES), HAND_LABELS, hand_indices()).item(), abs=1e-12
    )


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"destination": "hardest"}, ValueError, "destination"),
        ({"destination_miner": FixedMiner([])}, ValueError, "destination_miner"),
        ({"destination": "miner", "destination_miner": object()}, TypeError, "destination_miner"),
        ({"ics_weight": -0.5}, ValueError, "ics_weight"),
        ({"saturation_tolerance": float("nan")}, ValueError, "saturation_tolerance"),
        ({"initial_previous_loss": -1.0}, ValueError, "initial_previous_loss"),
    ],
)
def test_invalid_hm_arguments_name_the_argument(kwargs, error, name):
    with pytest.raises(error, match=name):
        HMLoss(Identity(), **kwargs)
