"""perturb="per_triplet" under DistributedDataParallel (2 gloo processes): ranks with different triplet counts
make different numbers of chunked training forwards of their own; every rank must still make the same collective
calls. Every defense that offers per_triplet finishes (no hang), the ranks stay identical, and the first step
equals the single-process mean of the two ranks' gradients."""

import math
import os
import time

import pytest
import torch
from distributed_helpers import forward_always, mean_gradient_step, run_group
from per_triplet_reference import CHUNK_IMAGES, LOSSES, REMINE_RUNS, RUNS, batch, build_model, miner

WORKER = os.path.join(os.path.dirname(__file__), "per_triplet_worker.py")
# The worker trains 5 runs of 3 steps on 12 images per rank: seconds (more on a busy machine); a hang is killed
# after this.
TIMEOUT = 180


def reference_first_step(name):
    """Parameters after one SGD step on the mean of the two ranks' gradients, each computed in one process."""

    def rank_loss(rank, model):
        images, labels = batch(0, rank)
        embeddings = model(images)
        loss = LOSSES[name](model)
        loss.__class__ = forward_always(type(loss))
        return loss(embeddings, labels, miner()(embeddings, labels), inputs=images)

    return mean_gradient_step(build_model(), rank_loss)


@pytest.fixture(scope="module")
def group_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("per_triplet_ddp")
    started = time.monotonic()
    run_group(WORKER, out, timeout=TIMEOUT)
    print(f"2-process per_triplet group: {time.monotonic() - started:.1f} s")
    return out


@pytest.mark.parametrize("run", sorted(RUNS))
def test_per_triplet_ranks_with_unequal_triplets_finish_and_agree(group_results, run):
    name = RUNS[run][0]
    ranks = [torch.load(group_results / f"{run}_rank{rank}.pt", weights_only=True) for rank in range(2)]
    chunks = [[math.ceil(images / CHUNK_IMAGES) for images in rank["perturbed"]] for rank in ranks]
    # the scenario that hung: several chunks on one rank, fewer on the other, none on a rank without triplets
    assert chunks[0][0] > chunks[1][0] >= 1 and chunks[0][1] > 1 == chunks[1][1] + 1 and chunks[1][2] > chunks[0][2]
    reference = reference_first_step(name)
    for key in reference:
        assert torch.equal(ranks[0]["first"][key], ranks[1]["first"][key]), key
        assert torch.allclose(ranks[0]["first"][key], reference[key], atol=1e-6), key
        assert torch.equal(ranks[0]["final"][key], ranks[1]["final"][key]), key
        assert not torch.equal(ranks[0]["final"][key], ranks[0]["first"][key]), key  # later steps trained too


@pytest.mark.parametrize("run", sorted(REMINE_RUNS))
def test_a_rank_whose_remined_batch_has_no_triplet_finishes_with_the_others(group_results, run):
    ranks = [torch.load(group_results / f"{run}_rank{rank}.pt", weights_only=True) for rank in range(2)]
    for key in ranks[0]["final"]:
        assert torch.equal(ranks[0]["final"][key], ranks[1]["final"][key]), key
        assert not torch.equal(ranks[0]["final"][key], ranks[0]["first"][key]), key
