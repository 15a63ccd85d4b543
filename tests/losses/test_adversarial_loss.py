"""AdversarialLoss: the attack objective against loops over pairs, the PGD step against finite differences, every
loss of the docs trained on digits, the wrapped loss's parameters, the drop-in contract and bad input."""

import math
import pathlib

import pytest
import torch
from pytorch_metric_learning import losses, miners, trainers
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
from pytorch_metric_learning.reducers import MeanReducer
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper

import pml_tride
from pml_tride import AdversarialLoss, TrideLoss, TrideTrainer
from pml_tride.collapseness import collapseness
from pml_tride.losses import adversarial_loss, attack_passes

from tiny_models import tiny_cnn
from triplet_loops import FINITE_DIFFERENCE_STEP

FAST = {"eps": 0.1, "alpha": 0.02, "steps": 2, "progressive_alpha": False}
DOCS_PAGE = pathlib.Path(__file__).parents[2] / "docs" / "hardening-any-pml-loss.md"
NUM_CLASSES, EMBEDDING_SIZE = 5, 8  # the digits_batch fixture's classes, tiny_cnn's embedding
# Every loss the docs page lists, built for the digits batch; the proxy and classifier losses take no tuples.
LISTED_LOSSES = {
    "MultiSimilarityLoss": lambda: losses.MultiSimilarityLoss(),
    "ContrastiveLoss": lambda: losses.ContrastiveLoss(),
    "NTXentLoss": lambda: losses.NTXentLoss(),
    "SupConLoss": lambda: losses.SupConLoss(),
    "CircleLoss": lambda: losses.CircleLoss(),
    "TripletMarginLoss": lambda: losses.TripletMarginLoss(margin=0.2),
    "ProxyAnchorLoss": lambda: losses.ProxyAnchorLoss(NUM_CLASSES, EMBEDDING_SIZE),
    "ArcFaceLoss": lambda: losses.ArcFaceLoss(NUM_CLASSES, EMBEDDING_SIZE),
    "SubCenterArcFaceLoss": lambda: losses.SubCenterArcFaceLoss(num_classes=NUM_CLASSES,
                                                                embedding_size=EMBEDDING_SIZE),
    "NormalizedSoftmaxLoss": lambda: losses.NormalizedSoftmaxLoss(NUM_CLASSES, EMBEDDING_SIZE),
}
TUPLE_FREE = {"ProxyAnchorLoss", "ArcFaceLoss", "SubCenterArcFaceLoss", "NormalizedSoftmaxLoss"}

# Hand-made batch: six 3-pixel images (float64), three classes; row 5 is in no pair of HAND_PAIRS.
HAND = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.3, 0.1], [0.2, 0.9, 0.3], [0.1, 0.7, 0.6], [0.5, 0.5, 0.9],
                     [0.3, 0.2, 0.8]], dtype=torch.float64)
HAND_LABELS = torch.tensor([0, 0, 1, 1, 2, 2])
POSITIVE_PAIRS = [(0, 1), (2, 3), (1, 0)]
NEGATIVE_PAIRS = [(0, 2), (1, 4), (3, 0), (4, 1)]
HAND_ROWS = [0, 1, 2, 3, 4]


def hand_pairs(positives=POSITIVE_PAIRS, negatives=NEGATIVE_PAIRS):
    def column(pairs, k):
        return torch.tensor([pair[k] for pair in pairs], dtype=torch.long)

    return column(positives, 0), column(positives, 1), column(negatives, 0), column(negatives, 1)


class Identity(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)


@pytest.fixture
def engine_calls(monkeypatch):
    """Every call of the PGD engine made by a loss: (images, objective, result)."""
    calls = []
    engine = attack_passes.projected_gradient_descent

    def spy(model, images, objective, **kwargs):
        result = engine(model, images, objective, **kwargs)
        calls.append((images, objective, result))
        return result

    monkeypatch.setattr(attack_passes, "projected_gradient_descent", spy)
    return calls


# ---------------------------------------------------------------- loops over pairs


def unit(row):
    norm = math.sqrt(sum(x * x for x in row))
    return [x / norm for x in row]


def loop_l2(u, v):
    u, v = unit(u), unit(v)
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v)))


