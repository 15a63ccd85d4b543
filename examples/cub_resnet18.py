"""The paper's CUB-200-2011 experiment (CA-TRIDE, ICML 2024, Section 4.1) as a PML user would write it.

ResNet-18 with a 512-d embedding head, batches of 112 (56 classes x 2 images, PML's MPerClassSampler), margin 0.2,
TrideMiner (semi-hard band of Eq. 32), TrideLoss (PGD 16 steps at 8/255, alpha 1/255 progressive, lambda 10),
TrideTrainer, then the robustness evaluation (ten attacks, ERS, ARS).

Two hyper-parameter sets:
  --recipe paper      the paper's Section 4.1: Adam, lr 1e-3, no weight decay, 100 epochs (the default)
  --recipe reference  the released code's configs: Adam, lr 1e-5, weight decay 4e-4, 75 (pair-)epochs

    python examples/cub_resnet18.py --data-root /data/CUB_200_2011 --device cuda
    python examples/cub_resnet18.py --data-root /data/CUB_200_2011 --weights /path/resnet18-f37072fd.pth
"""

from __future__ import annotations

import argparse
import os

import torch
from pytorch_metric_learning import samplers

from pml_tride import TrideLoss, TrideMiner, TrideTrainer
from pml_tride.datasets import CUB200
from pml_tride.evaluation import RobustnessEvaluator
from pml_tride.models import resnet18_embedder

RECIPES = {
    "paper": {"lr": 1e-3, "weight_decay": 0.0, "epochs": 100},
    "reference": {"lr": 1e-5, "weight_decay": 4e-4, "epochs": 75},
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="the CUB_200_2011 folder")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="paper")
    parser.add_argument("--epochs", type=int, help="default: the recipe's")
    parser.add_argument("--lr", type=float, help="default: the recipe's")
    parser.add_argument("--weight-decay", type=float, help="default: the recipe's")
    parser.add_argument("--batch-size", type=int, default=112)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--max-iters", type=int, help="iterations per epoch (default: one pass over the data)")
    parser.add_argument("--lam", type=float, default=10.0, help="lambda of Eq. 7 (paper: 10 CUB, 9.5 Cars, 2 SOP)")
    parser.add_argument("--weights", default="imagenet",
                        help="'imagenet' (torchvision's download), a local resnet18 state-dict file, or 'none'")
    parser.add_argument("--eval-max-batches", type=int, help="attack only the first batches (a quick look)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="runs/cub_resnet18")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", help="a checkpoint of this run to continue from, e.g. OUT/latest.pt")
    parser.add_argument("--checkpoint-every", type=int, help="also write OUT/latest.pt every that many iterations")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    recipe = RECIPES[args.recipe]
    epochs = args.epochs or recipe["epochs"]
    lr = recipe["lr"] if args.lr is None else args.lr
    weight_decay = recipe["weight_decay"] if args.weight_decay is None else args.weight_decay
    torch.manual_seed(args.seed)
    device = torch.device(args.device)

    train_set = CUB200(args.data_root, split="train", image_size=args.image_size)
    test_set = CUB200(args.data_root, split="test", image_size=args.image_size)
    model = resnet18_embedder(embedding_dim=512, weights=None if args.weights == "none" else args.weights).to(device)

    loss_func = TrideLoss(model, margin=0.2, eps=8 / 255, alpha=1 / 255, steps=16, lam=args.lam)
    miner = TrideMiner(margin=0.2, seed=args.seed)
    sampler = samplers.MPerClassSampler(train_set.labels, m=2, batch_size=args.batch_size,
                                        length_before_new_iter=len(train_set))
    trainer = TrideTrainer(
        models={"trunk": model},
        optimizers={"trunk_optimizer": torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)},
        batch_size=args.batch_size,
        loss_funcs={"metric_loss": loss_func},
        mining_funcs={"tuple_miner": miner},
        dataset=train_set,
        sampler=sampler,
        iterations_per_epoch=args.max_iters,
        dataloader_num_workers=0 if device.type == "cpu" else 4,
        data_device=device,
        checkpoint_dir=args.out,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
    )
    start_epoch = trainer.load_checkpoint(args.resume) if args.resume else 1
    trainer.train(start_epoch=start_epoch, num_epochs=epochs)

    report = RobustnessEvaluator(device=device, max_batches=args.eval_max_batches).evaluate(model, test_set)
    print(report.to_markdown(title="CA-TRIDE (CUB)"))
    report.to_json(os.path.join(args.out, "report.json"))


if __name__ == "__main__":
    main()
