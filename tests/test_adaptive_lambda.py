import json
import math
import os

import numpy as np
import pytest
import torch
from distributed_helpers import run_group

from pml_tride import TrideLoss
from pml_tride.adaptive_lambda import TABLE_5_CONTRAST, AdaptiveLambda, contrast_fit, lam_for_gap, resolve_lam
from pml_tride.datasets import EntangledDigits
from pml_tride.recipes import train_embedder

from tiny_models import tiny_cnn
from triplet_loops import PAIRWISE_EPS

WORKER = os.path.join(os.path.dirname(__file__), "distributed", "adaptive_lambda_worker.py")

# Table 5 of the paper: (d_inter, d_intra, lambda) of CUB, CARS, SOP
TABLE_5 = [(0.287, 0.226, 10.0), (0.325, 0.256, 9.5), (0.664, 0.438, 2.0)]
# (d(a_i, p_i), d(a_i, n_i)) of hand-made batches: gaps 0.5 (lambda 1.25 at kappa 0.623), 0.05 (lambda clipped to
# 10) and -0.1 (collapsed: lambda 10)
BATCH_1 = ([0.2, 0.4, 0.3], [0.9, 0.8, 0.7])
BATCH_2 = ([0.6, 0.5], [0.6, 0.6])
COLLAPSED = ([0.5, 0.7], [0.4, 0.6])
TRIPLETS = (torch.tensor([0, 2, 4, 6]), torch.tensor([1, 3, 5, 7]), torch.tensor([2, 5, 6, 1]))
LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


def loop_gap(ap, an):
    return sum(an) / len(an) - sum(ap) / len(ap)


def loop_lam(gap, kappa, low=0.0, high=10.0):
    if gap <= 0:
        return high
    return min(max(kappa / gap, low), high)


def loop_distance(first, second):
    """PML's LpDistance(normalize_embeddings=True) of two vectors, by a plain loop."""
    first = [value / math.sqrt(sum(v * v for v in first)) for value in first]
    second = [value / math.sqrt(sum(v * v for v in second)) for value in second]
    return math.sqrt(sum((a - b + PAIRWISE_EPS) ** 2 for a, b in zip(first, second)))


def tensors(batch):
    return tuple(torch.tensor(values, dtype=torch.float64) for values in batch)


def test_the_contrast_is_the_least_squares_fit_of_table_5():
    inverse_gaps = np.array([[1 / (inter - intra)] for inter, intra, _ in TABLE_5])
    lams = np.array([lam for _, _, lam in TABLE_5])
    kappa = np.linalg.lstsq(inverse_gaps, lams, rcond=None)[0][0]
    assert TABLE_5_CONTRAST == pytest.approx(kappa) and TABLE_5_CONTRAST == pytest.approx(0.623, abs=5e-4)
    assert contrast_fit([("one", 0.5, 0.25, 4.0)]) == pytest.approx(1.0)  # lambda 4 at gap 0.25


@pytest.mark.parametrize("gap", [-0.2, 0.0, 0.03, 0.0623, 0.1, 0.226, 0.5, 2.0, 100.0])
def test_the_rule_is_contrast_over_gap_clipped(gap):
    assert lam_for_gap(gap) == pytest.approx(loop_lam(gap, TABLE_5_CONTRAST))
    assert lam_for_gap(gap, 2.0, 1.0, 20.0) == pytest.approx(loop_lam(gap, 2.0, 1.0, 20.0))
    assert lam_for_gap(gap, max_lam=0.0) == 0.0


def test_update_keeps_a_moving_average_of_the_gap():
    adaptive = AdaptiveLambda(momentum=0.75)
    assert adaptive.lam == 10.0 and adaptive.gap is None  # the warm start
    first, second = loop_gap(*BATCH_1), loop_gap(*BATCH_2)
    assert adaptive.update(*tensors(BATCH_1)) == pytest.approx(loop_lam(first, TABLE_5_CONTRAST))
    assert adaptive.gap == pytest.approx(first) and 0 < adaptive.lam < 10
    lam = adaptive.update(*tensors(BATCH_2))
    average = 0.75 * first + 0.25 * second
    assert adaptive.gap == pytest.approx(average) and lam == pytest.approx(loop_lam(average, TABLE_5_CONTRAST))
    assert adaptive.lam == lam and adaptive.batches == 2
    # a batch without triplets changes nothing
    assert adaptive.update(torch.zeros(0), torch.zeros(0)) == lam and adaptive.batches == 2
    # a collapsed batch (gap <= 0) followed alone drives lambda to the cap
    assert AdaptiveLambda(momentum=0.0).update(*tensors(COLLAPSED)) == 10.0
    assert AdaptiveLambda(momentum=0.0, contrast=0.1, max_lam=20.0).update(*tensors(BATCH_1)) == pytest.approx(0.2)


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
    for bad in (0.0, -1.0, float("inf"), True, "0.6"):
        with pytest.raises(ValueError, match="contrast"):
            AdaptiveLambda(contrast=bad)
    for bad in ((torch.zeros(2), torch.zeros(3)), (torch.zeros(2, 1), torch.zeros(2, 1)), (None, torch.zeros(1))):
        with pytest.raises(ValueError, match="1-D tensors of the same length"):
            AdaptiveLambda().update(*bad)
    with pytest.raises(ValueError, match="NaN or Inf"):
        AdaptiveLambda().update(torch.tensor([float("nan")]), torch.tensor([1.0]))


