import json
import math
import os

import numpy as np
import pytest
import torch
from distributed_helpers import run_group

from pml_tride import TrideLoss
from pml_tride.adaptive_lambda import AdaptiveLambda, lam_for_entanglement, resolve_lam
from pml_tride.datasets import EntangledDigits
from pml_tride.recipes import train_embedder

from tiny_models import tiny_cnn
from triplet_loops import PAIRWISE_EPS

WORKER = os.path.join(os.path.dirname(__file__), "distributed", "adaptive_lambda_worker.py")

# Table 5 of the paper: (entanglement, lambda) of CUB, CARS, SOP
TABLE_5 = [(0.79, 10.0), (0.79, 9.5), (0.66, 2.0)]
# 2-D embeddings for brute-force entanglement: an entangled batch (e = 0.82, lambda clipped to 10), a separated one
# (e = 0.36, lambda clipped to 0); their moving average with momentum 0.75 (e = 0.71) lies inside the line's range
BATCH_1 = ([[1.0, 0.0], [0.5, 0.8], [0.0, 1.0], [-0.6, 0.7], [-1.0, 0.1], [0.6, -0.7]], [0, 0, 1, 1, 2, 2])
BATCH_2 = ([[1.0, 0.2], [0.1, 1.0], [0.8, 0.6], [-0.3, 1.0]], [0, 1, 0, 1])


def loop_entanglement(embeddings, labels):
    """d_intra / d_inter with PML's LpDistance(normalize_embeddings=True), by plain loops."""
    unit = [[value / math.sqrt(sum(v * v for v in row)) for value in row] for row in embeddings]
    intra, inter = [], []
    for i, first in enumerate(unit):
        for j, second in enumerate(unit):
            if i == j:
                continue
            distance = math.sqrt(sum((a - b + PAIRWISE_EPS) ** 2 for a, b in zip(first, second)))
            (intra if labels[i] == labels[j] else inter).append(distance)
    return (sum(intra) / len(intra)) / (sum(inter) / len(inter))


def loop_lam(value, low=0.0, high=10.0):
    slope, intercept = np.polyfit([e for e, _ in TABLE_5], [lam for _, lam in TABLE_5], 1)  # least squares
    return min(max(slope * value + intercept, low), high)


@pytest.mark.parametrize("value", [0.5, 0.62, 0.66, 0.7, 0.79, 0.8, 1.0])
def test_the_rule_is_the_least_squares_line_through_table_5_clipped(value):
    assert lam_for_entanglement(value) == pytest.approx(loop_lam(value))
    assert lam_for_entanglement(value, 1.0, 20.0) == pytest.approx(loop_lam(value, 1.0, 20.0))


def test_a_recalibrated_line_and_range():
    line = ((0.2, 1.0), (0.4, 5.0))  # lambda = 1 + 20 (e - 0.2)
    for value, expected in ((0.3, 3.0), (0.1, 0.0), (0.6, 9.0), (2.0, 15.0)):
        assert lam_for_entanglement(value, 0.0, 15.0, line) == pytest.approx(expected)
    adaptive = AdaptiveLambda(momentum=0.0, max_lam=15.0, line=line)
    entangled = loop_entanglement(*BATCH_1)
    assert adaptive.update(torch.tensor(BATCH_1[0]), torch.tensor(BATCH_1[1])) == pytest.approx(
        min(1 + 20 * (entangled - 0.2), 15.0), rel=1e-5)
    for bad in (((0.5, 1.0), (0.5, 2.0)), ((0.2, 1.0),), "steep", ((0.2, float("nan")), (0.4, 5.0))):
        with pytest.raises(ValueError, match="line must be two"):
            AdaptiveLambda(line=bad)


def test_update_keeps_a_moving_average_of_the_batch_entanglement():
    adaptive = AdaptiveLambda(momentum=0.75)
    assert adaptive.lam == 10.0 and adaptive.entanglement is None  # the warm start
    first, second = loop_entanglement(*BATCH_1), loop_entanglement(*BATCH_2)
    lam = adaptive.update(torch.tensor(BATCH_1[0]), torch.tensor(BATCH_1[1]))
    assert adaptive.entanglement == pytest.approx(first, rel=1e-5) and lam == loop_lam(first) == 10.0
    lam = adaptive.update(torch.tensor(BATCH_2[0]), torch.tensor(BATCH_2[1]))
    average = 0.75 * first + 0.25 * second
    assert adaptive.entanglement == pytest.approx(average, rel=1e-5)
    assert lam == pytest.approx(loop_lam(average), rel=1e-5)
    assert adaptive.lam == lam and adaptive.batches == 2 and 0 < lam < 10
    # a batch without a same-class pair (or with one class only) changes nothing
    assert adaptive.update(torch.eye(3), torch.tensor([0, 1, 2])) == lam
    assert adaptive.update(torch.eye(3), torch.tensor([4, 4, 4])) == lam and adaptive.batches == 2


