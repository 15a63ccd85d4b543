"""A small TrideTrainer run for the fault-tolerance tests (in-process, or as a subprocess that a test kills).

    python tests/trainers/fault_worker.py OUT [--resume CHECKPOINT] [--pause SECONDS]

Prints ``done <epoch> <iteration>`` after every iteration, then sleeps ``--pause`` seconds (a window to be killed
in), checkpoints every iteration (``checkpoint_every=1``) and after every epoch.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
from pytorch_metric_learning import samplers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tiny_models import tiny_cnn  # noqa: E402

from pml_tride import TrideLoss, TrideMiner, TrideTrainer  # noqa: E402

EPOCHS = 3
SEED = 5


def dataset():
    generator = torch.Generator().manual_seed(1)
    return torch.utils.data.TensorDataset(torch.rand(48, 1, 6, 6, generator=generator), torch.arange(6).repeat(8))


def run(out, resume=None, pause=0.0, epochs=EPOCHS, end_of_iteration_hook=None):
    """Train (or resume) and return the trainer; the model is ``trainer.models["trunk"]``."""
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    model = tiny_cnn()
    data = dataset()

    def report(trainer):
        print(f"done {trainer.epoch} {trainer.iteration}", flush=True)
        if end_of_iteration_hook is not None:
            end_of_iteration_hook(trainer)
        time.sleep(pause)

    trainer = TrideTrainer(
        models={"trunk": model},
        optimizers={"trunk_optimizer": torch.optim.Adam(model.parameters(), lr=1e-2)},
        batch_size=12,
        loss_funcs={"metric_loss": TrideLoss(model, eps=0.1, alpha=0.02, steps=2)},
        mining_funcs={"tuple_miner": TrideMiner(margin=0.2, seed=SEED)},
        dataset=data,
        sampler=samplers.MPerClassSampler(data.tensors[1], m=2, batch_size=12, length_before_new_iter=48),
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        checkpoint_dir=out,
        checkpoint_every=1,
        end_of_iteration_hook=report,
        seed=SEED,
    )
    start = trainer.load_checkpoint(resume) if resume else 1
    trainer.train(start_epoch=start, num_epochs=epochs)
    return trainer


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--resume")
    parser.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args()
    run(args.out, resume=args.resume, pause=args.pause)
