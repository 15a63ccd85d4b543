"""The reported failure, measured: TrideLoss(perturb="per_triplet") under a dense PML TripletMarginMiner.

112 random 28x28 grey images in 10 classes, the small CNN embedder in train mode, PML's
TripletMarginMiner(margin=0.2, type_of_triplets="semihard"). Before chunking, one call tried to allocate 32 GB inside
a convolution. Prints, per phase (CAP, then ANP): the triplet count, the perturbed images, the seconds, the images
the attack pushed forward/backward, and the peak memory (CUDA: max_memory_allocated; CPU: the process's max RSS).

    python benchmarks/per_triplet_memory.py --device cuda --steps 16
    python benchmarks/per_triplet_memory.py --device cpu --steps 1 --side 12 --width 8
    python benchmarks/per_triplet_memory.py --device cpu --steps 1 --side 12 --width 8 --attack-batch-size 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
from pytorch_metric_learning.miners import TripletMarginMiner

from pml_tride import TrideLoss
from pml_tride.models import small_cnn_embedder

BATCH, CLASSES = 112, 10


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--attack-batch-size", type=int, default=None, help="None: the batch size (112)")
    parser.add_argument("--side", type=int, default=28, help="image side in pixels")
    parser.add_argument("--width", type=int, default=32, help="SmallCNN width")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = small_cnn_embedder(in_channels=1, embedding_dim=64, width=args.width).to(device).train()
    images = torch.rand(BATCH, 1, args.side, args.side, device=device)
    labels = torch.arange(BATCH, device=device) % CLASSES
    loss_func = TrideLoss(model, steps=args.steps, perturb="per_triplet", progressive_alpha=False,
                          attack_batch_size=args.attack_batch_size, collect_stats=True)
    miner = TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    for _ in range(2):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        embeddings = model(images)
        indices = miner(embeddings, labels)
        loss = loss_func(embeddings, labels, indices)
        loss.backward()
        model.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        print(json.dumps({
            "device": str(device), "side": args.side, "width": args.width, "phase": loss_func.last_phase,
            "triplets": len(indices[0]),
            "perturbed_images": loss_func.num_perturbed, "pgd_steps": loss_func.pgd_steps,
            "attack_batch_size": args.attack_batch_size or BATCH, "seconds": round(time.perf_counter() - started, 2),
            "pgd_forward_images": loss_func.pgd_forward_images, "pgd_backward_images": loss_func.pgd_backward_images,
            "peak_gib": round(peak_bytes(device) / 2**30, 3), "loss": round(loss.item(), 5),
        }))


if __name__ == "__main__":
    main()
