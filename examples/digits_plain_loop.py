"""The two-line swap: CA-TRIDE in a plain pytorch-metric-learning loop, on real handwritten digits.

Trains a small CNN on sklearn's digits 0-4 (bundled with scikit-learn, no download) with PML's
TripletMarginMiner, replacing ``losses.TripletMarginLoss(margin=0.2)`` by ``TrideLoss(model)``, and prints
the loss, the collapseness C of the clean and adversarial triplets (Eq. 5) and the CAP/ANP phase per epoch.

    python examples/digits_plain_loop.py --epochs 5
"""

import argparse

import torch
import torch.nn.functional as F
from pytorch_metric_learning import miners
from sklearn.datasets import load_digits
from torch import nn

from pml_tride import TrideLoss


def digits(image_size: int, classes=(0, 1, 2, 3, 4)):
    data = load_digits()
    keep = torch.isin(torch.as_tensor(data.target), torch.tensor(classes))
    images = torch.as_tensor(data.images, dtype=torch.float32)[keep].unsqueeze(1) / 16.0
    images = F.interpolate(images, size=image_size, mode="bilinear", align_corners=False).clamp(0, 1)
    return images, torch.as_tensor(data.target)[keep]


def small_cnn(embedding_dim: int = 32) -> nn.Module:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(1, 16), *block(16, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, embedding_dim))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--eps", type=float, default=16 / 255)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    images, labels = digits(args.image_size)
    model = small_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    miner = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    # loss_func = losses.TripletMarginLoss(margin=0.2)       # before
    loss_func = TrideLoss(model, eps=args.eps, alpha=args.eps / 4, steps=8, collect_stats=True)  # after

    for epoch in range(args.epochs):
        loss_func.set_epoch(epoch, args.epochs)
        order = torch.randperm(len(images))
        totals = {"loss": 0.0, "C clean": 0.0, "C adv": 0.0}
        batches = 0
        for start in range(0, len(images) - args.batch_size + 1, args.batch_size):
            batch = order[start : start + args.batch_size]
            embeddings = model(images[batch])
            loss = loss_func(embeddings, labels[batch], miner(embeddings, labels[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            totals["loss"] += loss.item()
            totals["C clean"] += loss_func.collapseness_clean
            totals["C adv"] += loss_func.collapseness_adv
            batches += 1
        means = "  ".join(f"{name} {value / batches:+.4f}" for name, value in totals.items())
        print(f"epoch {epoch + 1}/{args.epochs}  {means}  (last phase: {loss_func.last_phase})")


if __name__ == "__main__":
    main()
