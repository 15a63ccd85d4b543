"""The TrideLoss entries of pml_tride.recipes.DEFENSES and the reference miner's arguments."""

import torch
from torch import nn

from pml_tride import TrideMiner
from pml_tride.recipes import DEFENSES, REFERENCE_MINER_KWARGS, defense_loss


def test_defense_entries_build_the_documented_losses():
    model = nn.Flatten()
    expected = {
        "ca-tride-no-ltr": {"gamma": 0.0, "top_rank": True, "with_top_rank_loss": False},
        "hardness-tride": {"awareness": "hardness", "progressive_alpha": False},
        "naive-cap": {"awareness": "none", "phase_cycle.mode": "cap"},
        "naive-anp": {"awareness": "none", "phase_cycle.mode": "anp"},
        "ca-tride-reference": {"variant": "reference", "perturb": "per_triplet"},
        "colo-tride": {"orientation": "assist", "variant": "paper", "awareness": "collapse"},
        "ca-tride": {"orientation": "stop", "perturb": "unique", "progressive_alpha": True},
    }
    for defense, attributes in expected.items():
        loss = defense_loss(defense, model)
        for name, value in attributes.items():
            owner = loss
            for part in name.split(".")[:-1]:
                owner = getattr(owner, part)
            assert getattr(owner, name.split(".")[-1]) == value, (defense, name)
    assert {"colo-tride", "ca-tride-no-ltr", "naive-cap", "naive-anp"} <= set(DEFENSES)


def test_reference_miner_kwargs_give_the_released_miner():
    miner = TrideMiner(**REFERENCE_MINER_KWARGS)
    assert (miner.schedule, miner.anchors) == ("reference", "spc2")
    labels = torch.arange(4).repeat_interleave(2)
    anchors, positives, _ = miner(torch.nn.functional.normalize(torch.randn(8, 3), dim=1), labels)
    assert anchors.tolist() == [0, 2, 4, 6] and positives.tolist() == [1, 3, 5, 7]
