"""What ESTLoss, ACTLoss and HMLoss share with TrideLoss as PML drop-ins: input capture, errors, restoration of
the model, state, reducers, trainers. Their objectives are tested in test_{est,act,hm}_loss.py."""

import math

import pytest
import torch
from pytorch_metric_learning import miners, reducers, trainers
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper

from pml_tride import ACTLoss, ESTLoss, HMLoss, TrideTrainer

from tiny_models import tiny_cnn
from triplet_loops import HAND_IMAGES, HAND_LABELS, HAND_TRIPLETS, Identity, hand_indices, loop_hinge

BASELINES = [ESTLoss, ACTLoss, HMLoss]
FAST = {"eps": 0.1, "alpha": 0.02, "steps": 2}


def tiny_batch():
    torch.manual_seed(0)
    return torch.rand(12, 1, 6, 6), torch.arange(6).repeat_interleave(2)


@pytest.mark.parametrize("loss_class", BASELINES)
def test_defaults_are_robranks(loss_class):
    loss = loss_class(Identity())
    assert (loss.steps, loss.eps, loss.alpha, loss.margin) == (32, 8 / 255, 1 / 255, 0.2)
    assert not loss.progressive_alpha and loss.perturb == "unique"


@pytest.mark.parametrize("loss_class", BASELINES)
def test_hook_and_explicit_inputs_give_the_same_loss(loss_class):
    model = tiny_cnn().eval()  # eval: the first call's training forward leaves BatchNorm statistics as they were
    images, labels = tiny_batch()
    miner = miners.BatchEasyHardMiner()
    hooked, explicit = loss_class(model, **FAST), loss_class(model, **FAST)
    embeddings = model(images)
    indices = miner(embeddings, labels)
    by_hook = hooked(embeddings, labels, indices)
    explicit.remove_hook()
    by_inputs = explicit(model(images), labels, indices, inputs=images)
    assert by_hook.item() == pytest.approx(by_inputs.item(), abs=1e-6)
    with pytest.raises(ValueError, match="inputs="):
        hooked(model(images).detach(), labels, indices)
    with pytest.raises(ValueError, match="inputs="):
        explicit(model(images), labels, indices)