def test_state_round_trip_continues_identically():
    first = AdaptiveLambda(momentum=0.5)
    first.update(*tensors(BATCH_1))
    second = AdaptiveLambda(momentum=0.5)
    second.load_state_dict(first.state_dict())
    assert (second.lam, second.gap, second.batches) == (first.lam, first.gap, first.batches)
    assert first.update(*tensors(BATCH_2)) == second.update(*tensors(BATCH_2))


def tiny_loss(lam, **kwargs):
    torch.manual_seed(0)
    model = tiny_cnn()
    settings = {"eps": 0.1, "alpha": 0.05, "steps": 2, "progressive_alpha": False, "collect_stats": True, **kwargs}
    return model, TrideLoss(model, lam=lam, **settings)


def brute_force_gap(anchors, positives, negatives):
    ap = [loop_distance(a, p) for a, p in zip(anchors, positives)]
    an = [loop_distance(a, n) for a, n in zip(anchors, negatives)]
    return loop_gap(ap, an)


def test_without_an_attack_lambda_follows_the_clean_triplets():
    model, loss = tiny_loss("auto", steps=0)
    images = torch.rand(8, 1, 6, 6)
    embeddings = model(images)
    rows = [embeddings[index].tolist() for index in TRIPLETS]
    expected = lam_for_gap(brute_force_gap(*rows))
    assert torch.isfinite(loss(embeddings, LABELS, TRIPLETS))
    assert loss.current_lam == 10.0  # the attack of the first batch ran at the warm start
    assert loss.lam == pytest.approx(expected) and loss.collapseness_reducer.lam == loss.lam
    loss(model(images), None, TRIPLETS)  # an indices_tuple alone is enough
    assert loss.current_lam == pytest.approx(expected) and loss.adaptive_lambda.batches == 2


class Recorder(torch.nn.Module):
    """The model, keeping its last output (the loss's last forward embeds the adversarial images)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.last = model, None

    def forward(self, images):
        self.last = self.model(images)
        return self.last


def test_lambda_follows_the_attacked_triplets_and_is_kept_in_the_state():
    torch.manual_seed(0)
    model = Recorder(tiny_cnn())
    loss = TrideLoss(model, lam="auto", eps=0.3, alpha=0.1, steps=3, progressive_alpha=False, collect_stats=True)
    images = torch.rand(8, 1, 6, 6)
    embeddings = model(images)
    loss(embeddings, LABELS, TRIPLETS)
    assert loss.last_phase == "cap"  # clean anchors, adversarial positives and negatives
    anchors, positives, negatives = (index.tolist() for index in TRIPLETS)
    rows = sorted(set(positives) | set(negatives))  # perturb="unique": each image once, in row order
    adversarial = model.last.tolist()
    clean = embeddings.tolist()
    attacked = brute_force_gap([clean[i] for i in anchors], [adversarial[rows.index(i)] for i in positives],
                               [adversarial[rows.index(i)] for i in negatives])
    assert loss.adaptive_lambda.gap == pytest.approx(attacked, rel=1e-5)
    assert attacked != pytest.approx(brute_force_gap(*[[clean[i] for i in role] for role in (anchors, positives,
                                                                                                 negatives)]))
    assert loss.lam == pytest.approx(lam_for_gap(attacked), rel=1e-5)
    _, restored = tiny_loss("auto")
    restored.load_state_dict(loss.state_dict())
    assert restored.lam == loss.lam and restored.adaptive_lambda.gap == loss.adaptive_lambda.gap
    injected = AdaptiveLambda(momentum=0.0, contrast=0.05)
    custom_model, custom = tiny_loss(injected, steps=0)
    assert custom.adaptive_lambda is injected and custom.lam == 10.0
    custom_embeddings = custom_model(images)
    custom(custom_embeddings, LABELS, TRIPLETS)
    clean_gap = brute_force_gap(*[custom_embeddings[index].tolist() for index in TRIPLETS])
    assert custom.lam == pytest.approx(lam_for_gap(clean_gap, 0.05), rel=1e-5)
    fixed_model, fixed = tiny_loss(2.0)
    assert fixed.adaptive_lambda is None and fixed.lam == 2.0
    fixed(fixed_model(images), LABELS, TRIPLETS)
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
    assert loss_a.lam == loss_b.lam and loss_a.adaptive_lambda.gap == loss_b.adaptive_lambda.gap
    assert loss_a.lam != 10.0
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        assert torch.equal(a, b)


def test_a_process_group_averages_the_ranks_batches(tmp_path):
    batches = [[BATCH_1, BATCH_1], [BATCH_2, ([], [])]]  # rank 1 has no triplets in its second batch
    outputs = run_group(WORKER, "updates", json.dumps(batches))
    results = [json.loads(output.split("RESULT ")[1]) for output in outputs]
    assert results[0] == results[1]  # every rank holds the same lambda
    first = (loop_gap(*BATCH_1) + loop_gap(*BATCH_2)) / 2
    second = 0.5 * first + 0.5 * loop_gap(*BATCH_1)
    for (average, lam), expected in zip(results[0], (first, second)):
        assert average == pytest.approx(expected) and lam == pytest.approx(loop_lam(expected, TABLE_5_CONTRAST))


def test_a_process_group_trains_with_one_lambda_also_when_a_rank_has_no_triplets():
    outputs = run_group(WORKER, "training")  # rank 1 has no triplets in the second step: no hang
    ranks = [json.loads(output.split("RESULT ")[1]) for output in outputs]
    assert ranks[0] == ranks[1]  # the same lambda and gap on every rank after every step
    assert [batches for _, _, batches in ranks[0]] == [1, 2, 3]
    for lam, gap, _ in ranks[0]:
        assert lam == pytest.approx(lam_for_gap(gap))
