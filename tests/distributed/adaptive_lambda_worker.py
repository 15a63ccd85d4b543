"""One rank of the AdaptiveLambda process-group test: two updates on this rank's own batches; prints the
moving average of the gap and lambda after each as JSON.

    python adaptive_lambda_worker.py BATCHES_JSON

BATCHES_JSON: per rank, a list of (d(a_i, p_i), d(a_i, n_i)) batches (empty lists: no triplets).
"""

import json
import sys

import torch

from pml_tride.adaptive_lambda import AdaptiveLambda
from pml_tride.distributed import get_rank, init_from_environment

if __name__ == "__main__":
    init_from_environment(torch.device("cpu"))
    adaptive = AdaptiveLambda(momentum=0.5)
    rows = []
    for ap_dists, an_dists in json.loads(sys.argv[1])[get_rank()]:
        lam = adaptive.update(torch.tensor(ap_dists, dtype=torch.float64), torch.tensor(an_dists, dtype=torch.float64))
        rows.append([adaptive.gap, lam])
    print("RESULT " + json.dumps(rows))
    torch.distributed.destroy_process_group()
