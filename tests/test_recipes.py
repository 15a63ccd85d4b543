import pytest
import torch

from pml_tride import ACTLoss, ESTLoss, HMLoss, TrideLoss, TrideMiner
from pml_tride.recipes import DEFENSES, DefenseSpec, defense_loss, defense_miner, train_embedder
from tiny_models import tiny_cnn

EXPECTED_CLASSES = {"none": TrideLoss, "ca-tride": TrideLoss, "naive-at": HMLoss, "est": ESTLoss, "act": ACTLoss,
                    "hm": HMLoss}


def test_defenses_are_read_only_specs():
    with pytest.raises(TypeError):
        DEFENSES["mine"] = DefenseSpec("TrideLoss")
    with pytest.raises(TypeError):
        DEFENSES["ca-tride"].loss_kwargs["phase"] = "cap"
    with pytest.raises(AttributeError):
        DEFENSES["ca-tride"].loss = "HMLoss"
    with pytest.raises(ValueError, match="pml_tride.losses"):
        DefenseSpec("TripletMarginLoss")


@pytest.mark.parametrize("defense", sorted(DEFENSES))
def test_every_defense_builds_its_loss_and_miner(defense):
    loss = defense_loss(defense, tiny_cnn(), eps=0.1)
    assert isinstance(loss, EXPECTED_CLASSES.get(defense, TrideLoss)) and loss.eps == 0.1
    assert isinstance(defense_miner(defense, margin=0.1), TrideMiner)


def test_steps_default_to_the_loss_class_and_spec_arguments_take_precedence():
    assert defense_loss("ca-tride", tiny_cnn()).steps == 16
    assert defense_loss("hm", tiny_cnn()).steps == defense_loss("est", tiny_cnn()).steps == 32
    assert defense_loss("act", tiny_cnn(), steps=3).steps == 3
    assert defense_loss("none", tiny_cnn(), steps=5).steps == 0
    naive = defense_loss("naive-at", tiny_cnn())
    assert naive.destination == "unbounded" and naive.ics_weight == 0
    hm = defense_loss("hm", tiny_cnn())
    assert hm.destination == "gradual" and hm.ics_weight == 0.5 and not hm.progressive_alpha


def test_unknown_defense_and_foreign_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown defense"):
        defense_loss("madry", tiny_cnn())
    with pytest.raises(ValueError, match="'est'"):
        defense_loss("est", tiny_cnn(), lam=10.0)


def test_train_embedder_with_a_baseline():
    torch.manual_seed(0)
    images = torch.rand(24, 1, 6, 6)
    dataset = torch.utils.data.TensorDataset(images, torch.arange(6).repeat_interleave(4))
    dataset.labels = torch.arange(6).repeat_interleave(4)
    trainer, _ = train_embedder(tiny_cnn(), dataset, defense="act", epochs=1, batch_size=12, steps=2,
                                iterations_per_epoch=1, device=torch.device("cpu"))
    loss = trainer.loss_funcs["metric_loss"]
    assert isinstance(loss, ACTLoss) and loss.steps == 2
    assert trainer.history and trainer.history[0]["pgd_steps"] == 2
