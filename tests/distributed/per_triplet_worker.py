"""One rank of the per-triplet DDP test: each run of per_triplet_reference.RUNS (a defense with perturb="per_triplet"
on a BatchNorm CNN in DistributedDataParallel), a dense miner, ranks with very different triplet counts (one with
none).

    python per_triplet_worker.py OUT

writes OUT/<run>_rank<r>.pt: the parameters after the first step and at the end, and the number of images
perturbed at every step.
"""

import os
import sys

import torch
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from per_triplet_reference import LOSSES, REMINE_RUNS, RUNS, STEPS, batch, build_model, miner  # noqa: E402

from pml_tride.distributed import get_rank, init_from_environment, leave_process_group  # noqa: E402


def train(out, run):
    rank = get_rank()
    name, ddp_options = RUNS.get(run, (run, {}))
    model = build_model()
    wrapped = DistributedDataParallel(model, **ddp_options)
    loss_func, mine = {**LOSSES, **REMINE_RUNS}[name](wrapped), miner()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    first, perturbed = None, []
    for step in range(STEPS):
        images, labels = batch(step, rank)
        embeddings = wrapped(images)
        loss_func.num_perturbed = 0
        loss = loss_func(embeddings, labels, mine(embeddings, labels), inputs=images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        perturbed.append(int(loss_func.num_perturbed))
        if first is None:
            first = {key: p.detach().clone() for key, p in model.named_parameters()}
    final = {key: p.detach().clone() for key, p in model.named_parameters()}
    torch.save({"first": first, "final": final, "perturbed": perturbed}, os.path.join(out, f"{run}_rank{rank}.pt"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    init_from_environment(torch.device("cpu"))
    for run_name in [*RUNS, *REMINE_RUNS]:
        train(sys.argv[1], run_name)
    leave_process_group()
