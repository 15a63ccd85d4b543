"""What the per-triplet DDP test's ranks and its single-process reference share: the four defenses that offer
``perturb="per_triplet"``, a dense miner, and batches whose ranks mine very different numbers of triplets."""

import os
import sys

import torch
from pytorch_metric_learning import miners

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pml_tride import ACTLoss, ESTLoss, HMLoss, TrideLoss  # noqa: E402

from tiny_models import tiny_cnn  # noqa: E402

RANK_BATCH = 12
SEED = 0
# Default chunk size: AdversarialTripletLoss.DEFAULT_CHUNK_BATCHES caller's batches.
CHUNK_IMAGES = 4 * RANK_BATCH
LOSSES = {
    "TrideLoss": lambda model: TrideLoss(model, awareness="none", progressive_alpha=False, **ATTACK),
    "ESTLoss": lambda model: ESTLoss(model, **ATTACK),
    "ACTLoss": lambda model: ACTLoss(model, **ATTACK),
    "HMLoss": lambda model: HMLoss(model, **ATTACK),
}
# Runs of the worker: name -> (defense, DistributedDataParallel options); default DDP options for every defense,
# and TrideLoss with find_unused_parameters (the reducer searches the graph at every forward, recomputations too).
RUNS = {**{name: (name, {}) for name in LOSSES},
        "TrideLoss-find_unused": ("TrideLoss", {"find_unused_parameters": True})}
ATTACK = {"eps": 0.1, "alpha": 0.03, "steps": 2, "perturb": "per_triplet", "collect_stats": True}
# ESTLoss re-mining the adversarial batch (every image perturbed once) in chunks of 4 images: a rank whose re-mined
# batch has no triplet must still back-propagate through its chunked training forward like the others.
REMINE_RUNS = {"ESTLoss-remine": lambda model: ESTLoss(model, miner=miner(), eps=0.1, alpha=0.03, steps=2,
                                                       attack_batch_size=4)}
# Labels of each rank's 12 images per step: 6 pairs (120 triplets of TripletMarginMiner(type_of_triplets="all"),
# many chunks), one pair among singletons (20 triplets, one or two chunks), all singletons (no triplet).
PAIRS = torch.arange(6).repeat(2)
ONE_PAIR = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
SINGLETONS = torch.arange(RANK_BATCH)
LABELS = ((PAIRS, ONE_PAIR), (PAIRS, SINGLETONS), (ONE_PAIR, PAIRS))
STEPS = len(LABELS)


def build_model():
    torch.manual_seed(SEED)
    return tiny_cnn()


def miner():
    return miners.TripletMarginMiner(margin=0.2, type_of_triplets="all")


def batch(step, rank):
    """Rank ``rank``'s images and labels at ``step``."""
    generator = torch.Generator().manual_seed(1000 * step + rank)
    return torch.rand(RANK_BATCH, 1, 6, 6, generator=generator), LABELS[step][rank]
