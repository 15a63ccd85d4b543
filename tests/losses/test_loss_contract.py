"""The defense contract: what every AdversarialTripletLoss subclass keeps as a PML drop-in (input capture, miner
outputs, no-triplet batches, epochs, state, statistics, argument errors, restoration of the model, trainers).
Each defense's objective is tested against loops in its own file (test_{tride,est,act,hm}_loss.py)."""

import math

import pytest
import torch
from pytorch_metric_learning import miners, reducers, trainers
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper

from pml_tride import ACTLoss, ESTLoss, HMLoss, TrideTrainer, losses
from pml_tride.losses.adversarial_triplet_loss import BASE_STAT_NAMES, SHARED_DEFAULTS, AdversarialTripletLoss

from tiny_models import tiny_cnn
from triplet_loops import HAND_TRIPLETS, hand_indices, loop_hinge, loop_similarity_hinge

# Every defense pml_tride.losses exports: a new one is held to the contract as soon as it is exported.
LOSS_CLASSES = [value for value in map(losses.__dict__.get, losses.__all__)
                if isinstance(value, type) and issubclass(value, AdversarialTripletLoss)
                and value is not AdversarialTripletLoss]
BASELINES = [ESTLoss, ACTLoss, HMLoss]
FAST = {"eps": 0.1, "alpha": 0.02, "steps": 2, "progressive_alpha": False}
MARGIN = 0.2


def with_cosine_similarity(loss_class):
    """``loss_class`` whose default distance is PML's CosineSimilarity: the contract holds for similarities too."""
    return type(loss_class.__name__, (loss_class,),
                {"__doc__": loss_class.__doc__, "get_default_distance": lambda self: CosineSimilarity()})


@pytest.fixture(params=[(loss_class, similarity) for loss_class in LOSS_CLASSES for similarity in (False, True)],
                ids=lambda param: param[0].__name__ + ("-cosine" if param[1] else ""))
def loss_class(request):
    loss_class, similarity = request.param
    return with_cosine_similarity(loss_class) if similarity else loss_class


def loss_value(loss, model, images, labels, indices=None):
    return loss(model(images), labels, indices)


# ---------------------------------------------------------------- arguments


def test_every_defense_of_the_package_is_held_to_the_contract():
    assert {loss_class.__name__ for loss_class in LOSS_CLASSES} >= {"TrideLoss", "ESTLoss", "ACTLoss", "HMLoss"}


def test_shared_defaults_are_the_base_defaults_with_the_documented_overrides(loss_class, identity_model):
    loss = loss_class(identity_model)
    expected = {**SHARED_DEFAULTS, **loss_class.default_overrides}
    assert loss_class.shared_defaults() == expected
    assert {name: getattr(loss, name) for name in SHARED_DEFAULTS} == expected
    for name, value in loss_class.default_overrides.items():
        assert f"{name}={value}" in loss_class.__doc__  # "defaults here: steps=32, ..."


@pytest.mark.parametrize("loss_class", BASELINES)
def test_baselines_default_to_robranks_settings(loss_class, identity_model):
    loss = loss_class(identity_model)
    assert (loss.steps, loss.eps, loss.alpha, loss.margin) == (32, 8 / 255, 1 / 255, 0.2)
    assert not loss.progressive_alpha and loss.perturb == "unique"
    loss.set_epoch(0, 10)
    assert loss.current_alpha == 1 / 255  # constant step size: the full alpha from epoch 0 on


def test_an_override_of_an_unknown_argument_is_refused_when_the_class_is_defined():
    with pytest.raises(TypeError, match="not shared arguments"):
        type("Broken", (AdversarialTripletLoss,), {"default_overrides": {"stepz": 3}})


def test_unknown_keyword_is_a_type_error_listing_the_valid_ones(loss_class, identity_model):
    with pytest.raises(TypeError, match=r"unknown keyword arguments \['margins'\].*shared arguments.*'margin'"):
        loss_class(identity_model, margins=0.1)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"margin": -0.1}, "margin"), ({"eps": -1.0}, "eps"), ({"alpha": float("nan")}, "alpha"),
     ({"steps": 2.5}, "steps"), ({"steps": True}, "steps"), ({"perturb": "all"}, "perturb"),
     ({"input_range": (1.0, 0.0)}, "input_range"), ({"attack_batch_size": 0}, "attack_batch_size")],
)
def test_invalid_shared_arguments_name_the_argument(loss_class, identity_model, kwargs, name):
    with pytest.raises(ValueError, match=name):
        loss_class(identity_model, **kwargs)


def test_non_module_rejected(loss_class, identity_model):
    with pytest.raises(TypeError, match="nn.Module"):
        loss_class(lambda x: x)


