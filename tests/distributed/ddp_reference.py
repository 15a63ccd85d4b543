"""What the DDP loss test's ranks and its single-process reference share: model, loss, batches."""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tiny_models import tiny_cnn  # noqa: E402

from pml_tride import TrideLoss  # noqa: E402

RANK_BATCH = 12
STEPS = 4
SEED = 0
# (awareness, find_unused_parameters, broadcast_buffers): the collapse-aware stop with both reducer modes and
# buffer broadcasting on (the configurations that hung before the attack ran on the unwrapped module), and a
# naive adversary without buffer broadcasting.
CONFIGURATIONS = (("collapse", False, True), ("collapse", True, True), ("none", False, False))


def build_model():
    torch.manual_seed(SEED)
    return tiny_cnn()


def build_loss(model, awareness, loss_class=TrideLoss):
    loss = loss_class(model, eps=0.1, alpha=0.03, steps=4, progressive_alpha=False, awareness=awareness,
                      collect_stats=True)
    return loss


def batch(step, ranks=2):
    """The global batch of a step: ``ranks * RANK_BATCH`` images of 6 classes; rank r takes the r-th block. In the
    last step the last rank's images all have one label: it mines no triplet while the others do."""
    generator = torch.Generator().manual_seed(100 + step)
    images = torch.rand(ranks * RANK_BATCH, 1, 6, 6, generator=generator)
    labels = torch.arange(6).repeat(ranks * RANK_BATCH // 6)
    if step == STEPS - 1:
        labels[-RANK_BATCH:] = 0
    return images, labels
