"""Every tensor the package creates follows its inputs' device, never torch's default device.

The checks run on the CPU with torch's default device set to "meta" (``with torch.device("meta")``): a tensor that
the package creates without taking the device from its inputs (a hidden default-device tensor, which on a GPU run
would be a CPU tensor and a host round-trip) lands on the meta device, and the first operation that mixes it with
the real inputs, or reads it on the host, fails. Inputs, model and generators are created before the default
changes, as on a GPU run. Intended CPU work (random draws from a CPU generator, reports) names its device.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import pml_tride
from pml_tride import TrideMiner
from pml_tride.attacks import RetrievalPool, build_attacks
from pml_tride.evaluation import RobustnessEvaluator, benign_metrics
from pml_tride.models import small_cnn_embedder

DEFENSES = [getattr(pml_tride, name) for name in ("TrideLoss", "ESTLoss", "ACTLoss", "HMLoss")
            if hasattr(pml_tride, name)]


@pytest.fixture
def model():
    return small_cnn_embedder(in_channels=3, embedding_dim=8, width=4)


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(8, 3, 8, 8, generator=generator), torch.arange(4).repeat_interleave(2)


def tride_settings():
    return [dict(phase=phase, awareness=awareness, perturb=perturb) for phase in ("cap", "anp")
            for awareness in ("collapse", "none") for perturb in ("unique", "per_triplet")]


@pytest.mark.parametrize("settings", tride_settings(), ids=lambda s: "-".join(s.values()))
def test_tride_step_creates_nothing_on_the_default_device(model, batch, settings):
    images, labels = batch
    loss_func = pml_tride.TrideLoss(model, steps=2, progressive_alpha=False, collect_stats=True, **settings)
    miner = TrideMiner(seed=0)
    with torch.device("meta"):
        embeddings = model(images)
        loss = loss_func(embeddings, labels, miner(embeddings, labels))
        loss.backward()
    assert loss.device.type == "cpu" and torch.isfinite(loss)


@pytest.mark.parametrize("loss_class", DEFENSES, ids=lambda c: c.__name__)
def test_every_defense_step_creates_nothing_on_the_default_device(model, batch, loss_class):
    images, labels = batch
    loss_func = loss_class(model, steps=2, collect_stats=True)
    loss_func.set_epoch(1, 2)
    with torch.device("meta"):
        embeddings = model(images)
        loss = loss_func(embeddings, labels)
        loss.backward()
    assert loss.device.type == "cpu"


@pytest.mark.parametrize("seed", [None, 0])
def test_miner_creates_nothing_on_the_default_device(model, batch, seed):
    images, labels = batch
    with torch.device("meta"):
        triplets = TrideMiner(seed=seed)(model(images), labels)
    assert all(index.device.type == "cpu" for index in triplets)


@pytest.mark.parametrize("attack", build_attacks("all", steps=2), ids=lambda a: "/".join(a.measurements))
def test_attacks_create_nothing_on_the_default_device(model, batch, attack):
    images, _ = batch
    generator = torch.Generator().manual_seed(0)
    pool = RetrievalPool(F.normalize(torch.randn(20, 8, generator=generator), dim=1), torch.arange(20) % 5)
    pool_indices = torch.arange(8)
    with torch.device("meta"):
        trials = attack(model, images, pool, pool_indices, generator)
    assert all(t.after.device.type == "cpu" for t in trials.values())


@pytest.mark.parametrize("use_faiss", [True, False])
def test_benign_metrics_create_nothing_on_the_default_device(use_faiss):
    embeddings, labels = torch.randn(30, 4, generator=torch.Generator().manual_seed(1)), torch.arange(30) % 5
    expected = benign_metrics(embeddings, labels, batch_size=7, use_faiss=use_faiss)
    with torch.device("meta"):
        assert benign_metrics(embeddings, labels, batch_size=7, use_faiss=use_faiss) == expected


def test_evaluator_creates_nothing_on_the_default_device(model, monkeypatch):
    dataset = TensorDataset(torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(2)), torch.arange(12) % 4)
    evaluator = RobustnessEvaluator(steps=2, batch_size=5, progress=False)
    # torch's DataLoader draws its base seed on the default device; the batches are made before the switch
    batches = {}

    def own_batches(data, batch_rows, device):
        key = tuple(map(tuple, batch_rows))
        if key not in batches:
            batches[key] = list(RobustnessEvaluator._own_batches(evaluator, data, batch_rows, device))
        return iter(batches[key])

    monkeypatch.setattr(evaluator, "_own_batches", own_batches)
    expected = evaluator.evaluate(model, dataset)
    with torch.device("meta"):
        report = evaluator.evaluate(model, dataset)
    assert report.benign == expected.benign and report.ers == expected.ers