def loop_cosine(u, v):
    return sum(a * b for a, b in zip(unit(u), unit(v)))


def loop_contrastive(rows, positives, negatives, pos_margin=0.0, neg_margin=1.0):
    """PML's ContrastiveLoss with its AvgNonZeroReducer: mean of the non-zero positive hinges plus the same of the
    negatives."""
    pos = [max(loop_l2(rows[a], rows[p]) - pos_margin, 0.0) for a, p in positives]
    neg = [max(neg_margin - loop_l2(rows[a], rows[n]), 0.0) for a, n in negatives]

    def mean_non_zero(values):
        kept = [value for value in values if value > 0]
        return sum(kept) / len(kept) if kept else 0.0

    return mean_non_zero(pos) + mean_non_zero(neg)


def loop_multi_similarity(rows, positives, negatives, alpha=2.0, beta=50.0, base=0.5):
    """PML's MultiSimilarityLoss (cosine similarity, MeanReducer over every row of the batch)."""
    total = 0.0
    for i in range(len(rows)):
        pos = [loop_cosine(rows[i], rows[p]) for a, p in positives if a == i]
        neg = [loop_cosine(rows[i], rows[n]) for a, n in negatives if a == i]
        if pos:
            total += math.log(1 + sum(math.exp(-alpha * (s - base)) for s in pos)) / alpha
        if neg:
            total += math.log(1 + sum(math.exp(beta * (s - base)) for s in neg)) / beta
    return total / len(rows)


LOOPS = {"ContrastiveLoss": (losses.ContrastiveLoss, loop_contrastive),
         "MultiSimilarityLoss": (losses.MultiSimilarityLoss, loop_multi_similarity)}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_the_attack_maximises_the_wrapped_loss_on_the_tuple_images(name, engine_calls):
    """The engine minimises -L(batch): the tuples' distinct images (once each) replaced by the iterate, the image in
    no tuple clean; L recomputed by a loop over the pairs."""
    loss_class, loop = LOOPS[name]
    model = Identity()
    adversarial = AdversarialLoss(loss_class(), model, steps=1, eps=0.01, alpha=0.01, progressive_alpha=False)
    adversarial(model(HAND), HAND_LABELS, hand_pairs())
    ((images, objective, _),) = engine_calls
    assert torch.equal(images, HAND[HAND_ROWS])
    iterate = torch.rand(len(HAND_ROWS), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rows = HAND.tolist()
    for position, row in enumerate(HAND_ROWS):
        rows[row] = iterate[position].tolist()
    expected = loop(rows, POSITIVE_PAIRS, NEGATIVE_PAIRS)
    assert objective(iterate).item() == pytest.approx(-expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_one_step_follows_the_finite_difference_sign_of_the_loss(name, engine_calls):
    """A 1-step attack moves each pixel by alpha in the sign of dL/dx, here a central finite difference of the
    loop, float64."""
    loss_class, loop = LOOPS[name]
    model, alpha = Identity(), 0.01
    AdversarialLoss(loss_class(), model, steps=1, eps=alpha, alpha=alpha, progressive_alpha=False)(
        model(HAND), HAND_LABELS, hand_pairs())
    ((_, _, result),) = engine_calls
    step = result.adversarial - HAND[HAND_ROWS]
    checked = 0
    for position, row in enumerate(HAND_ROWS):
        for pixel in range(3):
            values = []
            for sign in (1, -1):
                rows = HAND.tolist()
                rows[row][pixel] += sign * FINITE_DIFFERENCE_STEP
                values.append(loop(rows, POSITIVE_PAIRS, NEGATIVE_PAIRS))
            derivative = (values[0] - values[1]) / (2 * FINITE_DIFFERENCE_STEP)
            if abs(derivative) > 1e-4:
                assert step[position, pixel].item() == pytest.approx(math.copysign(alpha, derivative), abs=1e-12)
                checked += 1
    assert checked >= len(HAND_ROWS)


def test_the_training_loss_is_the_wrapped_loss_on_the_adversarial_rows(engine_calls):
    """Clean rows keep the caller's embeddings (and their gradient); the tuples' rows are the adversarial
    images' embeddings."""
    model = Identity()
    wrapped = losses.ContrastiveLoss()
    embeddings = HAND.clone().requires_grad_(True)
    value = AdversarialLoss(wrapped, model, **FAST)(embeddings, HAND_LABELS, hand_pairs(), inputs=HAND)
    ((_, _, result),) = engine_calls
    batch = HAND.clone()
    batch[HAND_ROWS] = result.adversarial
    assert value.item() == pytest.approx(wrapped(batch, HAND_LABELS, hand_pairs()).item(), rel=1e-12)
    assert value.item() > wrapped(HAND, HAND_LABELS, hand_pairs()).item()  # the attack raised the loss
    value.backward()
    assert torch.all(embeddings.grad[HAND_ROWS] == 0)  # those rows were replaced by the adversarial embeddings


# ---------------------------------------------------------------- the collapse-aware stop


COLLAPSED = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.85, 0.15, 0.1], [0.15, 0.85, 0.1]],
                         dtype=torch.float64)
