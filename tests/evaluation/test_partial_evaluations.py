"""What a partial evaluation reports: the attack mode, per-attack ARS of the attacks that ran, and table-mode ARS
relative to the attacked queries' own clean R@1."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from pml_tride.evaluation import ARS_ATTACKS, RobustnessEvaluator, RobustnessReport


def toy_set(count=60, classes=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat(count // classes)
    prototypes = torch.rand(classes, 3, 4, 4, generator=generator)
    images = 0.2 * prototypes[labels] + 0.8 * torch.rand(count, 3, 4, 4, generator=generator)
    return TensorDataset(images, labels)


def toy_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 8))


def brute_force_r1(model, dataset, rows):
    with torch.no_grad():
        embeddings = F.normalize(model(dataset.tensors[0]), dim=1)
    labels = dataset.tensors[1]
    hits = 0
    for row in rows:
        best, best_distance = None, float("inf")
        for other in range(len(labels)):
            distance = torch.dist(embeddings[row], embeddings[other]).item()
            if other != row and distance < best_distance:
                best, best_distance = other, distance
        hits += int(labels[best] == labels[row])
    return 100 * hits / len(rows)


def test_markdown_states_the_attack_mode():
    for compat in (False, True):
        report = RobustnessEvaluator(attacks=["GTM"], steps=1, batch_size=16, robrank_compat=compat,
                                     progress=False).evaluate(toy_model(), toy_set())
        first_line = report.to_markdown().splitlines()[0]
        assert f"robrank_compat={compat}" in first_line and "60 of 60 test images" in first_line


def test_per_attack_ars_of_the_attacks_that_ran_and_no_overall():
    report = RobustnessEvaluator(attacks=["CA+", "QA-", "ES:R"], steps=2, batch_size=16, progress=False).evaluate(
        toy_model(), toy_set())
    assert set(report.ars_per_attack) == {"CA+", "QA-", "ES:R"} and report.ars is None
    assert set(report.ars_per_trial) == {"CA+", "QA-", "ES:R"}
    ars_row = report.to_markdown().splitlines()[-1].split("|")[2:-1]
    cells = dict(zip(list(ARS_ATTACKS) + ["overall"], (cell.strip() for cell in ars_row)))
    for name in ("CA+", "QA-", "ES:R"):
        assert cells[name] == f"{report.ars_per_attack[name]:.1f} ({report.ars_per_trial[name]:.1f})"
    for name in ("CA-", "QA+", "LTM", "GTM", "GTT", "overall"):
        assert cells[name] == "- (-)"


@pytest.mark.parametrize("subset", [{"max_batches": 1}, {"queries": 20}])
def test_table_mode_ars_uses_the_attacked_queries_clean_r1(subset, tmp_path):
    model, dataset = toy_model(), toy_set()
    evaluator = RobustnessEvaluator(steps=2, batch_size=16, progress=False, **subset)
    report = evaluator.evaluate(model, dataset)
    rows = evaluator.attacked_indices(len(dataset)).tolist()
    assert len(rows) == (16 if "max_batches" in subset else 20) and report.settings["attacked_queries"] == len(rows)
    assert report.trials["ES:R"].query_index.tolist() == rows
    assert report.ars_r1 == pytest.approx(brute_force_r1(model, dataset, rows))
    assert report.ars_r1 != pytest.approx(report.benign["R@1"])  # the subset's recall is not the test set's
    for name in ("ES:R", "LTM", "GTM"):
        assert report.ars_per_attack[name] == pytest.approx(100 * report.raw[name] / report.ars_r1)
    report.to_json(str(tmp_path / "report.json"))
    assert RobustnessReport.from_json(str(tmp_path / "report.json")).ars_r1 == report.ars_r1


def test_whole_test_set_divides_by_the_benign_r1():
    report = RobustnessEvaluator(attacks=["ES:R"], steps=1, batch_size=16, progress=False).evaluate(
        toy_model(), toy_set())
    assert report.ars_r1 == report.benign["R@1"]


def test_queries_validation():
    with pytest.raises(ValueError, match="queries"):
        RobustnessEvaluator(queries=0)
