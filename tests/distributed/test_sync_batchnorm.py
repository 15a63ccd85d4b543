"""sync_batchnorm / --sync-bn: the conversion (checked on CPU, in one process, where SyncBatchNorm falls back to
BatchNorm), and the refusals where torch cannot run it: one process, or CPU (also in a 2-process gloo group)."""

import os

import pytest
import torch
from distributed_helpers import run_group

from pml_tride import TrideLoss, TrideTrainer
from pml_tride.cli import main
from pml_tride.distributed import convert_sync_batchnorm

from tiny_models import tiny_cnn

WORKER = os.path.join(os.path.dirname(__file__), "sync_batchnorm_worker.py")
TRAIN = ["train", "--dataset", "digits", "--image-size", "8", "--epochs", "1", "--max-iters", "1", "--sync-bn"]


def test_conversion_replaces_every_batchnorm_in_place_with_the_same_tensors():
    model = torch.nn.Sequential(tiny_cnn(), torch.nn.BatchNorm1d(8))
    images = torch.rand(6, 1, 6, 6)
    trained = model.train()(images)  # batch statistics; moves the running statistics away from their start
    evaluated = model.eval()(images)  # running statistics
    tensors = dict([*model.named_parameters(), *model.named_buffers()])
    assert convert_sync_batchnorm(model) is model
    norms = [type(layer) for layer in model.modules() if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms == [torch.nn.SyncBatchNorm] * 2
    after = dict([*model.named_parameters(), *model.named_buffers()])
    assert after.keys() == tensors.keys() and all(after[name] is tensors[name] for name in tensors)
    # no process group: SyncBatchNorm computes what BatchNorm computed
    assert torch.allclose(model.eval()(images), evaluated)
    assert torch.allclose(model.train()(images), trained)


def test_a_model_that_is_one_batchnorm_layer_is_refused():
    with pytest.raises(ValueError, match="itself a BatchNorm1d layer"):
        convert_sync_batchnorm(torch.nn.BatchNorm1d(4))


def test_the_trainer_refuses_sync_batchnorm_in_one_process():
    model = tiny_cnn()
    data = torch.utils.data.TensorDataset(torch.rand(8, 1, 6, 6), torch.arange(4).repeat(2))
    with pytest.raises(ValueError, match="this run has 1 process: drop it, or launch several"):
        TrideTrainer(models={"trunk": model}, optimizers={"trunk_optimizer": torch.optim.SGD(model.parameters(), 0.1)},
                     batch_size=4, loss_funcs={"metric_loss": TrideLoss(model)}, dataset=data, seed=0,
                     sync_batchnorm=True)
    assert not any(isinstance(layer, torch.nn.SyncBatchNorm) for layer in model.modules())


@pytest.mark.parametrize("arguments, message", [
    (["--nproc-per-node", "1", "--device", "cpu"], "this run has 1 process"),
    (["--nproc-per-node", "2", "--device", "cpu"], "needs GPUs"),
])
def test_the_cli_refuses_sync_bn_before_launching(tmp_path, capsys, arguments, message):
    assert main(TRAIN + arguments + ["--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "latest.pt").exists()


def test_two_gloo_processes_cannot_run_sync_batchnorm_and_the_trainer_says_so(tmp_path):
    run_group(WORKER, tmp_path)
    for rank in range(2):
        assert "SyncBatchNorm expected input tensor to be on GPU" in (tmp_path / f"torch_rank{rank}.txt").read_text()
        assert "needs GPUs" in (tmp_path / f"trainer_rank{rank}.txt").read_text()
