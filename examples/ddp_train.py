"""CA-TRIDE with DistributedDataParallel: the same TrideTrainer code on one process or many, launched by torchrun.

Every rank trains on its own SPC batch of ``--batch-size`` images (PML's MPerClassSampler, dealt to the ranks by
the trainer's batch plan), attacks it on the unwrapped model, and DDP averages the gradients once per step. Rank 0
writes ``latest.pt`` every ``--checkpoint-every`` iterations and after every epoch; a restarted run continues from
it (torchrun ``--max-restarts``), with the batches and random state of an uninterrupted run.

    python examples/ddp_train.py --epochs 5                                   # one process
    torchrun --nproc-per-node 2 examples/ddp_train.py --epochs 5 --device cpu  # two CPU processes (gloo)
    torchrun --nproc-per-node 8 --max-restarts 3 examples/ddp_train.py --device cuda   # 8 GPUs (NCCL)
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from pytorch_metric_learning import samplers

from pml_tride import TrideLoss, TrideMiner, TrideTrainer
from pml_tride.datasets import Digits
from pml_tride.distributed import get_rank, get_world_size, init_from_environment, leave_process_group, wrap_model
from pml_tride.models import save_model, small_cnn_embedder


def main(argv=None) -> torch.nn.Module:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=40, help="images per process and step")
    parser.add_argument("--max-iters", type=int, help="iterations per epoch (default: one pass over the data)")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--eps", type=float, default=16 / 255)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--device", default=None, help="default: cuda when available (one GPU per process)")
    parser.add_argument("--out", default="runs/ddp_train")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = init_from_environment(torch.device(args.device) if args.device else None)
    torch.manual_seed(args.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    np.random.seed(args.seed)
    train_set = Digits("train", image_size=args.image_size)
    model = small_cnn_embedder(embedding_dim=32, width=16).to(device)
    wrapped = wrap_model(model, device)  # DistributedDataParallel under torchrun, the model itself otherwise
    images_per_class = max(2, args.batch_size // train_set.classes)
    trainer = TrideTrainer(
        models={"trunk": wrapped},
        optimizers={"trunk_optimizer": torch.optim.Adam(model.parameters(), lr=1e-3)},
        batch_size=args.batch_size,
        loss_funcs={"metric_loss": TrideLoss(wrapped, eps=args.eps, alpha=args.eps / 4, steps=args.steps)},
        mining_funcs={"tuple_miner": TrideMiner(margin=0.2, seed=args.seed)},
        dataset=train_set,
        sampler=samplers.MPerClassSampler(train_set.labels, m=images_per_class, batch_size=args.batch_size,
                                          length_before_new_iter=len(train_set)),
        iterations_per_epoch=args.max_iters,
        dataloader_num_workers=0,
        data_device=device,
        checkpoint_dir=args.out,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
    )
    latest = os.path.join(args.out, "latest.pt")
    start = trainer.load_checkpoint(latest) if os.path.isfile(latest) else 1
    trainer.train(start_epoch=start, num_epochs=args.epochs)
    if get_rank() == 0:
        save_model(model, os.path.join(args.out, "model.pt"), data={"dataset": "digits", "image_size": args.image_size})
        print(f"{get_world_size()} process(es) x {args.batch_size} images per step; model: {args.out}/model.pt")
    leave_process_group()
    return model


if __name__ == "__main__":
    main()
