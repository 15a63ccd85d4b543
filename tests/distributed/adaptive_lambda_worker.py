"""One rank of the AdaptiveLambda process-group tests; prints its results as JSON after "RESULT ".

    python adaptive_lambda_worker.py updates BATCHES_JSON
    python adaptive_lambda_worker.py training

``updates``: two updates on this rank's own batches (BATCHES_JSON: per rank, a list of (d(a_i, p_i), d(a_i, n_i))
batches, empty lists for no triplets); prints the moving average of the gap and lambda after each.
``training``: three steps of TrideLoss(lam="auto") on a DistributedDataParallel tiny CNN, each rank on its own
images, rank 1 without triplets in the second step; prints lambda, the gap and the batch count after each step.
"""

import json
import os
import sys

import torch
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pml_tride import TrideLoss  # noqa: E402
from pml_tride.adaptive_lambda import AdaptiveLambda  # noqa: E402
from pml_tride.distributed import get_rank, init_from_environment, leave_process_group  # noqa: E402

from tiny_models import tiny_cnn  # noqa: E402

TRIPLETS = (torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5]), torch.tensor([2, 4, 0]))
NO_TRIPLETS = (torch.zeros(0, dtype=torch.long),) * 3
STEPS = 3


def updates(batches):
    adaptive = AdaptiveLambda(momentum=0.5)
    rows = []
    for ap_dists, an_dists in batches[get_rank()]:
        lam = adaptive.update(torch.tensor(ap_dists, dtype=torch.float64), torch.tensor(an_dists, dtype=torch.float64))
        rows.append([adaptive.gap, lam])
    return rows


def training():
    torch.manual_seed(0)
    model = DistributedDataParallel(tiny_cnn())
    loss_func = TrideLoss(model, lam="auto", eps=0.2, alpha=0.1, steps=2, progressive_alpha=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(get_rank())
    rows = []
    for step in range(STEPS):
        images = torch.rand(6, 1, 6, 6, generator=generator)
        triplets = NO_TRIPLETS if get_rank() == 1 and step == 1 else TRIPLETS
        loss = loss_func(model(images), torch.tensor([0, 0, 1, 1, 2, 2]), triplets, inputs=images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        adaptive = loss_func.adaptive_lambda
        rows.append([loss_func.lam, adaptive.gap, adaptive.batches])
    return rows


if __name__ == "__main__":
    init_from_environment(torch.device("cpu"))
    result = updates(json.loads(sys.argv[2])) if sys.argv[1] == "updates" else training()
    print("RESULT " + json.dumps(result))
    leave_process_group()
