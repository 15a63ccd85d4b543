"""TrideLoss on a DistributedDataParallel model, 2 gloo processes: no hang, one gradient all-reduce per step."""

import os

import pytest
import torch
from ddp_reference import CONFIGURATIONS, RANK_BATCH, batch, build_loss, build_model
from distributed_helpers import forward_always, mean_gradient_step, run_group
from pytorch_metric_learning import miners

from pml_tride import TrideLoss

WORKER = os.path.join(os.path.dirname(__file__), "ddp_loss_worker.py")


def reference_first_step(awareness):
    """Parameters after one step that applies the mean of the two ranks' gradients, each computed alone."""
    images, labels = batch(0)

    def rank_loss(rank, model):
        rows = slice(rank * RANK_BATCH, (rank + 1) * RANK_BATCH)
        embeddings = model(images[rows])
        return build_loss(model, awareness, forward_always(TrideLoss))(
            embeddings, labels[rows], miners.TripletMarginMiner(margin=0.2)(embeddings, labels[rows]),
            inputs=images[rows])

    return mean_gradient_step(build_model(), rank_loss)


@pytest.fixture(scope="module")
def group_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_loss")
    run_group(WORKER, out)
    return out


@pytest.mark.parametrize("awareness, find_unused, broadcast_buffers", CONFIGURATIONS)
def test_ddp_training_matches_the_mean_gradient_reference(group_results, awareness, find_unused, broadcast_buffers):
    stem = f"{awareness}_{int(find_unused)}_{int(broadcast_buffers)}"
    ranks = [torch.load(group_results / f"{stem}_rank{rank}.pt", weights_only=True) for rank in range(2)]
    reference = reference_first_step(awareness)
    for name in reference:
        assert torch.equal(ranks[0]["first"][name], ranks[1]["first"][name]), name
        assert torch.equal(ranks[0]["first"][name], reference[name]), name
        assert torch.equal(ranks[0]["final"][name], ranks[1]["final"][name]), name
    if awareness == "collapse":  # the collapse-aware stop made the ranks take different numbers of PGD steps
        assert ranks[0]["pgd_steps"] != ranks[1]["pgd_steps"], (ranks[0]["pgd_steps"], ranks[1]["pgd_steps"])


@pytest.mark.parametrize("name", ["diverged", "attack_diverged"])
def test_a_nan_loss_or_attack_on_one_rank_stops_every_rank(group_results, name):
    for rank in range(2):
        message = (group_results / f"{name}_rank{rank}.txt").read_text()
        assert "training diverged at epoch 2, iteration 0" in message, message
