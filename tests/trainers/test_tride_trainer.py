import os

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses, miners, samplers
from torch import nn

from pml_tride import TrideLoss, TrideTrainer
from tiny_models import tiny_cnn


def dataset(count=48, classes=6):
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(count, 1, 6, 6, generator=generator)
    labels = torch.arange(classes).repeat(count // classes)
    return torch.utils.data.TensorDataset(images, labels)


class RecordingMiner(miners.TripletMarginMiner):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.epochs = []

    def set_epoch(self, epoch, total_epochs):
        self.epochs.append((epoch, total_epochs))


def build(seed=0, checkpoint_dir=None, sampler=None, loss_kwargs=None, end_of_epoch_hook=None):
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = tiny_cnn()
    loss = TrideLoss(model, eps=0.1, alpha=0.02, steps=2, **(loss_kwargs or {}))
    miner = RecordingMiner(margin=0.2)
    trainer = TrideTrainer(
        models={"trunk": model},
        optimizers={"trunk_optimizer": torch.optim.Adam(model.parameters(), lr=1e-2)},
        batch_size=12,
        loss_funcs={"metric_loss": loss},
        mining_funcs={"tuple_miner": miner},
        dataset=dataset(),
        sampler=sampler,
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        checkpoint_dir=checkpoint_dir,
        end_of_epoch_hook=end_of_epoch_hook,
    )
    return trainer, model, loss, miner


def test_sets_epochs_and_records_history():
    trainer, model, loss, miner = build()
    trainer.train(num_epochs=3)
    assert miner.epochs == [(0, 3), (1, 3), (2, 3)]
    assert (loss.epoch, loss.total_epochs) == (2, 3)
    assert len(trainer.history) == 3 * 4
    phases = [row["phase"] for row in trainer.history]
    assert phases[:4] == ["cap", "anp", "cap", "anp"]
    for row in trainer.history:
        for key in ("loss", "collapseness_clean", "collapseness_adv", "separability", "mean_distance",
                    "embedding_shift", "pgd_steps", "pgd_forward_images", "pgd_backward_images", "assist_steps"):
            assert np.isfinite(row[key])
        assert (row["pgd_backward_images"] > 0) == (row["pgd_steps"] > 0)
        assert row["pgd_forward_images"] >= row["pgd_backward_images"]
    assert any(row["pgd_steps"] > 0 for row in trainer.history if row["epoch"] > 1)


def test_attack_does_not_touch_batchnorm_statistics():
    """Only the two training forward passes per step (clean batch, adversarial images) update BatchNorm."""
    trainer, model, loss, miner = build()
    trainer.iterations_per_epoch = 3
    trainer.train(num_epochs=1)
    tracked = model[1].num_batches_tracked.item()
    perturbing_steps = sum(1 for row in trainer.history if row["pgd_steps"] > 0)
    assert tracked == 3 + perturbing_steps


def test_inputs_passed_explicitly_without_the_hook():
    trainer, model, loss, miner = build()
    loss.remove_hook()
    trainer.train(num_epochs=1)
    assert len(trainer.history) == 4


def test_loss_on_trunk_with_real_embedder_is_rejected():
    model = tiny_cnn()
    with pytest.raises(ValueError, match="Sequential"):
        TrideTrainer(
            models={"trunk": model, "embedder": nn.Linear(8, 4)},
            optimizers={},
            batch_size=12,
            loss_funcs={"metric_loss": TrideLoss(model)},
            dataset=dataset(),
            dataloader_num_workers=0,
        )


def test_plain_pml_loss_still_trains():
    torch.manual_seed(0)
    model = tiny_cnn()
    trainer = TrideTrainer(
        models={"trunk": model},
        optimizers={"trunk_optimizer": torch.optim.SGD(model.parameters(), lr=0.1)},
        batch_size=12,
        loss_funcs={"metric_loss": losses.TripletMarginLoss(margin=0.2)},
        dataset=dataset(),
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
    )
    trainer.train(num_epochs=1)
    assert len(trainer.history) == 4


@pytest.mark.parametrize("use_sampler", [False, True])
def test_resume_after_interruption_gives_identical_weights(tmp_path, use_sampler):
    def sampler():
        return samplers.MPerClassSampler(dataset().tensors[1], m=2, batch_size=12, length_before_new_iter=48) \
            if use_sampler else None

    uninterrupted, model_a, loss_a, _ = build(seed=3, sampler=sampler(), checkpoint_dir=str(tmp_path / "a"))
    uninterrupted.train(num_epochs=4)

    # a 4-epoch run killed after epoch 2 (PML stops when the end-of-epoch hook returns False)
    interrupted, _, _, _ = build(seed=3, sampler=sampler(), checkpoint_dir=str(tmp_path / "b"),
                                 end_of_epoch_hook=lambda trainer: trainer.epoch < 2)
    interrupted.train(num_epochs=4)
    assert interrupted.epoch == 2
    checkpoint = os.path.join(tmp_path, "b", "epoch_2.pt")
    assert os.path.isfile(checkpoint)

    torch.manual_seed(123)  # a fresh process would start from another RNG state
    np.random.seed(123)
    resumed, model_b, loss_b, _ = build(seed=99, sampler=sampler())
    start = resumed.load_checkpoint(checkpoint)
    assert start == 3
    resumed.train(start_epoch=start, num_epochs=4)

    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        assert torch.equal(a, b)
    assert loss_a.phase_cycle.calls == loss_b.phase_cycle.calls
    assert [row["loss"] for row in uninterrupted.history] == [row["loss"] for row in resumed.history]


def test_checkpoint_loads_with_weights_only_and_rejects_foreign_files(tmp_path):
    trainer, model, loss, miner = build()
    trainer.train(num_epochs=1)
    path = tmp_path / "state.pt"
    trainer.save_checkpoint(str(path))
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1 and "trunk" in state["models"]
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not a TrideTrainer checkpoint"):
        trainer.load_checkpoint(str(other))
    with pytest.raises(FileNotFoundError):
        trainer.load_checkpoint(str(tmp_path / "missing.pt"))