COLLAPSED_LABELS = torch.tensor([0, 0, 1, 1])  # each image is nearer the other class's image than its own


@pytest.mark.parametrize("wrapped", [losses.ContrastiveLoss(), losses.MultiSimilarityLoss(),
                                     losses.ContrastiveLoss(distance=CosineSimilarity(), pos_margin=1,
                                                            neg_margin=0)],
                         ids=["distance", "similarity", "similarity-contrastive"])
def test_collapse_aware_stop_holds_on_a_collapsed_batch_only(wrapped):
    """C >= 0 (positives farther than negatives): no step; for a similarity, distance = -similarity. The naive
    adversary and a separable batch run every step."""
    model = Identity()
    for images, awareness, expected_steps in ((COLLAPSED, "collapse", 0), (COLLAPSED, "none", 2),
                                              (HAND[:4], "collapse", 2)):
        loss = AdversarialLoss(wrapped, model, awareness=awareness, collect_stats=True, **FAST)
        labels = COLLAPSED_LABELS if images is COLLAPSED else HAND_LABELS[:4]
        loss(model(images), labels)
        assert loss.pgd_steps == expected_steps, (awareness, images)
        assert (loss.collapseness_clean >= 0) == (images is COLLAPSED)


def test_pair_collapseness_is_eq5_over_the_positive_and_negative_pairs():
    model = Identity()
    for distance, sign in ((LpDistance(), 1), (CosineSimilarity(), -1)):
        loss = AdversarialLoss(losses.ContrastiveLoss(distance=distance), model, lam=3.0)
        pairs = hand_pairs()
        ap = torch.tensor([(loop_l2 if sign > 0 else loop_cosine)(HAND[a].tolist(), HAND[p].tolist())
                           for a, p in POSITIVE_PAIRS], dtype=torch.float64) * sign
        an = torch.tensor([(loop_l2 if sign > 0 else loop_cosine)(HAND[a].tolist(), HAND[n].tolist())
                           for a, n in NEGATIVE_PAIRS], dtype=torch.float64) * sign
        expected = collapseness(ap, an, lam=3.0)
        assert loss.pair_collapseness(HAND, pairs).item() == pytest.approx(expected.item(), abs=1e-5)


# ---------------------------------------------------------------- every listed loss trains


def test_the_docs_page_lists_every_tested_loss():
    text = DOCS_PAGE.read_text()
    assert all(name in text for name in LISTED_LOSSES)