# ---------------------------------------------------------------- the call


def test_hook_capture_and_explicit_inputs_give_the_same_loss(loss_class, tiny_model, digits_batch):
    model = tiny_model.eval()  # eval: the first call's training forward leaves BatchNorm statistics as they were
    images, labels = digits_batch
    indices = miners.BatchEasyHardMiner()(model(images), labels)
    hooked, explicit = loss_class(model, **FAST), loss_class(model, **FAST)
    by_hook = loss_value(hooked, model, images, labels, indices)
    explicit.remove_hook()
    by_inputs = explicit(model(images), labels, indices, inputs=images)
    assert by_hook.item() == pytest.approx(by_inputs.item(), abs=1e-6)
    with pytest.raises(ValueError, match="inputs="):
        explicit(model(images), labels, indices)  # no hook left
    embeddings = model(images)
    model(images.flip(0))
    for stale in (embeddings, model(images).detach(), tiny_cnn()(images)):
        with pytest.raises(ValueError, match="inputs="):
            hooked(stale, labels, indices)


def test_the_defense_own_model_passes_leave_the_captured_batch(loss_class, tiny_model, digits_batch):
    """The attack's and the training forward's passes through the model are not captured: a second call on the
    same embeddings still finds their images."""
    images, labels = digits_batch
    loss = loss_class(tiny_model, **FAST)
    embeddings = tiny_model(images)
    for _ in range(2):
        assert torch.isfinite(loss(embeddings, labels))


def test_miner_triplets_pairs_and_none_are_all_accepted(loss_class, identity_model, hand_batch):
    """Pairs and no indices_tuple become triplets as in PML's TripletMarginLoss; the loss of the converted
    triplets is the same."""
    images, labels, triplets = hand_batch

    def value(indices):
        return loss_value(loss_class(identity_model, **FAST), identity_model, images, labels, indices).item()

    pairs = lmu.get_all_pairs_indices(labels)
    assert value(pairs) == pytest.approx(value(lmu.convert_to_triplets(pairs, labels)), abs=1e-12)
    assert value(None) == pytest.approx(value(lmu.get_all_triplets_indices(labels)), abs=1e-12)
    assert math.isfinite(value(triplets))


def test_no_triplets_gives_a_connected_zero_without_any_forward(loss_class, identity_model, hand_batch):
    images, labels, _ = hand_batch
    calls = []
    loss = loss_class(identity_model, **FAST)
    embeddings = images.clone().requires_grad_(True)
    identity_model.register_forward_hook(lambda *args: calls.append(1))
    value = loss(embeddings, labels, hand_indices([]), inputs=images)
    assert value.item() == 0 and value.requires_grad and calls == []
    value.backward()
    assert torch.all(embeddings.grad == 0)


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"eps": 0.0}, {"progressive_alpha": True, "epoch": 0}])
def test_without_attack_the_loss_is_the_clean_triplet_loss_and_no_forward(loss_class, identity_model, hand_batch,
                                                                           kwargs):
    """No step can move the inputs (steps=0, eps=0, or the progressive alpha of epoch 0): no forward pass, and the
    first call's loss is the summed hinge of the clean triplets (ICS is 0 at A' = A; L_TR is 0 in CAP)."""
    images, labels, indices = hand_batch
    kwargs = dict(kwargs)
    epoch = kwargs.pop("epoch", None)
    loss = loss_class(identity_model, reducer=reducers.SumReducer(), **kwargs)
    if epoch is not None:
        loss.set_epoch(epoch, 10)
    rows = images.tolist()
    hinge = loop_similarity_hinge if loss.distance.is_inverted else loop_hinge
    expected = sum(hinge(rows[a], rows[p], rows[n], MARGIN) for a, p, n in HAND_TRIPLETS)
    embeddings = identity_model(images)
    calls = []
    identity_model.register_forward_hook(lambda *args: calls.append(1))
    assert loss(embeddings, labels, indices).item() == pytest.approx(expected, abs=1e-9)
    assert torch.isfinite(loss(embeddings, labels, indices))
    assert calls == []


def test_bad_inputs_embeddings_and_ref_emb_raise(loss_class, identity_model, hand_batch):
    images, labels, indices = hand_batch
    loss = loss_class(identity_model)
    embeddings = identity_model(images)
    for bad_images, message in ((images + 1.5, "input_range"), (images * float("nan"), "NaN"),
                                (images[:3], "one row per embedding")):
        with pytest.raises(ValueError, match=message):
            loss(embeddings, labels, indices, inputs=bad_images)
    with pytest.raises(ValueError, match="NaN"):
        loss(embeddings * float("nan"), labels, indices, inputs=images)
    with pytest.raises(ValueError, match="ref_emb"):
        loss(embeddings, labels, indices, ref_emb=images, ref_labels=labels)


