"""AdversarialLoss on a DistributedDataParallel model, 2 gloo processes, unequal tuple counts per rank (none on
one rank): no hang, and the first step applies the mean of the ranks' gradients."""

import os

import pytest
import torch
from adversarial_loss_reference import ATTACK_STEPS, RANK_BATCH, STEPS, batch, build_loss, build_model, rank_tuples
from distributed_helpers import forward_always, mean_gradient_step, run_group

from pml_tride import AdversarialLoss

WORKER = os.path.join(os.path.dirname(__file__), "adversarial_loss_worker.py")
AWARENESS = ("none", "collapse")


def reference_first_step(awareness):
    """Parameters after one step that applies the mean of the two ranks' gradients, each computed alone."""
    images, labels = batch(0)

    def rank_loss(rank, model):
        rows = slice(rank * RANK_BATCH, (rank + 1) * RANK_BATCH)
        embeddings = model(images[rows])
        return build_loss(model, awareness, forward_always(AdversarialLoss))(
            embeddings, labels[rows], rank_tuples(0, rank, labels[rows]), inputs=images[rows])

    return mean_gradient_step(build_model(), rank_loss)


@pytest.fixture(scope="module")
def group_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("adversarial_loss_ddp")
    for awareness in AWARENESS:
        run_group(WORKER, out, awareness)
    return out


@pytest.mark.parametrize("awareness", AWARENESS)
def test_unequal_tuple_counts_train_in_step_and_match_the_mean_gradient(group_results, awareness):
    ranks = [torch.load(group_results / f"{awareness}_rank{rank}.pt") for rank in range(2)]
    assert len(ranks[0]["pgd_steps"]) == STEPS
    steps = [rank["pgd_steps"] for rank in ranks]
    assert steps[1][0] == 0  # rank 1 had no tuple at step 0
    if awareness == "none":
        assert steps[0] == [ATTACK_STEPS] * STEPS
    else:  # the collapse-aware stop ends the ranks' attacks after different numbers of steps
        assert steps[0] != steps[1]
    for name, value in ranks[0]["final"].items():
        assert torch.equal(value, ranks[1]["final"][name])  # the ranks stayed in step
    reference = reference_first_step(awareness)
    for name, value in reference.items():
        assert torch.allclose(ranks[0]["first"][name], value, atol=1e-6), name
