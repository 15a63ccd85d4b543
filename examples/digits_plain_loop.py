"""The two-line swap: CA-TRIDE in a plain pytorch-metric-learning loop, on real handwritten digits.

Trains a small CNN on sklearn's digits 0-4 (bundled with scikit-learn, no download) with PML's
TripletMarginMiner, replacing ``losses.TripletMarginLoss(margin=0.2)`` by ``TrideLoss(model)``, and prints
the loss, the collapseness C of the clean and adversarial triplets (Eq. 5) and the CAP/ANP phase per epoch.

    python examples/digits_plain_loop.py --epochs 5
"""

from __future__ import annotations

import argparse

import torch
from pytorch_metric_learning import miners
from torch.utils.data import DataLoader

from pml_tride import TrideLoss
from pml_tride.datasets import Digits
from pml_tride.models import small_cnn_embedder


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--eps", type=float, default=16 / 255, help="digits need more than the paper's 8/255")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    loader = DataLoader(Digits("train", image_size=args.image_size), batch_size=args.batch_size, shuffle=True,
                        drop_last=True)
    model = small_cnn_embedder(embedding_dim=32, width=16)  # images in [0, 1]; normalisation inside the model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    miner = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    # loss_func = losses.TripletMarginLoss(margin=0.2)       # before
    loss_func = TrideLoss(model, eps=args.eps, alpha=args.eps / 4, steps=args.steps, collect_stats=True)  # after

    for epoch in range(args.epochs):
        loss_func.set_epoch(epoch, args.epochs)  # progressive PGD step size (Appendix C)
        totals = {"loss": 0.0, "C clean": 0.0, "C adv": 0.0}
        for images, labels in loader:
            embeddings = model(images)
            loss = loss_func(embeddings, labels, miner(embeddings, labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            totals["loss"] += loss.item()
            totals["C clean"] += loss_func.collapseness_clean
            totals["C adv"] += loss_func.collapseness_adv
        means = {name: value / len(loader) for name, value in totals.items()}
        summary = "  ".join(f"{name} {value:+.4f}" for name, value in means.items())
        print(f"epoch {epoch + 1}/{args.epochs}  {summary}  (last phase: {loss_func.last_phase})")
    return means


if __name__ == "__main__":
    main()
