"""The shared machinery of every defense: chunked attack and training forward, memory refusal, pass counters."""

import pytest
import torch
from pytorch_metric_learning import miners
from torch import nn

from pml_tride import TrideLoss, pgd
from pml_tride.losses.adversarial_triplet_loss import DEFAULT_CHUNK_BATCHES
from tiny_models import tiny_cnn


class Identity(nn.Module):
    def forward(self, x):
        return x.flatten(1)


def dense_batch(count=24, classes=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, 6, 6, generator=generator, dtype=torch.float64)
    labels = torch.arange(classes).repeat_interleave(count // classes)
    return images, labels


def loss_and_gradients(model, images, labels, indices, **kwargs):
    loss = TrideLoss(model, eps=0.1, alpha=0.02, steps=3, perturb="per_triplet", awareness="none",
                     progressive_alpha=False, **kwargs)
    values, gradients = [], []
    for _ in range(2):  # CAP, then ANP
        model.zero_grad()
        value = loss(model(images), labels, indices)
        value.backward()
        values.append(value.detach())
        gradients.append([p.grad.clone() for p in model.parameters()])
    return values, gradients


def test_dense_pml_miner_with_per_triplet_copies_runs_in_bounded_chunks():
    """The reported failure at small scale: a dense TripletMarginMiner yields many more triplets than images; with
    perturb="per_triplet" every pass is now at most DEFAULT_CHUNK_BATCHES batches, and the result equals the
    unchunked one."""
    torch.manual_seed(0)
    model = tiny_cnn().double().eval()  # eval mode: BatchNorm uses running statistics, rows are independent
    images, labels = dense_batch()
    indices = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")(model(images), labels)
    assert 2 * len(indices[0]) > DEFAULT_CHUNK_BATCHES * len(images)  # CAP's copies exceed one chunk
    sizes = []
    hook = model.register_forward_hook(lambda module, args, output: sizes.append(len(args[0])))
    chunked_values, chunked_gradients = loss_and_gradients(model, images, labels, indices)
    hook.remove()
    assert max(sizes) == DEFAULT_CHUNK_BATCHES * len(images)
    whole_values, whole_gradients = loss_and_gradients(model, images, labels, indices, attack_batch_size=10**6)
    for chunked, whole in zip(chunked_values, whole_values):
        assert torch.allclose(chunked, whole, rtol=0, atol=1e-12)
    for chunked, whole in zip(chunked_gradients, whole_gradients):
        assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(chunked, whole))


def test_training_forward_with_batchnorm_in_train_mode_updates_statistics_once_per_chunk():
    torch.manual_seed(0)
    model = tiny_cnn().double()
    images, labels = dense_batch()
    indices = miners.TripletMarginMiner(margin=0.2, type_of_triplets="all")(model(images), labels)
    loss = TrideLoss(model, eps=0.1, alpha=0.02, steps=2, phase="anp", perturb="per_triplet", awareness="none",
                     progressive_alpha=False, attack_batch_size=50)
    embeddings = model(images)
    tracked = model[1].num_batches_tracked.item()
    value = loss(embeddings, labels, indices)
    chunks = -(-len(indices[0]) // 50)
    assert model[1].num_batches_tracked.item() == tracked + chunks
    running_mean = model[1].running_mean.clone()
    value.backward()  # the checkpointed recomputation must not update the running statistics again
    assert torch.equal(model[1].running_mean, running_mean)
    assert model[1].num_batches_tracked.item() == tracked + chunks
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_refuses_an_attack_that_cannot_fit_before_allocating(monkeypatch):
    images, labels = dense_batch()
    model = Identity()
    indices = miners.TripletMarginMiner(margin=10.0, type_of_triplets="all")(model(images), labels)
    monkeypatch.setattr(pgd, "available_memory", lambda device: 1000)
    loss = TrideLoss(model, steps=2, perturb="per_triplet", progressive_alpha=False)
    embeddings = model(images.float())
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(MemoryError, match=rf"{len(indices[0])} triplets.*bytes.*perturb='unique'"):
        loss(embeddings, labels, indices, inputs=images.float())
    assert calls == []  # refused before the engine's first forward pass


@pytest.mark.parametrize("attack_batch_size, recomputed", [(None, 0), (2, 1)])
def test_pass_counters_per_call(attack_batch_size, recomputed):
    images = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.3, 0.1], [0.2, 0.9, 0.3], [0.1, 0.7, 0.6], [0.5, 0.5, 0.9],
                           [0.3, 0.2, 0.8]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    triplets = [(0, 1, 2), (1, 0, 4), (2, 3, 5), (3, 2, 0), (4, 5, 1)]
    indices = tuple(torch.tensor(column) for column in zip(*triplets))
    model = Identity()
    loss = TrideLoss(model, steps=3, awareness="none", progressive_alpha=False, collect_stats=True,
                     attack_batch_size=attack_batch_size)
    anchors = len({a for a, _, _ in triplets})
    candidates = len({p for _, p, _ in triplets} | {n for _, _, n in triplets})
    loss(model(images), labels, indices)  # CAP: clean anchors embedded once, 3 steps on the candidates
    assert loss.pgd_forward_images == anchors + 3 * candidates * (1 + recomputed)
    assert loss.pgd_backward_images == 3 * candidates
    loss(model(images), labels, indices)  # ANP: all clean images once, 3 steps on the anchors
    assert loss.pgd_forward_images == len(images) + 3 * anchors * (1 + recomputed)
    assert loss.pgd_backward_images == 3 * anchors
    stopping = TrideLoss(model, steps=16, phase="cap", progressive_alpha=False, collect_stats=True)
    collapsed = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.85, 0.15]])  # C > 0 on the clean triplet: stop at once
    stopping(model(collapsed), torch.tensor([0, 0, 1]), (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    assert (stopping.pgd_forward_images, stopping.pgd_backward_images) == (1 + 2, 0)


def test_invalid_attack_batch_size():
    for value in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="attack_batch_size"):
            TrideLoss(Identity(), attack_batch_size=value)
