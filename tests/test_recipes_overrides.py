import torch
from tiny_models import tiny_cnn

from pml_tride.datasets import Digits
from pml_tride.recipes import train_embedder
from pml_tride.samplers import SPC2Sampler


def test_train_embedder_passes_loss_and_miner_overrides():
    dataset = Digits("train", image_size=8)
    model = tiny_cnn()
    trainer, _ = train_embedder(model, dataset, defense="ca-tride", epochs=1, batch_size=20, steps=1,
                                iterations_per_epoch=1, device=torch.device("cpu"),
                                loss_overrides={"perturb": "per_triplet", "progressive_alpha": False},
                                miner_overrides={"triplets_per_anchor": 2})
    loss, miner = trainer.loss_funcs["metric_loss"], trainer.mining_funcs["tuple_miner"]
    assert loss.perturb == "per_triplet" and loss.progressive_alpha is False and miner.triplets_per_anchor == 2
    assert loss.epoch == 0 and loss.current_alpha == loss.alpha  # progressive alpha off: the full step at epoch 0


def test_train_embedder_takes_a_sampler():
    dataset = Digits("train", image_size=8)
    sampler = SPC2Sampler(dataset.labels, seed=1)
    trainer, _ = train_embedder(tiny_cnn(), dataset, defense="none", epochs=1, batch_size=20, iterations_per_epoch=2,
                                sampler=sampler, device=torch.device("cpu"))
    assert trainer.sampler is sampler and len(trainer.history) == 2


def test_overrides_win_over_the_named_arguments_and_spc2_anchors_get_pair_batches():
    dataset = Digits("train", image_size=8)  # 5 classes: too few for MPerClassSampler(m=2) at batch 20
    trainer, _ = train_embedder(tiny_cnn(), dataset, defense="ca-tride", epochs=1, batch_size=20, steps=1,
                                iterations_per_epoch=1, device=torch.device("cpu"), loss_overrides={"steps": 2},
                                miner_overrides={"anchors": "spc2"})
    assert trainer.loss_funcs["metric_loss"].steps == 2
    assert trainer.mining_funcs["tuple_miner"].anchors == "spc2" and isinstance(trainer.sampler, SPC2Sampler)