@pytest.mark.parametrize("name", sorted(LISTED_LOSSES))
def test_every_listed_loss_trains_on_digits(name, digits_batch):
    """Two steps: finite loss, the model moves; the wrapped loss's own parameters are untouched by the attack (no
    .grad, same values and flags), then trained by the optimizer through the returned loss."""
    images, labels = digits_batch
    model = tiny_cnn(EMBEDDING_SIZE)
    wrapped = LISTED_LOSSES[name]()
    loss_func = AdversarialLoss(wrapped, model, collect_stats=True, **FAST)
    own = list(wrapped.parameters())
    assert (len(own) > 0) == (name in TUPLE_FREE)
    optimizer = torch.optim.SGD([*model.parameters(), *loss_func.parameters()], lr=0.1)
    before_model = [p.detach().clone() for p in model.parameters()]
    miner = None if name in TUPLE_FREE else miners.MultiSimilarityMiner(epsilon=1.0)
    for _ in range(2):
        optimizer.zero_grad()
        sentinels = [torch.full_like(p, 7.0) for p in own]
        for parameter, sentinel in zip(own, sentinels):
            parameter.grad = sentinel
        before_own = [p.detach().clone() for p in own]
        embeddings = model(images)
        value = loss_func(embeddings, labels, miner(embeddings, labels) if miner else None)
        assert math.isfinite(value.item()) and loss_func.pgd_steps == FAST["steps"]
        for parameter, sentinel, saved in zip(own, sentinels, before_own):
            assert parameter.grad is sentinel and torch.all(sentinel == 7.0)
            assert parameter.requires_grad and torch.equal(parameter, saved)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before_model, model.parameters()))
    assert all(not torch.equal(b, p) for b, p in zip(before_own, own))


# ---------------------------------------------------------------- the drop-in contract


def test_hook_capture_and_explicit_inputs_give_the_same_loss(digits_batch):
    images, labels = digits_batch
    model = tiny_cnn().eval()
    hooked = AdversarialLoss(losses.MultiSimilarityLoss(), model, **FAST)
    explicit = AdversarialLoss(losses.MultiSimilarityLoss(), model, **FAST)
    explicit.remove_hook()
    by_hook = hooked(model(images), labels).item()
    assert by_hook == pytest.approx(explicit(model(images), labels, inputs=images).item(), abs=1e-6)
    with pytest.raises(ValueError, match="inputs="):
        explicit(model(images), labels)
    embeddings = model(images)
    model(images.flip(0))
    with pytest.raises(ValueError, match="inputs="):
        hooked(embeddings, labels)


def test_triplets_pairs_and_none_are_accepted_and_empty_tuples_give_the_clean_loss(identity_model):
    model = identity_model
    wrapped = losses.TripletMarginLoss(margin=0.2)
    loss = AdversarialLoss(wrapped, model, collect_stats=True, **FAST)
    triplets = (torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([4, 0]))
    loss(model(HAND), HAND_LABELS, triplets)
    assert loss.num_perturbed == 5  # rows 0..4, row 0 once
    loss(model(HAND), HAND_LABELS, hand_pairs())
    assert loss.num_perturbed == 5
    loss(model(HAND), HAND_LABELS)
    assert loss.num_perturbed == len(HAND)
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    embeddings = HAND.clone().requires_grad_(True)
    empty = (torch.tensor([], dtype=torch.long),) * 3
    value = loss(embeddings, HAND_LABELS, empty, inputs=HAND)
    assert value.item() == 0 and value.requires_grad and calls == []


