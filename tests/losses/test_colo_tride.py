"""COLO-TRIDE (orientation="assist"): every step's direction re-derived by a plain-Python PGD on 1-pixel images."""

import math

import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from torch import nn

from pml_tride import TrideLoss

EPS, ALPHA, STEPS, LAM = 0.3, 0.05, 6, 10.0
# Two triplets (0, 1, 2) and (3, 4, 5) on 1-pixel images: the embedding is the pixel, the distance |u - v + 1e-6|.
PIXELS = [0.5, 0.6, 0.87, 0.3, 0.42, 0.61]
TRIPLETS = [(0, 1, 2), (3, 4, 5)]
LABELS = torch.tensor([0, 0, 1, 2, 2, 3])


class Identity(nn.Module):
    def forward(self, x):
        return x.flatten(1)


def loop_distance(u, v):
    return abs(u - v + 1e-6)


def loop_weighted(dists):
    low = min(dists)
    weights = [math.exp(-LAM * (d - low)) for d in dists]
    return sum(w * d for w, d in zip(weights, dists)) / sum(weights)


def loop_margin(phase, pixels, clean):
    """g of the phase from plain loops: -C in CAP (anchors clean), -C + e^{max(C,0)} (d(A,N_v) - d(A,A_0)) in ANP."""
    if phase == "cap":
        ap = [loop_distance(pixels[p], clean[a]) for a, p, _ in TRIPLETS]
        an = [loop_distance(clean[a], pixels[n]) for a, _, n in TRIPLETS]
        return -(loop_weighted(ap) - loop_weighted(an))
    ap = [loop_distance(pixels[a], clean[p]) for a, p, _ in TRIPLETS]
    an = [loop_distance(pixels[a], clean[n]) for a, _, n in TRIPLETS]
    shift = [loop_distance(pixels[a], clean[a]) for a, _, _ in TRIPLETS]
    c = loop_weighted(ap) - loop_weighted(an)
    nearest_half = sorted(an)[: max(1, len(an) // 2)]
    return -c + math.exp(max(c, 0.0)) * (sum(nearest_half) / len(nearest_half) - sum(shift) / len(shift))


def loop_attack(phase, assist):
    """Plain-Python signed PGD: ICML stops once g <= 0; COLO steps along -sign(dg) when g <= 0, else +."""
    clean = list(PIXELS)
    pixels = list(PIXELS)
    rows = sorted({p for _, p, _ in TRIPLETS} | {n for _, _, n in TRIPLETS}) if phase == "cap" else [0, 3]
    directions = []
    for _ in range(STEPS):
        margin = loop_margin(phase, pixels, clean)
        if margin <= 0 and not assist:
            break
        orientation = -1 if margin <= 0 else 1
        directions.append("assist" if orientation < 0 else "attack")
        step = []
        for row in rows:  # central difference of g in each perturbed pixel
            plus, minus = list(pixels), list(pixels)
            plus[row] += 1e-7
            minus[row] -= 1e-7
            derivative = (loop_margin(phase, plus, clean) - loop_margin(phase, minus, clean)) / 2e-7
            assert abs(derivative) > 1e-3  # the sign is unambiguous
            step.append(math.copysign(1.0, orientation * derivative))
        for row, sign in zip(rows, step):
            moved = pixels[row] - ALPHA * sign
            pixels[row] = min(max(moved, clean[row] - EPS, 0.0), clean[row] + EPS, 1.0)
    return pixels, directions


def run_loss(phase, epoch, total_epochs=8):
    images = torch.tensor(PIXELS, dtype=torch.float64)[:, None]
    loss = TrideLoss(Identity(), eps=EPS, alpha=ALPHA, steps=STEPS, lam=LAM, phase=phase, orientation="assist",
                     progressive_alpha=False, distance=LpDistance(normalize_embeddings=False), collect_stats=True)
    loss.set_epoch(epoch, total_epochs)
    results = []
    attack = loss.attack
    loss.attack = lambda *args, **kwargs: results.append(attack(*args, **kwargs)) or results[-1]
    loss(images.clone(), LABELS, tuple(torch.tensor(column) for column in zip(*TRIPLETS)), inputs=images)
    result = results[0]
    adversarial = list(PIXELS)
    rows = sorted({p for _, p, _ in TRIPLETS} | {n for _, _, n in TRIPLETS}) if phase == "cap" else [0, 3]
    for row, value in zip(rows, result.adversarial.flatten().tolist()):
        adversarial[row] = value
    return loss, result, adversarial


@pytest.mark.parametrize("phase", ["cap", "anp"])
def test_every_step_direction_matches_the_loop_derivation(phase):
    expected, directions = loop_attack(phase, assist=True)
    loss, result, adversarial = run_loss(phase, epoch=2)  # 2 >= 8 / 4: assisting enabled
    assert "assist" in directions and "attack" in directions  # the case exercises both orientations
    assert result.steps_taken == STEPS and not result.stopped_early
    assert adversarial == pytest.approx(expected, abs=1e-9)
    assert loss.assist_steps == directions.count("assist")


@pytest.mark.parametrize("phase", ["cap", "anp"])
def test_assisting_is_disabled_for_the_first_quarter_of_the_epochs(phase):
    expected, directions = loop_attack(phase, assist=False)
    loss, result, adversarial = run_loss(phase, epoch=1)  # 1 < 8 / 4: the ICML stop
    assert result.stopped_early and result.steps_taken == len(directions) < STEPS
    assert adversarial == pytest.approx(expected, abs=1e-9)
    assert loss.assist_steps == 0
    stop = TrideLoss(Identity(), orientation="stop")
    stop.set_epoch(7, 8)
    assert not stop.assisting


def test_cap_trajectory_is_the_hand_derived_one():
    """CAP on these pixels: C = -0.27 + 0.1 k after k attacking steps, so steps 1-3 attack, then C crosses 0 and
    the adversary alternates: assist, attack, assist."""
    _, directions = loop_attack("cap", assist=True)
    assert directions == ["attack"] * 3 + ["assist", "attack", "assist"]


def test_orientation_needs_the_epoch_and_valid_combinations():
    images = torch.tensor(PIXELS)[:, None]
    loss = TrideLoss(Identity(), orientation="assist", progressive_alpha=False)
    with pytest.raises(RuntimeError, match="set_epoch"):
        loss(images.clone(), LABELS, tuple(torch.tensor(column) for column in zip(*TRIPLETS)), inputs=images)
    for kwargs in ({"awareness": "none"}, {"variant": "reference"}):
        with pytest.raises(ValueError, match="orientation"):
            TrideLoss(Identity(), orientation="assist", **kwargs)
    with pytest.raises(ValueError, match="orientation"):
        TrideLoss(Identity(), orientation="attack")
    assert TrideLoss(Identity()).orientation == "stop"
