"""One rank of the DDP loss test: a BatchNorm CNN in DistributedDataParallel trained with TrideLoss and PML's
TripletMarginMiner for a few steps, each rank on its own half of a fixed batch.

    python ddp_loss_worker.py OUT

once per configuration of CONFIGURATIONS (awareness, find_unused_parameters, broadcast_buffers); writes
OUT/<configuration>_rank<r>.pt: the parameters after the first step and at the end, the PGD steps of every step.
"""

import os
import sys

import torch
from pytorch_metric_learning import miners
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ddp_reference import (  # noqa: E402
    CONFIGURATIONS,
    RANK_BATCH,
    STEPS,
    batch,
    build_loss,
    build_model,
)

from pml_tride.distributed import get_rank, init_from_environment  # noqa: E402


def train(out, awareness, find_unused, broadcast_buffers):
    rank = get_rank()
    model = build_model()
    wrapped = DistributedDataParallel(model, find_unused_parameters=find_unused, broadcast_buffers=broadcast_buffers)
    loss_func = build_loss(wrapped, awareness)
    miner = miners.TripletMarginMiner(margin=0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    first, pgd_steps = None, []
    for step in range(STEPS):
        images, labels = batch(step)
        rows = slice(rank * RANK_BATCH, (rank + 1) * RANK_BATCH)
        images, labels = images[rows], labels[rows]
        embeddings = wrapped(images)
        loss = loss_func(embeddings, labels, miner(embeddings, labels), inputs=images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pgd_steps.append(loss_func.pgd_steps)
        assert wrapped.training and all(p.requires_grad for p in model.parameters())  # restored after the attack
        if first is None:
            first = {name: p.detach().clone() for name, p in model.named_parameters()}
    final = {name: p.detach().clone() for name, p in model.named_parameters()}
    name = f"{awareness}_{int(find_unused)}_{int(broadcast_buffers)}_rank{rank}.pt"
    torch.save({"first": first, "final": final, "pgd_steps": pgd_steps}, os.path.join(out, name))


if __name__ == "__main__":
    torch.set_num_threads(1)
    init_from_environment(torch.device("cpu"))
    for configuration in CONFIGURATIONS:
        train(sys.argv[1], *configuration)
    torch.distributed.destroy_process_group()
