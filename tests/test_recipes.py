import pytest
import torch

from pml_tride import ACTLoss, ESTLoss, HMLoss, SPC2RandomMiner, SPC2SoftHardMiner, TrideLoss, TrideMiner
from pml_tride.recipes import DEFENSES, DefenseSpec, defense_loss, defense_miner, train_embedder
from pml_tride.samplers import SPC2Sampler
from tiny_models import tiny_cnn

EXPECTED_CLASSES = {"none": TrideLoss, "ca-tride": TrideLoss, "naive-at": HMLoss, "est": ESTLoss, "act": ACTLoss,
                    "hm": HMLoss}
# robrank's triplet selection: spc2-random for EST and ACT, spc2-softhard source triplets for HM
EXPECTED_MINERS = {"est": SPC2RandomMiner, "act": SPC2RandomMiner, "hm": SPC2SoftHardMiner}


def test_defenses_are_read_only_specs():
    with pytest.raises(TypeError):
        DEFENSES["mine"] = DefenseSpec("TrideLoss")
    with pytest.raises(TypeError):
        DEFENSES["ca-tride"].loss_kwargs["phase"] = "cap"
    with pytest.raises(AttributeError):
        DEFENSES["ca-tride"].loss = "HMLoss"
    with pytest.raises(ValueError, match="pml_tride.losses"):
        DefenseSpec("TripletMarginLoss")
    with pytest.raises(ValueError, match="pml_tride.miners"):
        DefenseSpec("TrideLoss", miner="TripletMarginMiner")
    with pytest.raises(ValueError, match="pml_tride.miners"):
        DefenseSpec("TrideLoss", miner="spc2_anchor_rows")


@pytest.mark.parametrize("defense", sorted(DEFENSES))
def test_every_defense_builds_its_loss_and_miner(defense):
    loss = defense_loss(defense, tiny_cnn(), eps=0.1)
    assert isinstance(loss, EXPECTED_CLASSES.get(defense, TrideLoss)) and loss.eps == 0.1
    miner = defense_miner(defense, margin=0.1, schedule="paper", seed=0)
    assert type(miner) is EXPECTED_MINERS.get(defense, TrideMiner)
    assert miner.margin == 0.1 if isinstance(miner, TrideMiner) else not hasattr(miner, "margin")


def test_miner_arguments_a_miner_does_not_take_are_refused_unless_shared():
    assert defense_miner("hm", seed=0, anchor_as_positive=True).anchor_as_positive
    with pytest.raises(ValueError, match="'act' \\(SPC2RandomMiner\\)"):
        defense_miner("act", anchor_as_positive=True)
    with pytest.raises(ValueError, match="'ca-tride' \\(TrideMiner\\)"):
        defense_miner("ca-tride", anchor_as_positive=True)


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


def tiny_dataset(classes=6, per_class=4):
    torch.manual_seed(0)
    labels = torch.arange(classes).repeat_interleave(per_class)
    dataset = torch.utils.data.TensorDataset(torch.rand(len(labels), 1, 6, 6), labels)
    dataset.labels = labels
    return dataset


@pytest.mark.parametrize("defense, loss_class", [("act", ACTLoss), ("hm", HMLoss), ("est", ESTLoss)])
def test_train_embedder_with_a_baseline_and_its_spc2_miner(defense, loss_class):
    trainer, _ = train_embedder(tiny_cnn(), tiny_dataset(), defense=defense, epochs=2, batch_size=12, steps=2,
                                iterations_per_epoch=1, device=torch.device("cpu"))
    loss = trainer.loss_funcs["metric_loss"]
    assert isinstance(loss, loss_class) and loss.steps == 2
    assert type(trainer.mining_funcs["tuple_miner"]) is EXPECTED_MINERS[defense]
    assert len(trainer.history) == 2
    # ACT and EST take every step; HM's ET loss stops once the source triplets reach the destination hardness
    assert trainer.history[0]["pgd_steps"] == 2 if defense != "hm" else trainer.history[0]["pgd_steps"] <= 2
    # one triplet per SPC-2 pair, every row an anchor or a positive: all 12 images perturbed (A, P, N roles)
    assert trainer.mining_funcs["tuple_miner"].num_triplets == 6
    if defense != "act":
        assert trainer.history[-1]["num_perturbed"] == 12


def test_spc2_defenses_use_same_class_pairs_when_classes_are_fewer_than_pairs():
    trainer, _ = train_embedder(tiny_cnn(), tiny_dataset(classes=3, per_class=8), defense="est", epochs=1,
                                batch_size=12, steps=1, iterations_per_epoch=1, device=torch.device("cpu"))
    assert isinstance(trainer.sampler, SPC2Sampler)
    assert trainer.mining_funcs["tuple_miner"].num_triplets == 6
    with pytest.raises(ValueError, match="'est' mines with SPC2RandomMiner, which needs SPC-2 batches.*even"):
        train_embedder(tiny_cnn(), tiny_dataset(classes=3, per_class=8), defense="est", epochs=1, batch_size=11,
                       steps=1, iterations_per_epoch=1, device=torch.device("cpu"))
