"""Surviving faults: mid-epoch checkpoints, SIGKILL and resume, the divergence guard."""

import os
import subprocess
import sys

import fault_worker
import pytest
import torch
from pytorch_metric_learning import losses

from pml_tride import TrideLoss, TrideTrainer
from pml_tride.checkpoint_io import CorruptCheckpointError
from pml_tride.trainers.tride_trainer import TrainingDivergedError

WORKER = os.path.join(os.path.dirname(__file__), "fault_worker.py")
SUBPROCESS_TIMEOUT = 60


def weights(trainer):
    return {name: tensor.clone() for name, tensor in trainer.models["trunk"].state_dict().items()}


def assert_identical(first, second):
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    trainer = fault_worker.run(str(tmp_path_factory.mktemp("uninterrupted")))
    return weights(trainer), [row["loss"] for row in trainer.history]


def test_resume_from_a_mid_epoch_checkpoint_is_exact(tmp_path, uninterrupted):
    def crash(trainer):
        if (trainer.epoch, trainer.iteration) == (2, 2):
            raise Crash  # before the checkpoint of this iteration: latest.pt holds epoch 2 after iteration 1

    with pytest.raises(Crash):
        fault_worker.run(str(tmp_path), end_of_iteration_hook=crash)
    state = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert (state["epoch"], state["epoch_complete"], state["iteration"]) == (2, False, 2)
    resumed = fault_worker.run(str(tmp_path / "resumed"), resume=str(tmp_path / "latest.pt"))
    assert_identical(weights(resumed), uninterrupted[0])
    assert [row["loss"] for row in resumed.history] == uninterrupted[1]


def test_sigkill_mid_epoch_then_resume_gives_bit_identical_weights(tmp_path, uninterrupted):
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, WORKER, str(out), "--pause", "0.5"], stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        for line in process.stdout:
            if line.strip() == "done 2 1":  # killed while pausing after the second iteration of epoch 2
                break
        assert process.poll() is None, "the worker ended before it could be killed"
        process.kill()  # SIGKILL
        process.wait(timeout=SUBPROCESS_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    state = torch.load(out / "latest.pt", weights_only=True)
    assert state["epoch"] == 2 and not state["epoch_complete"], "the kill did not land in the middle of epoch 2"
    resumed = subprocess.run([sys.executable, WORKER, str(out), "--resume", str(out / "latest.pt")],
                             capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr
    final = torch.load(out / "latest.pt", weights_only=True)
    assert final["epoch"] == fault_worker.EPOCHS and final["epoch_complete"]
    assert_identical(final["models"]["trunk"], uninterrupted[0])


def test_truncated_or_corrupted_checkpoint_gives_a_clear_error(tmp_path):
    trainer = fault_worker.run(str(tmp_path), epochs=1)
    latest = tmp_path / "latest.pt"
    content = latest.read_bytes()
    latest.write_bytes(content[: len(content) // 2])
    with pytest.raises(CorruptCheckpointError, match="latest.pt.*truncated or corrupted") as caught:
        trainer.load_checkpoint(str(latest))
    assert caught.value.__cause__ is None and caught.value.__context__ is None  # no traceback from inside torch
    latest.write_bytes(b"\0" * 100 + content[100:])
    with pytest.raises(CorruptCheckpointError, match="latest.pt"):
        trainer.load_checkpoint(str(latest))


class NaNAfter(losses.TripletMarginLoss):
    """The triplet loss, NaN from the ``bad_call``-th call on."""

    def __init__(self, bad_call, **kwargs):
        super().__init__(**kwargs)
        self.calls, self.bad_call = 0, bad_call

    def forward(self, *args, **kwargs):
        self.calls += 1
        value = super().forward(*args, **kwargs)
        return value * float("nan") if self.calls >= self.bad_call else value


def single_process_trainer(build_loss, **kwargs):
    """A TrideTrainer on fault_worker's tiny CNN and data with the loss ``build_loss(model)``."""
    torch.manual_seed(0)
    model = fault_worker.tiny_cnn()
    trainer = TrideTrainer(
        models={"trunk": model},
        optimizers={"trunk_optimizer": torch.optim.SGD(model.parameters(), lr=0.1)},
        batch_size=12,
        loss_funcs={"metric_loss": build_loss(model)},
        dataset=fault_worker.dataset(),
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        seed=0,
        **kwargs,
    )
    return model, trainer


def test_divergence_stops_before_the_update_and_keeps_the_good_checkpoint(tmp_path):
    model, trainer = single_process_trainer(lambda model: NaNAfter(bad_call=6, margin=0.2),
                                            checkpoint_dir=str(tmp_path), checkpoint_every=1)
    seen = []
    trainer.end_of_iteration_hook = lambda t: seen.append(weights(t))
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, iteration 1 .*latest\.pt"):
        trainer.train(num_epochs=3)
    parameters = dict(model.named_parameters())  # the NaN step did not touch the weights (BatchNorm statistics of
    assert_identical({name: parameters[name].detach() for name in parameters},  # its forward are not rolled back)
                     {name: seen[-1][name] for name in parameters})
    saved = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert (saved["epoch"], saved["iteration"]) == (2, 1)
    assert_identical(saved["models"]["trunk"], seen[-1])
    for parameter in model.parameters():
        parameter.data.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="NaN"):
        trainer.save_checkpoint(str(tmp_path / "latest.pt"))
    assert_identical(torch.load(tmp_path / "latest.pt", weights_only=True)["models"]["trunk"], seen[-1])


def test_save_checkpoint_from_an_iteration_hook_resumes_at_the_next_iteration(tmp_path, uninterrupted):
    path = str(tmp_path / "manual.pt")

    def save_then_crash(trainer):
        if (trainer.epoch, trainer.iteration) == (2, 1):
            trainer.save_checkpoint(path)  # before the LR step of this iteration: none is configured here
            raise Crash

    with pytest.raises(Crash):
        fault_worker.run(str(tmp_path / "run"), end_of_iteration_hook=save_then_crash)
    resumed = fault_worker.run(str(tmp_path / "resumed"), resume=path)
    assert_identical(weights(resumed), uninterrupted[0])


class NaNAttackAfter(TrideLoss):
    """A TrideLoss whose attack objective is NaN from its ``bad_call``-th attack on (finite clean embeddings)."""

    def __init__(self, model, bad_call, **kwargs):
        super().__init__(model, **kwargs)
        self.calls, self.bad_call = 0, bad_call

    def _objective(self, *args):
        objective = super()._objective(*args)
        self.calls += 1
        if self.calls < self.bad_call:
            return objective
        return lambda adversarial: objective(adversarial) * float("nan")


def test_a_nan_attack_objective_stops_training_like_a_nan_loss(tmp_path):
    model, trainer = single_process_trainer(
        lambda model: NaNAttackAfter(model, bad_call=3, progressive_alpha=False, steps=2))
    with pytest.raises(TrainingDivergedError, match="adversarial attack's objective or input gradient") as caught:
        trainer.train(num_epochs=3)
    assert isinstance(caught.value.__context__, FloatingPointError)  # the engine's error, kept as the context
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())
