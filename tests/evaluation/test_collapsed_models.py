"""A collapsed model (R@1 near chance) is flagged in the report, its outputs and the tester; a good one is not."""

import json
import logging
import math

import pytest
import torch
from torch import nn

from pml_tride.datasets import Digits
from pml_tride.evaluation import (
    RobustnessEvaluator,
    RobustnessReport,
    RobustnessTester,
    chance_recall_at_1,
    collapse_threshold,
    robustness_metrics,
)

IMAGE_SIZE = 8
FAST = {"steps": 2, "queries": 56, "batch_size": 56, "progress": False, "use_faiss": False}


class ScrambledEmbedder(nn.Module):
    """A collapsed embedding: a constant plus a small, high-frequency scramble of the pixels (no class
    information survives the sine), so its R@1 sits at chance."""

    def __init__(self, pixels: int = IMAGE_SIZE * IMAGE_SIZE, dim: int = 16, frequency: float = 100.0,
                 noise: float = 0.01, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(pixels, dim, generator=generator))
        self.register_buffer("constant", torch.randn(dim, generator=generator))
        self.frequency, self.noise = frequency, noise

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.constant + self.noise * torch.sin(self.frequency * images.flatten(1) @ self.projection)


@pytest.fixture(scope="module")
def digits():
    return Digits("test", image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def collapsed_report(digits):
    return RobustnessEvaluator(**FAST).evaluate(ScrambledEmbedder(), digits)


@pytest.fixture(scope="module")
def pixel_report(digits):
    return RobustnessEvaluator(**FAST).evaluate(nn.Flatten(), digits)


def test_a_scrambled_model_is_flagged(collapsed_report, digits, tmp_path):
    chance = chance_recall_at_1(digits.labels)
    assert collapsed_report.chance_r1 == pytest.approx(chance)
    assert abs(collapsed_report.benign["R@1"] - chance) < 5  # at chance
    assert collapsed_report.benign["R@1"] <= collapse_threshold(chance) and collapsed_report.collapsed is True
    markdown = collapsed_report.to_markdown("scrambled")
    assert "COLLAPSED" in markdown and "do not measure robustness" in markdown
    assert "| scrambled |" in markdown and "| yes |" in markdown
    assert "d_intra/d_inter" in markdown and f"| {collapsed_report.entanglement:.3f} |" in markdown
    assert collapsed_report.entanglement == pytest.approx(1.0, abs=0.02)  # classes entirely mixed
    path = tmp_path / "report.json"
    collapsed_report.to_json(str(path))
    state = json.loads(path.read_text())
    assert state["collapsed"] is True and state["chance_r1"] == pytest.approx(chance)
    assert state["entanglement"] == collapsed_report.entanglement
    assert any("do not measure robustness" in note for note in state["notes"])
    loaded = RobustnessReport.from_json(str(path))
    assert loaded.collapsed is True and loaded.chance_r1 == collapsed_report.chance_r1


def test_pixels_as_embedding_are_not_collapsed(pixel_report):
    assert pixel_report.benign["R@1"] > 90 and pixel_report.collapsed is False
    assert pixel_report.entanglement < 0.9 and pixel_report.entanglement_items == 896
    markdown = pixel_report.to_markdown()
    assert "not collapsed" in markdown and "COLLAPSED" not in markdown
    assert not any("collapsed" in note.lower() for note in pixel_report.notes())


def test_ars_above_100_is_explained():
    report = RobustnessReport(benign={"R@1": 20.0}, raw={}, trials={}, ars_per_attack={"CA+": 130.0, "GTT": 40.0,
                                                                                       "QA+": 100.04},
                              ars_per_trial={"ES:R": 104.0})  # QA+ shows as 100.0: not above
    assert report.ars_above_100() == ["CA+", "ES:R (per trial)"]
    assert any("ARS above 100 (CA+, ES:R (per trial))" in note and "not extra robustness" in note
               for note in report.notes())
    assert not any("ARS above 100" in note for note in RobustnessReport({"R@1": 20.0}, {}, {}).notes())


def test_metrics_carry_chance_and_the_flag(collapsed_report, pixel_report):
    collapsed, pixels = robustness_metrics(collapsed_report), robustness_metrics(pixel_report)
    assert collapsed["collapsed"] == 1.0 and pixels["collapsed"] == 0.0
    assert collapsed["chance_R_at_1"] == pytest.approx(collapsed_report.chance_r1)
    assert pixels["entanglement"] == pixel_report.entanglement
    tester = RobustnessTester(select="R@1", **FAST)
    assert tester.score(collapsed_report, collapsed) == -math.inf
    assert tester.score(pixel_report, pixels) == pytest.approx(pixel_report.benign["R@1"])
    assert RobustnessTester(select=lambda report: 1e9, **FAST).score(collapsed_report, collapsed) == -math.inf


class FakeTrainer:
    def __init__(self, model):
        self.models, self.epoch = {"trunk": model}, 0


def run_hook(models, digits, tmp_path, patience=None):
    """Epochs 1, 2, ... with the given models; returns the tester and whether training went on."""
    tester = RobustnessTester(select="ARS", attacks=["CA+", "ES:R"], **FAST)
    best = tmp_path / "best.pt"
    hook = tester.end_of_epoch_hook({"test": digits}, best_checkpoint=str(best), patience=patience)
    trainer, going_on = FakeTrainer(models[0]), True
    for epoch, model in enumerate(models, start=1):
        trainer.epoch, trainer.models["trunk"] = epoch, model
        going_on = hook(trainer)
    return tester, going_on, best


def test_tester_never_selects_a_collapsed_epoch(digits, tmp_path, caplog):
    tester, _, best = run_hook([nn.Flatten(), ScrambledEmbedder()], digits, tmp_path)
    scores = [row["score"] for row in tester.history]
    assert scores[1] == -math.inf and tester.history[1]["collapsed"] == 1.0
    assert tester.best_epoch == 1 and best.exists()
    with caplog.at_level(logging.WARNING, logger="pml_tride"):
        tester, going_on, best = run_hook([ScrambledEmbedder(seed=1), ScrambledEmbedder(seed=2)], digits,
                                          tmp_path / "all_collapsed", patience=0)
    assert tester.best_epoch is None and tester.best_score is None and not best.exists()
    assert going_on is False  # patience counted from the first tested epoch
    assert "no epoch qualifies yet" in caplog.text


class WithBaseLabels(torch.utils.data.Dataset):
    """The digits relabelled into fine classes (label * 2 + item parity) with the digit as the base label."""

    def __init__(self, digits):
        self.digits = digits
        self.base_labels = digits.labels
        self.labels = digits.labels * 2 + torch.arange(len(digits)) % 2

    def __len__(self):
        return len(self.digits)

    def __getitem__(self, index):
        return self.digits[index][0], int(self.labels[index])


def test_a_data_set_with_base_labels_gets_the_base_r1_by_brute_force(digits):
    fine = WithBaseLabels(digits)
    report = RobustnessEvaluator(**FAST, attacks="none").evaluate(nn.Flatten(), fine)
    embeddings = torch.nn.functional.normalize(fine.digits.images.flatten(1), dim=1)
    distances = torch.cdist(embeddings, embeddings)
    hits = 0
    for query in range(len(fine)):  # the nearest other item (ties by index) has the query's digit
        nearest = min((j for j in range(len(fine)) if j != query), key=lambda j: (float(distances[query, j]), j))
        hits += int(fine.base_labels[nearest] == fine.base_labels[query])
    assert report.benign["base R@1"] == pytest.approx(100 * hits / len(fine), abs=1e-9)
    assert report.benign["base R@1"] > report.benign["R@1"]  # the parity half of each class is not in the pixels
    plain = RobustnessEvaluator(**FAST, attacks="none").evaluate(nn.Flatten(), digits)
    assert "base R@1" not in plain.benign
