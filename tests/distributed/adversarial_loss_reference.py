"""What the AdversarialLoss DDP test's ranks and its single-process reference share: model, loss, batches, tuples."""

import os
import sys

import torch
from pytorch_metric_learning import losses
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pml_tride import AdversarialLoss  # noqa: E402

from tiny_models import tiny_cnn  # noqa: E402

RANK_BATCH = 8
STEPS = 3
ATTACK_STEPS = 3
SEED = 0


def build_model():
    torch.manual_seed(SEED)
    return tiny_cnn()


def build_loss(model, awareness, loss_class=AdversarialLoss):
    return loss_class(losses.ContrastiveLoss(), model, eps=0.1, alpha=0.03, steps=ATTACK_STEPS, progressive_alpha=False,
                      awareness=awareness, collect_stats=True)


def batch(step, ranks=2):
    """The global batch of a step: ``ranks * RANK_BATCH`` images of 4 classes; rank r takes the r-th block."""
    generator = torch.Generator().manual_seed(200 + step)
    images = torch.rand(ranks * RANK_BATCH, 1, 6, 6, generator=generator)
    labels = torch.arange(4).repeat(ranks * RANK_BATCH // 4)
    return images, labels


def rank_tuples(step, rank, labels):
    """Unequal tuple counts: rank 0 one positive and two negative pairs; rank 1 none at step 0, all pairs (None) at
    step 1, then the first three triplets of the batch."""
    if rank == 0:
        return torch.tensor([0]), torch.tensor([4]), torch.tensor([0, 1]), torch.tensor([1, 2])
    if step == 0:
        return (torch.tensor([], dtype=torch.long),) * 4
    if step == 1:
        return None
    return tuple(index[:3] for index in lmu.get_all_triplets_indices(labels))
