"""One rank of the DDP loss test: a BatchNorm CNN in DistributedDataParallel trained with TrideLoss and PML's
TripletMarginMiner for a few steps, each rank on its own half of a fixed batch.

    python ddp_loss_worker.py OUT

once per configuration of CONFIGURATIONS (awareness, find_unused_parameters, broadcast_buffers); writes
OUT/<configuration>_rank<r>.pt: the parameters after the first step and at the end, the PGD steps of every step.
Then a TrideTrainer on the DDP model whose loss is NaN on rank 1 alone (finite gradients) at its third call: every
rank must stop with TrainingDivergedError (OUT/diverged_rank<r>.txt holds the message), none may hang. Then the
same with a TrideLoss whose attack objective is NaN on rank 1 alone at its third attack (the engine raises there;
under DDP the loss carries on with a NaN loss instead): OUT/attack_diverged_rank<r>.txt.
"""

import os
import sys

import torch
from pytorch_metric_learning import losses, miners
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

from pml_tride import TrideLoss, TrideTrainer  # noqa: E402
from pml_tride.distributed import get_rank, init_from_environment, leave_process_group  # noqa: E402
from pml_tride.trainers import TrainingDivergedError  # noqa: E402


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


class NaNOnRankOne(losses.TripletMarginLoss):
    """The triplet loss plus a NaN constant on rank 1 from its third call: the loss is NaN, the gradients are not."""

    calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        value = super().forward(*args, **kwargs)
        return value + float("nan") if get_rank() == 1 and self.calls >= 3 else value


class NaNAttackOnRankOne(TrideLoss):
    """A TrideLoss whose attack objective is NaN on rank 1 from its third attack (clean embeddings finite)."""

    calls = 0

    def _objective(self, *args):
        objective = super()._objective(*args)
        self.calls += 1
        if get_rank() == 1 and self.calls >= 3:
            return lambda adversarial: objective(adversarial) * float("nan")
        return objective


def diverge(out, loss_func=None, name="diverged"):
    model = build_model()
    wrapped = DistributedDataParallel(model)
    images, labels = batch(0)
    trainer = TrideTrainer(
        models={"trunk": wrapped},
        optimizers={"trunk_optimizer": torch.optim.SGD(model.parameters(), lr=0.1)},
        batch_size=RANK_BATCH // 2,
        loss_funcs={"metric_loss": loss_func(wrapped) if loss_func else NaNOnRankOne(margin=0.2)},
        dataset=torch.utils.data.TensorDataset(images, labels),
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        seed=0,
    )
    try:
        trainer.train(num_epochs=2)  # 2 steps per epoch: the third call is epoch 2, iteration 0
        message = "no error"
    except TrainingDivergedError as error:
        message = str(error)
    with open(os.path.join(out, f"{name}_rank{get_rank()}.txt"), "w") as handle:
        handle.write(message)


if __name__ == "__main__":
    torch.set_num_threads(1)
    init_from_environment(torch.device("cpu"))
    for configuration in CONFIGURATIONS:
        train(sys.argv[1], *configuration)
    diverge(sys.argv[1])
    diverge(sys.argv[1], lambda wrapped: build_loss(wrapped, "collapse", NaNAttackOnRankOne), "attack_diverged")
    leave_process_group()
