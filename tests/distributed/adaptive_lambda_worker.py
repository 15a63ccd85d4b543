"""One rank of the AdaptiveLambda process-group test: two updates on this rank's own batches; prints the
entanglement average and lambda after each as JSON.

    python adaptive_lambda_worker.py BATCHES_JSON

BATCHES_JSON: per rank, a list of (embeddings, labels) batches.
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
    for embeddings, labels in json.loads(sys.argv[1])[get_rank()]:
        lam = adaptive.update(torch.tensor(embeddings, dtype=torch.float64), torch.tensor(labels))
        rows.append([adaptive.entanglement, lam])
    print("RESULT " + json.dumps(rows))
    torch.distributed.destroy_process_group()