@pytest.mark.parametrize("loss_class", BASELINES)
def test_model_is_restored_after_the_attack(loss_class):
    model = tiny_cnn()
    images, labels = tiny_batch()
    model(images).sum().backward()
    grads = [p.grad for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    model.layers_frozen = None
    next(model.parameters()).requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    loss_class(model, **FAST)(model(images), labels)
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
    model.eval()  # in eval mode the training forward does not touch BatchNorm statistics either
    buffers = [b.clone() for b in model.buffers()]
    loss_class(model, **FAST)(model(images), labels)
    assert not model.training and all(torch.equal(b, a) for b, a in zip(buffers, model.buffers()))


@pytest.mark.parametrize("loss_class", BASELINES)
def test_no_triplets_gives_connected_zero_and_no_attack(loss_class):
    model = Identity()
    calls = []
    loss = loss_class(model, **FAST)
    embeddings = HAND_IMAGES.clone().requires_grad_(True)
    model.register_forward_hook(lambda *args: calls.append(1))
    value = loss(embeddings, HAND_LABELS, hand_indices([]), inputs=HAND_IMAGES)
    assert value.item() == 0 and value.requires_grad and calls == []
    value.backward()
    assert torch.all(embeddings.grad == 0)


@pytest.mark.parametrize("loss_class", BASELINES)
def test_without_attack_the_loss_is_the_clean_triplet_loss(loss_class):
    """steps=0 (or eps=0): no forward pass, and the summed hinge of the clean triplets (ICS is 0 at A' = A)."""
    model = Identity()
    calls = []
    images = HAND_IMAGES.tolist()
    expected = sum(loop_hinge(images[a], images[p], images[n], 0.2) for a, p, n in HAND_TRIPLETS)
    for kwargs in ({"steps": 0}, {"eps": 0.0}):
        loss = loss_class(model, reducer=reducers.SumReducer(), **kwargs)
        embeddings = model(HAND_IMAGES)
        hook = model.register_forward_hook(lambda *args: calls.append(1))
        assert loss(embeddings, HAND_LABELS, hand_indices()).item() == pytest.approx(expected, abs=1e-9)
        hook.remove()
    assert calls == []


@pytest.mark.parametrize("loss_class", BASELINES)
def test_state_dict_round_trip_and_model_not_a_submodule(loss_class):
    model = tiny_cnn()
    loss = loss_class(model)
    loss.set_epoch(4, 9)
    state = loss.state_dict()
    assert not any(key.startswith("model") for key in state)
    resumed = loss_class(model)
    resumed.load_state_dict(state)
    assert (resumed.epoch, resumed.total_epochs) == (4, 9)
    loss.to(torch.float64)
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("loss_class", BASELINES)
def test_progressive_alpha_is_an_option(loss_class):
    loss = loss_class(Identity(), progressive_alpha=True)
    loss.set_epoch(5, 10)
    assert loss.current_alpha == pytest.approx(0.5 / 255)


@pytest.mark.parametrize("loss_class", BASELINES)
@pytest.mark.parametrize(
    "kwargs, name",
    [({"eps": -1.0}, "eps"), ({"steps": 2.5}, "steps"), ({"perturb": "all"}, "perturb"),
     ({"input_range": (1.0, 0.0)}, "input_range")],
)
def test_invalid_arguments_name_the_argument(loss_class, kwargs, name):
    with pytest.raises(ValueError, match=name):
        loss_class(Identity(), **kwargs)


@pytest.mark.parametrize("loss_class", BASELINES)
def test_similarity_distance_non_module_and_ref_emb_rejected(loss_class):
    with pytest.raises(ValueError, match="similarity"):
        loss_class(Identity(), distance=CosineSimilarity())
    with pytest.raises(TypeError, match="nn.Module"):
        loss_class(lambda x: x)
    model = Identity()
    with pytest.raises(ValueError, match="ref_emb"):
        loss_class(model)(model(HAND_IMAGES), HAND_LABELS, ref_emb=HAND_IMAGES, ref_labels=HAND_LABELS)
    with pytest.raises(ValueError, match="input_range"):
        loss_class(model)(model(HAND_IMAGES), HAND_LABELS, inputs=HAND_IMAGES + 1.5)


@pytest.mark.parametrize("loss_class", BASELINES)
def test_trains_in_a_plain_loop_and_in_the_trainers(loss_class):
    model = tiny_cnn()
    images, labels = tiny_batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = loss_class(model, **FAST)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        optimizer.zero_grad()
        embeddings = model(images)
        value = loss(embeddings, labels, miners.TripletMarginMiner(margin=0.2)(embeddings, labels))
        value.backward()
        optimizer.step()
        assert math.isfinite(value.item())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    dataset = torch.utils.data.TensorDataset(images, labels)
    for trainer_class in (trainers.MetricLossOnly, TrideTrainer):
        trunk = tiny_cnn()
        trainer = trainer_class(
            models={"trunk": trunk},
            optimizers={"trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.1)},
            batch_size=12,
            loss_funcs={"metric_loss": loss_class(trunk, **FAST)},
            dataset=dataset,
            dataloader_num_workers=0,
            data_device=torch.device("cpu"),
        )
        trainer.train(num_epochs=1)
    row = trainer.history[-1]
    # HM may stop early (saturation); EST and ACT always run their steps
    assert row["pgd_steps"] == 2 or (loss_class is HMLoss and row["pgd_steps"] < 2)
    assert math.isfinite(row["hardness_adv"]) and math.isfinite(row["embedding_shift"])
    assert {"collapseness_clean", "collapseness_adv", "hardness_clean", "embedding_shift_negative"} <= set(row)
    assert isinstance(DistributedLossWrapper(loss_class(trunk)).loss, loss_class)
