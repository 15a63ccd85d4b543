"""Cost of CA-TRIDE against HM as users run them: whole trainings from scratch, measured in one run.

Each defense trains its own copy of the same model (same initial weights) on the same SPC-2 batches for the same
epochs, with its recipe's loss and miner (``pml_tride.recipes``); the epochs of the defenses are interleaved (epoch
e of every defense before epoch e + 1 of any), so machine noise hits all of them alike. By default the schedules
(progressive alpha, the miner's band, HM's gradual destination through its previous loss) see a real run of
``--epochs`` epochs from scratch: how early each defense's attack stops depends on how far training has gone (HM's
saturation stop fires at once on a barely trained model, whose loss keeps its destination at the semi-hard
boundary), so only a whole training measures the cost users pay. ``--schedule-epochs S`` instead presents the
measured epochs as epochs spread over an S-epoch run (the first version of this benchmark: 3 epochs as 25, 50, 75
of 100, on a barely trained model).

* **CA-TRIDE**: 16 steps, collapse-aware early stop, unique images (the package's default);
* **HM (robrank)**: 32 steps, robrank's per-triplet copies of A, P and N (``perturb="per_triplet"``);
* **HM (unique)**: pml-tride's HM with unique images.

It prints the per-epoch times, the ratio of the total times (CA-TRIDE / HM; goal <= 0.35, the paper: 470 / 550 =
0.85), the PGD image-passes of each (images pushed through the model by the attack, forward and backward;
counted by the engine) and the steps per attack in every epoch.

    python benchmarks/defense_cost.py            # Digits at 16x16, small CNN, batches of 112, 8 epochs from scratch
    python benchmarks/defense_cost.py --quick    # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from bench_common import AttackRecorder, markdown_table, write_json

from pml_tride import recipes
from pml_tride.datasets import Digits
from pml_tride.models import small_cnn_embedder

# name -> (recipe defense, loss overrides)
CONFIGS = {
    "CA-TRIDE": ("ca-tride", {"steps": 16}),
    "HM (robrank)": ("hm", {"steps": 32, "perturb": "per_triplet"}),
    "HM (unique)": ("hm", {"steps": 32, "perturb": "unique"}),
}
REFERENCE = "HM (robrank)"
LEARNING_RATE = 1e-3
PAPER_RATIO = 470 / 550


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="epochs trained from scratch (the study's 8)")
    parser.add_argument("--pairs", type=int, default=56, help="SPC-2 pairs per batch (112 images, as the paper)")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--max-batches", type=int, default=None, help="batches per epoch (default: the whole set)")
    parser.add_argument("--schedule-epochs", type=int, default=None,
                        help="default: a real run of --epochs epochs. S: present measured epoch i of E as epoch "
                             "(i + 1) * S // (E + 1) of S to the schedules (progressive alpha, miner band)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 epochs of 2 batches of 16 images of 16x16")
    parser.add_argument("--out", default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.pairs, args.image_size, args.max_batches = 2, 8, 16, 2
    return args


def scheduled_epoch(epoch: int, epochs: int, schedule_epochs: Optional[int]) -> Tuple[int, int]:
    """(epoch, total) as the schedules see measured epoch ``epoch`` of ``epochs``."""
    if schedule_epochs is None:
        return epoch, epochs
    return (epoch + 1) * schedule_epochs // (epochs + 1), schedule_epochs


def spc2_batches(labels: torch.Tensor, pairs: int, generator: torch.Generator) -> List[torch.Tensor]:
    """One epoch of SPC-2 batches (rows 2i and 2i+1 share a class): each class's images shuffled and paired, the
    pairs shuffled and cut into batches of ``pairs`` pairs (an incomplete last batch is dropped)."""
    pair_rows = []
    for label in torch.unique(labels):
        members = torch.nonzero(labels == label).squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        pair_rows.append(members[: len(members) // 2 * 2].view(-1, 2))
    pair_rows = torch.cat(pair_rows)
    pair_rows = pair_rows[torch.randperm(len(pair_rows), generator=generator)]
    return [pair_rows[start:start + pairs].reshape(-1) for start in range(0, len(pair_rows) - pairs + 1, pairs)]


def build_defense(name: str, model: torch.nn.Module, seed: int):
    defense, overrides = CONFIGS[name]
    if defense not in recipes.DEFENSES:
        return None
    loss = recipes.defense_loss(defense, model, **overrides)
    if hasattr(recipes, "defense_miner"):
        miner = recipes.defense_miner(defense, seed=seed)
    else:
        from pml_tride import TrideMiner

        miner = TrideMiner(seed=seed)
    return loss, miner


class Run:
    """One defense's model, optimizer, loss and miner, and what its epochs cost."""

    def __init__(self, name: str, model: torch.nn.Module, seed: int) -> None:
        self.name = name
        self.model = copy.deepcopy(model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LEARNING_RATE)
        built = build_defense(name, self.model, seed)
        self.available = built is not None
        if self.available:
            self.loss, self.miner = built
            self.recorder = AttackRecorder(self.loss)
        self.epoch_seconds: List[float] = []
        self.epoch_counts: List[Dict[str, int]] = []

    def epoch(self, epoch: int, epochs: int, images: torch.Tensor, labels: torch.Tensor,
              batches: List[torch.Tensor]) -> None:
        for part in (self.loss, self.miner):
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch, epochs)
        started = time.perf_counter()
        for rows in batches:
            batch, batch_labels = images[rows], labels[rows]
            self.optimizer.zero_grad(set_to_none=True)
            embeddings = self.model(batch)
            triplets = self.miner(embeddings, batch_labels)
            self.loss(embeddings, batch_labels, triplets).backward()
            self.optimizer.step()
        self.epoch_seconds.append(time.perf_counter() - started)
        records = self.recorder.take()
        self.epoch_counts.append({
            "attacks": len(records),
            "perturbed_images": sum(record.images for record in records),
            "steps": sum(record.steps for record in records),
            "forward_images": sum(record.forward_images for record in records),
            "backward_images": sum(record.backward_images for record in records),
        })

    def summary(self) -> Dict[str, Any]:
        if not self.available:
            return {"available": False}
        totals = {key: sum(counts[key] for counts in self.epoch_counts) for key in self.epoch_counts[0]}
        return {"available": True, "epoch_seconds": self.epoch_seconds, "total_seconds": sum(self.epoch_seconds),
                "epoch_counts": self.epoch_counts, "totals": totals}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    dataset = Digits("train", image_size=args.image_size)
    images, labels = dataset.images, dataset.labels
    torch.manual_seed(args.seed)
    model = small_cnn_embedder(in_channels=1, embedding_dim=64)
    runs = [Run(name, model, args.seed) for name in CONFIGS]
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        batches = spc2_batches(labels, args.pairs, generator)[: args.max_batches]
        scheduled, total = scheduled_epoch(epoch, args.epochs, args.schedule_epochs)
        for run in runs:
            if run.available:
                run.epoch(scheduled, total, images, labels, batches)
    results = {run.name: run.summary() for run in runs}
    schedule = ("a run from scratch" if args.schedule_epochs is None
                else f"schedules spread over {args.schedule_epochs} epochs")
    print(f"defense_cost.py: Digits train ({len(labels)} images, {args.image_size}x{args.image_size}), small CNN, "
          f"SPC-2 batches of {2 * args.pairs}, {args.epochs} epochs of {len(batches)} batches ({schedule}), torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, CPU\n")
    rows = []
    for name, result in results.items():
        if not result["available"]:
            rows.append([name, "not available (no such recipe yet)", "", "", "", "", ""])
            continue
        totals, attacks = result["totals"], max(result["totals"]["attacks"], 1)
        rows.append([name, " / ".join(f"{seconds:.1f}" for seconds in result["epoch_seconds"]),
                     f"{result['total_seconds']:.1f}", f"{totals['perturbed_images'] / attacks:.1f}",
                     f"{totals['steps'] / attacks:.1f}", totals["forward_images"], totals["backward_images"]])
    print(markdown_table(("defense", "epoch seconds", "total seconds", "perturbed images per attack",
                          "steps per attack", "PGD forward image-passes", "PGD backward image-passes"), rows))
    print("\nsteps per attack, epoch by epoch (an epoch without attacks: -):")
    print(markdown_table(("defense", *(f"epoch {epoch}" for epoch in range(args.epochs))), [
        [name, *(f"{counts['steps'] / counts['attacks']:.1f}" if counts["attacks"] else "-"
                 for counts in result["epoch_counts"])]
        for name, result in results.items() if result["available"]]))
    reference = results[REFERENCE]
    ratios = {}
    for name in ("CA-TRIDE", "HM (unique)"):
        if results[name]["available"] and reference["available"]:
            ratios[f"{name} / {REFERENCE}"] = results[name]["total_seconds"] / reference["total_seconds"]
            passes = (results[name]["totals"]["forward_images"] + results[name]["totals"]["backward_images"]) / max(
                reference["totals"]["forward_images"] + reference["totals"]["backward_images"], 1)
            ratios[f"{name} / {REFERENCE} (PGD image-passes)"] = passes
    if results["CA-TRIDE"]["available"] and results["HM (unique)"]["available"]:
        unique = results["HM (unique)"]["total_seconds"]
        ratios["CA-TRIDE / HM (unique)"] = results["CA-TRIDE"]["total_seconds"] / unique
    print()
    if not ratios:
        print("HM: not available (no 'hm' recipe in pml_tride.recipes.DEFENSES)")
    for name, value in ratios.items():
        goal = " (goal <= 0.35; the paper: 0.85)" if name == f"CA-TRIDE / {REFERENCE}" else ""
        print(f"{name}: {value:.3f}{goal}")
    if args.out:
        write_json(args.out, {"config": vars(args), "results": results, "ratios": ratios, "paper_ratio": PAPER_RATIO},
                   torch.device("cpu"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
