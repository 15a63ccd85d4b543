"""The one-line swap for any PML loss: a loss trained plain and wrapped in AdversarialLoss, on real digits.

Trains a small CNN on sklearn's digits 0-4 (train split, no download) with a PML loss and its miner, once plain
and once as ``AdversarialLoss(loss, model)``, then reports, on the test split (digits 5-9), the benign R@1 and the
ERS of the ten ranking attacks (a quick evaluation: ``--eval-queries`` images attacked with ``--eval-steps`` steps).

    python examples/digits_any_loss.py --loss multi-similarity --epochs 4
    python examples/digits_any_loss.py --loss contrastive --epochs 4 --awareness collapse
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable, Dict, Tuple

import torch
from pytorch_metric_learning import losses, miners
from torch.utils.data import DataLoader

from pml_tride import AdversarialLoss
from pml_tride.datasets import Digits
from pml_tride.evaluation import RobustnessEvaluator
from pml_tride.models import small_cnn_embedder

# The PML loss and the miner of each choice, as a plain PML pipeline would pair them.
LOSSES: Dict[str, Tuple[Callable[[], Any], Callable[[], Any]]] = {
    "multi-similarity": (losses.MultiSimilarityLoss, miners.MultiSimilarityMiner),
    "contrastive": (losses.ContrastiveLoss, lambda: miners.PairMarginMiner(pos_margin=0.0, neg_margin=1.0)),
    "triplet": (lambda: losses.TripletMarginLoss(margin=0.2),
                lambda: miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")),
}
EMBEDDING_DIM, WIDTH = 32, 16


def train(args: argparse.Namespace, adversarial: bool) -> Tuple[torch.nn.Module, float]:
    torch.manual_seed(args.seed)
    loader = DataLoader(Digits("train", image_size=args.image_size), batch_size=args.batch_size, shuffle=True,
                        drop_last=True)
    model = small_cnn_embedder(embedding_dim=EMBEDDING_DIM, width=WIDTH)
    build_loss, build_miner = LOSSES[args.loss]
    miner = build_miner()
    loss_func = build_loss()  # before
    if adversarial:  # after: the one-line change
        loss_func = AdversarialLoss(loss_func, model, eps=args.eps, alpha=args.eps / 4, steps=args.steps,
                                    awareness=args.awareness)
    optimizer = torch.optim.Adam([*model.parameters(), *loss_func.parameters()], lr=1e-3)
    started = time.perf_counter()
    for epoch in range(args.epochs):
        if adversarial:
            loss_func.set_epoch(epoch, args.epochs)  # progressive PGD step size (Appendix C)
        for images, labels in loader:
            embeddings = model(images)
            loss = loss_func(embeddings, labels, miner(embeddings, labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model, time.perf_counter() - started


def main(argv=None) -> Dict[str, Dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", choices=sorted(LOSSES), default="multi-similarity")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--eps", type=float, default=16 / 255, help="digits need more than the paper's 8/255")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--awareness", choices=("none", "collapse"), default="none")
    parser.add_argument("--eval-queries", type=int, default=200)
    parser.add_argument("--eval-steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    evaluator = RobustnessEvaluator(eps=args.eps, alpha=args.eps / 4, steps=args.eval_steps, progress=False,
                                    use_faiss=False, queries=args.eval_queries, seed=args.seed)
    test_set = Digits("test", image_size=args.image_size)
    results = {}
    for adversarial in (False, True):
        model, seconds = train(args, adversarial)
        report = evaluator.evaluate(model, test_set)
        name = f"{'AdversarialLoss' if adversarial else 'plain'} {args.loss}"
        results[name] = {"R@1": report.benign["R@1"], "ERS": report.ers, "train_seconds": round(seconds, 1)}
        print(name, json.dumps(results[name]))
    return results


if __name__ == "__main__":
    main()