def test_the_model_is_restored_after_the_call(digits_batch):
    images, labels = digits_batch
    model = tiny_cnn()
    model(images).sum().backward()
    grads = [p.grad for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    next(model.parameters()).requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    loss = AdversarialLoss(losses.ContrastiveLoss(), model, **FAST)
    loss(model(images), labels)
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
    model.eval()
    buffers = [b.clone() for b in model.buffers()]
    loss(model(images), labels)
    assert not model.training and all(torch.equal(b, a) for b, a in zip(buffers, model.buffers()))


def test_set_epoch_state_dict_round_trip_and_the_wrapped_loss_is_a_submodule(tiny_model):
    wrapped = losses.ArcFaceLoss(NUM_CLASSES, EMBEDDING_SIZE)
    loss = AdversarialLoss(wrapped, tiny_model, alpha=0.02)
    loss.set_epoch(4, 8)
    assert loss.current_alpha == pytest.approx(0.01)
    with pytest.raises(ValueError, match="epoch"):
        loss.set_epoch(9, 8)
    state = loss.state_dict()
    assert not any(key.startswith("model") for key in state) and "loss.W" in state
    resumed = AdversarialLoss(losses.ArcFaceLoss(NUM_CLASSES, EMBEDDING_SIZE), tiny_model)
    resumed.load_state_dict(state)
    assert (resumed.epoch, resumed.total_epochs) == (4, 8) and torch.equal(resumed.loss.W, wrapped.W)
    assert list(loss.parameters()) == [wrapped.W]


def test_stats_are_recorded_and_the_trainers_train_it(digits_batch):
    images, labels = digits_batch
    loss = AdversarialLoss(losses.MultiSimilarityLoss(), tiny_cnn(), collect_stats=True, **FAST)
    assert loss.stat_names == adversarial_loss.ADVERSARIAL_LOSS_STAT_NAMES
    loss(loss.model(images), labels)
    values = {name: getattr(loss, name) for name in loss.stat_names}
    assert all(math.isfinite(value) for value in values.values()), values
    assert values["adversarial_loss"] > values["clean_loss"] and values["num_perturbed"] == len(images)
    assert set(loss.stat_names) <= set(loss._record_these_stats)
    dataset = torch.utils.data.TensorDataset(images, labels)
    for trainer_class in (trainers.MetricLossOnly, TrideTrainer):
        trunk = tiny_cnn()
        trainer_loss = AdversarialLoss(losses.ContrastiveLoss(), trunk, **FAST)
        trainer = trainer_class(
            models={"trunk": trunk},
            optimizers={"trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.1)},
            batch_size=len(images), loss_funcs={"metric_loss": trainer_loss}, dataset=dataset,
            dataloader_num_workers=0, data_device=torch.device("cpu"),
        )
        trainer.train(num_epochs=1)
    row = trainer.history[-1]
    assert row["pgd_steps"] == FAST["steps"] and set(trainer_loss.stat_names) <= set(row)
    assert isinstance(DistributedLossWrapper(trainer_loss).loss, AdversarialLoss)


def test_exported_flat():
    assert pml_tride.AdversarialLoss is AdversarialLoss is pml_tride.losses.AdversarialLoss
    assert issubclass(AdversarialLoss, pml_tride.AdversarialInputLoss)
    assert issubclass(pml_tride.AdversarialTripletLoss, pml_tride.AdversarialInputLoss)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("loss, message", [
    (torch.nn.MSELoss(), "BaseMetricLossFunction"),
    ("MultiSimilarityLoss", "BaseMetricLossFunction"),
    (losses.SelfSupervisedLoss(losses.NTXentLoss()), "ref_emb"),
    (losses.CrossBatchMemory(losses.ContrastiveLoss(), EMBEDDING_SIZE), "ref_emb"),
    (losses.VICRegLoss(), "ref_emb"),
    (TrideLoss(Identity()), "attacks its inputs"),
])
def test_losses_that_cannot_be_wrapped_are_refused(loss, message):
    with pytest.raises(TypeError, match=message):
        AdversarialLoss(loss, Identity())


def test_bad_arguments_and_calls_are_refused(identity_model):
    wrapped = losses.ContrastiveLoss()
    with pytest.raises(TypeError, match=r"unknown keyword arguments \['distance'\].*wrapped loss"):
        AdversarialLoss(wrapped, identity_model, distance=LpDistance())
    with pytest.raises(TypeError, match=r"unknown keyword arguments \['reducer'\]"):
        AdversarialLoss(wrapped, identity_model, reducer=MeanReducer())
    for kwargs, name in (({"awareness": "hardness"}, "awareness"), ({"lam": -1.0}, "lam"), ({"eps": -1.0}, "eps"),
                         ({"steps": 1.5}, "steps"), ({"input_range": (1, 0)}, "input_range")):
        with pytest.raises(ValueError, match=name):
            AdversarialLoss(wrapped, identity_model, **kwargs)
    with pytest.raises(TypeError, match="nn.Module"):
        AdversarialLoss(wrapped, lambda x: x)
    loss = AdversarialLoss(wrapped, identity_model)
    with pytest.raises(ValueError, match="ref_emb"):
        loss(HAND, HAND_LABELS, ref_emb=HAND, ref_labels=HAND_LABELS)
    with pytest.raises(ValueError, match="input_range"):
        loss(HAND, HAND_LABELS, inputs=HAND + 2)
    with pytest.raises(ValueError, match="triplets .* or pairs"):
        loss(HAND, HAND_LABELS, (torch.tensor([0]), torch.tensor([1])), inputs=HAND)