def test_arguments_are_checked():
    assert resolve_lam(2) == (2.0, None)
    initial, adaptive = resolve_lam("auto")
    assert initial == 10.0 and isinstance(adaptive, AdaptiveLambda)
    for bad in ("Auto", "10", -1.0, float("nan"), True, None):
        with pytest.raises(ValueError, match="lam must be a finite number >= 0, 'auto' or an AdaptiveLambda"):
            resolve_lam(bad)
    with pytest.raises(ValueError, match="lam must be a finite number >= 0, 'auto' or an AdaptiveLambda"):
        TrideLoss(torch.nn.Identity(), lam="automatic")
    with pytest.raises(ValueError, match="momentum"):
        AdaptiveLambda(momentum=1.0)
    with pytest.raises(ValueError, match="warm_start"):
        AdaptiveLambda(warm_start=12.0)
    with pytest.raises(ValueError, match="needs its labels"):
        AdaptiveLambda().update(torch.eye(3), None)


def test_state_round_trip_continues_identically():
    first = AdaptiveLambda(momentum=0.5)
    first.update(torch.tensor(BATCH_1[0]), torch.tensor(BATCH_1[1]))
    second = AdaptiveLambda(momentum=0.5)
    second.load_state_dict(first.state_dict())
    assert (second.lam, second.entanglement, second.batches) == (first.lam, first.entanglement, first.batches)
    batch = torch.tensor(BATCH_2[0]), torch.tensor(BATCH_2[1])
    assert first.update(*batch) == second.update(*batch)


def tiny_loss(lam):
    torch.manual_seed(0)
    model = tiny_cnn()
    return model, TrideLoss(model, lam=lam, eps=0.1, alpha=0.05, steps=2, progressive_alpha=False, collect_stats=True)


def test_tride_loss_auto_sets_lambda_from_each_batch_and_keeps_it_in_its_state():
    model, loss = tiny_loss("auto")
    images, labels = torch.rand(8, 1, 6, 6), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    indices = (torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5]), torch.tensor([2, 4, 6]))
    embeddings = model(images)
    expected = lam_for_entanglement(loop_entanglement(embeddings.tolist(), labels.tolist()))
    value = loss(embeddings, labels, indices)
    assert torch.isfinite(value)
    assert loss.lam == pytest.approx(expected) and loss.current_lam == loss.lam
    assert loss.collapseness_reducer.lam == loss.lam  # the attack's d_w uses it
    _, restored = tiny_loss("auto")
    restored.load_state_dict(loss.state_dict())
    assert restored.lam == loss.lam and restored.adaptive_lambda.entanglement == loss.adaptive_lambda.entanglement
    injected = AdaptiveLambda(momentum=0.0, max_lam=40.0, line=((0.0, 0.0), (1.0, 40.0)))  # lambda = 40 e
    _, custom = tiny_loss(injected)
    assert custom.adaptive_lambda is injected and custom.lam == 10.0
    custom_model = custom.model
    custom_embeddings = custom_model(images)
    custom(custom_embeddings, labels, indices)
    assert custom.lam == pytest.approx(40 * loop_entanglement(custom_embeddings.tolist(), labels.tolist()), rel=1e-5)
    fixed_model, fixed = tiny_loss(2.0)
    assert fixed.adaptive_lambda is None and fixed.lam == 2.0
    fixed(fixed_model(images), labels, indices)
    assert fixed.lam == 2.0 and fixed.current_lam == 2.0


def test_a_resumed_training_continues_with_the_same_lambda(tmp_path):
    dataset = EntangledDigits("train", image_size=8, subclasses=2)
    settings = {"defense": "ca-tride", "epochs": 2, "batch_size": 20, "steps": 1, "lam": "auto",
                "iterations_per_epoch": 2, "seed": 1, "disable_progress": True}

    def run(checkpoint_dir, **extra):
        torch.manual_seed(0)
        model = tiny_cnn()
        trainer, _ = train_embedder(model, dataset, checkpoint_dir=str(checkpoint_dir), **settings, **extra)
        return model, trainer.loss_funcs["metric_loss"]

    model_a, loss_a = run(tmp_path / "a")
    run(tmp_path / "b", end_of_epoch_hook=lambda trainer: trainer.epoch < 1)  # stops after epoch 1
    model_b, loss_b = run(tmp_path / "c", resume=str(tmp_path / "b" / "epoch_1.pt"))
    assert loss_a.adaptive_lambda.batches == loss_b.adaptive_lambda.batches == 4
    assert loss_a.lam == loss_b.lam != 10.0
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        assert torch.equal(a, b)


def test_a_process_group_averages_the_ranks_batches(tmp_path):
    lone = ([[1.0, 0.0], [0.0, 1.0]], [0, 1])  # no same-class pair: this rank's second batch does not count
    batches = [[BATCH_1, BATCH_1], [BATCH_2, lone]]
    outputs = run_group(WORKER, json.dumps(batches))
    results = [json.loads(output.split("RESULT ")[1]) for output in outputs]
    assert results[0] == results[1]  # every rank holds the same lambda
    first = (loop_entanglement(*BATCH_1) + loop_entanglement(*BATCH_2)) / 2
    second = 0.5 * first + 0.5 * loop_entanglement(*BATCH_1)
    for (average, lam), expected in zip(results[0], (first, second)):
        assert average == pytest.approx(expected) and lam == pytest.approx(loop_lam(expected))