def test_model_is_restored_after_the_call(loss_class, tiny_model, digits_batch):
    model = tiny_model
    images, labels = digits_batch
    model(images).sum().backward()
    grads = [p.grad for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    next(model.parameters()).requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    loss_value(loss_class(model, **FAST), model, images, labels)
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
    model.eval()  # in eval mode the training forward does not touch BatchNorm statistics either
    buffers = [b.clone() for b in model.buffers()]
    loss_value(loss_class(model, **FAST), model, images, labels)
    assert not model.training and all(torch.equal(b, a) for b, a in zip(buffers, model.buffers()))


# ---------------------------------------------------------------- epochs, state, statistics


def test_set_epoch_validates_and_drives_the_progressive_step_size(loss_class, identity_model, hand_batch):
    images, labels, indices = hand_batch
    loss = loss_class(identity_model, progressive_alpha=True, steps=1)
    with pytest.warns(UserWarning, match="set_epoch"):
        loss_value(loss, identity_model, images, labels, indices)
    loss.set_epoch(5, 10)
    assert loss.current_alpha == pytest.approx(0.5 / 255)
    for epoch, total in ((11, 10), (1.5, 10), (0, 0), (True, 10)):
        with pytest.raises(ValueError, match="epoch"):
            loss.set_epoch(epoch, total)
    assert (loss.epoch, loss.total_epochs) == (5, 10)


def test_state_dict_round_trip_and_the_model_is_not_a_submodule(loss_class, tiny_model):
    loss = loss_class(tiny_model)
    loss.set_epoch(4, 9)
    state = loss.state_dict()
    assert not any(key.startswith("model") for key in state)
    assert not any(name.startswith("model") for name, _ in loss.named_parameters())
    resumed = loss_class(tiny_model)
    resumed.load_state_dict(state)
    assert (resumed.epoch, resumed.total_epochs) == (4, 9)
    loss.to(torch.float64)
    assert next(tiny_model.parameters()).dtype == torch.float32


def test_stat_names_are_recorded_when_collect_stats(loss_class, tiny_model, digits_batch):
    images, labels = digits_batch
    loss = loss_class(tiny_model, collect_stats=True, **FAST)
    names = loss.stat_names
    assert isinstance(names, tuple) and len(set(names)) == len(names)
    assert names[:len(BASE_STAT_NAMES)] == BASE_STAT_NAMES
    loss_value(loss, tiny_model, images, labels)
    values = {name: getattr(loss, name) for name in names}
    assert all(math.isfinite(float(value)) for value in values.values()), values
    assert values["num_perturbed"] > 0 and values["mean_distance"] > 0
    assert set(names) <= set(loss._record_these_stats)  # PML's record-keeper logs them


def test_trains_in_a_plain_loop_and_in_the_trainers(loss_class, tiny_model, digits_batch):
    images, labels = digits_batch
    optimizer = torch.optim.SGD(tiny_model.parameters(), lr=0.1)
    loss = loss_class(tiny_model, **FAST)
    before = [p.detach().clone() for p in tiny_model.parameters()]
    for _ in range(2):
        optimizer.zero_grad()
        embeddings = tiny_model(images)
        value = loss(embeddings, labels, miners.TripletMarginMiner(margin=MARGIN)(embeddings, labels))
        value.backward()
        optimizer.step()
        assert math.isfinite(value.item())
    assert any(not torch.equal(b, p) for b, p in zip(before, tiny_model.parameters()))
    dataset = torch.utils.data.TensorDataset(images, labels)
    for trainer_class in (trainers.MetricLossOnly, TrideTrainer):
        trunk = tiny_cnn()
        trainer_loss = loss_class(trunk, **FAST)
        trainer = trainer_class(
            models={"trunk": trunk},
            optimizers={"trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.1)},
            batch_size=len(images),
            loss_funcs={"metric_loss": trainer_loss},
            dataset=dataset,
            dataloader_num_workers=0,
            data_device=torch.device("cpu"),
        )
        trainer.train(num_epochs=1)
    row = trainer.history[-1]
    if issubclass(loss_class, (ESTLoss, ACTLoss)):
        assert row["pgd_steps"] == FAST["steps"]  # no early stop (other defenses may stop)
    assert set(trainer_loss.stat_names) <= set(row)  # TrideTrainer logs what the loss records
    assert all(math.isfinite(row[name]) for name in trainer_loss.stat_names)
    assert isinstance(DistributedLossWrapper(loss_class(trunk)).loss, loss_class)
