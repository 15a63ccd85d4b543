"""One rank of the SyncBatchNorm test on CPU (gloo): what torch does with SyncBatchNorm there, and what
TrideTrainer(sync_batchnorm=True) says.

    python sync_batchnorm_worker.py OUT

writes OUT/torch_rank<r>.txt (torch's error for a SyncBatchNorm forward in train mode on CPU) and
OUT/trainer_rank<r>.txt (the trainer's error).
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pml_tride import TrideLoss, TrideTrainer  # noqa: E402
from pml_tride.distributed import convert_sync_batchnorm, get_rank, init_from_environment, leave_process_group  # noqa: E402

from tiny_models import tiny_cnn  # noqa: E402


def error_of(function):
    try:
        function()
    except ValueError as error:
        return str(error)
    return "no error"


if __name__ == "__main__":
    torch.set_num_threads(1)
    init_from_environment(torch.device("cpu"))
    out, rank = sys.argv[1], get_rank()
    converted = convert_sync_batchnorm(tiny_cnn())
    with open(os.path.join(out, f"torch_rank{rank}.txt"), "w") as handle:
        handle.write(error_of(lambda: converted(torch.rand(4, 1, 6, 6))))
    model = tiny_cnn()
    data = torch.utils.data.TensorDataset(torch.rand(8, 1, 6, 6), torch.arange(4).repeat(2))

    def build():
        TrideTrainer(models={"trunk": model}, optimizers={"trunk_optimizer": torch.optim.SGD(model.parameters(), 0.1)},
                     batch_size=4, loss_funcs={"metric_loss": TrideLoss(model)}, dataset=data, seed=0,
                     data_device=torch.device("cpu"), sync_batchnorm=True)

    with open(os.path.join(out, f"trainer_rank{rank}.txt"), "w") as handle:
        handle.write(error_of(build))
    leave_process_group()
