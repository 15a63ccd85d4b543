"""One rank of the AdversarialLoss DDP test: a BatchNorm CNN in DistributedDataParallel trained with
AdversarialLoss(ContrastiveLoss()) for a few steps, each rank on its own half of a fixed batch, with unequal tuple
counts (rank 1 has no tuple at the first step, all pairs at the second).

    python adversarial_loss_worker.py OUT AWARENESS

writes OUT/<awareness>_rank<r>.pt: the parameters after the first step and at the end, the PGD steps of every step.
"""

import os
import sys

import torch
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from adversarial_loss_reference import RANK_BATCH, STEPS, batch, build_loss, build_model, rank_tuples  # noqa: E402

from pml_tride.distributed import get_rank, init_from_environment, leave_process_group  # noqa: E402


def train(out, awareness):
    rank = get_rank()
    model = build_model()
    wrapped = DistributedDataParallel(model)
    loss_func = build_loss(wrapped, awareness)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    first, pgd_steps = None, []
    for step in range(STEPS):
        images, labels = batch(step)
        rows = slice(rank * RANK_BATCH, (rank + 1) * RANK_BATCH)
        images, labels = images[rows], labels[rows]
        embeddings = wrapped(images)
        loss = loss_func(embeddings, labels, rank_tuples(step, rank, labels), inputs=images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pgd_steps.append(loss_func.pgd_steps)
        assert wrapped.training and all(p.requires_grad for p in model.parameters())
        if first is None:
            first = {name: p.detach().clone() for name, p in model.named_parameters()}
    final = {name: p.detach().clone() for name, p in model.named_parameters()}
    torch.save({"first": first, "final": final, "pgd_steps": pgd_steps},
               os.path.join(out, f"{awareness}_rank{rank}.pt"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    init_from_environment(torch.device("cpu"))
    train(sys.argv[1], sys.argv[2])
    leave_process_group()
