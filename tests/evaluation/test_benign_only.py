"""Benign-only evaluation: attacks="none" (or an empty tuple) and `pml-tride evaluate --attacks none`."""

import json

import pytest
import torch

from pml_tride.attacks import BaseRankingAttack, build_attacks
from pml_tride.cli import main
from pml_tride.datasets import Digits
from pml_tride.evaluation import RobustnessEvaluator, chance_recall_at_1
from pml_tride.models import save_model, small_cnn_embedder

IMAGE_SIZE = 8


@pytest.fixture
def no_attack_may_be_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an attack was built in a benign-only evaluation")

    monkeypatch.setattr(BaseRankingAttack, "__init__", refuse)


@pytest.mark.parametrize("attacks", ["none", (), []])
def test_benign_only_evaluator(attacks, no_attack_may_be_built):
    assert build_attacks(attacks) == []
    evaluator = RobustnessEvaluator(attacks=attacks, progress=False, use_faiss=False)
    torch.manual_seed(0)
    report = evaluator.evaluate(small_cnn_embedder(embedding_dim=16, width=8), Digits("test", image_size=IMAGE_SIZE))
    assert set(report.benign) == {"R@1", "R@2", "mAP", "NMI"} and report.raw == {} and report.trials == {}
    assert report.ers is None and report.ars is None and report.ars_per_attack == {} and report.ars_r1 is None
    assert report.chance_r1 == pytest.approx(chance_recall_at_1(Digits("test", image_size=IMAGE_SIZE).labels))
    assert report.collapsed in (True, False) and report.entanglement is not None
    assert report.settings["attacks"] == [] and report.settings["attacked_queries"] == 0
    assert report.benign_only and any("not measured" in note for note in report.notes())
    markdown = report.to_markdown()
    assert "not measured" in markdown and "ARS (table mode" not in markdown and "ERS" not in markdown.split("\n")[4]


def test_nothing_to_evaluate_raises():
    with pytest.raises(ValueError, match="nothing to evaluate"):
        RobustnessEvaluator(attacks="none", benign=False)


def test_evaluate_attacks_none_through_the_cli(tmp_path, capsys, no_attack_may_be_built):
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    save_model(small_cnn_embedder(embedding_dim=16, width=8), str(path),
               data={"dataset": "digits", "image_size": IMAGE_SIZE})
    out = tmp_path / "report.json"
    assert main(["evaluate", "--checkpoint", str(path), "--attacks", "none", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Attacks: none (benign-only evaluation): ERS and ARS not measured" in printed
    assert "chance R@1" in printed and "d_intra/d_inter" in printed
    report = json.loads(out.read_text())
    assert report["raw"] == {} and report["ers"] is None and report["ars"] is None
    assert report["chance_r1"] == pytest.approx(19.915, abs=1e-3) and report["entanglement"] is not None
    assert isinstance(report["collapsed"], bool) and any("not measured" in note for note in report["notes"])
    assert (tmp_path / "report.md").exists() and not (tmp_path / "report.png").exists()


class RaisingModel(torch.nn.Module):
    """Fails if it is ever called: settings errors must come before any embedding of the pool."""

    def forward(self, images):
        raise AssertionError("the model was called before the attack settings were checked")


@pytest.mark.parametrize("kwargs, match", [({"steps": -1}, "steps"), ({"attacks": ["CA+", "QA"]}, "QA"),
                                           ({"eps": 8.0}, "eps"), ({"alpha": -1 / 255}, "alpha")])
def test_attack_settings_fail_before_the_model_is_called(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RobustnessEvaluator(progress=False, **kwargs).evaluate(RaisingModel(), Digits("test", image_size=IMAGE_SIZE))


def test_the_cli_reports_bad_attack_settings_before_embedding(tmp_path, capsys, monkeypatch):
    path = tmp_path / "model.pt"
    save_model(small_cnn_embedder(embedding_dim=16, width=8), str(path))
    monkeypatch.setattr(RobustnessEvaluator, "build_pool", RaisingModel.forward)
    for argument, match in ((["--steps", "-1"], "steps must be an integer >= 0"),
                            (["--attacks", "CA+,XA"], "unknown attack names ['XA']"),
                            (["--eps", "8"], "--eps 8 is above 1")):
        assert main(["evaluate", "--checkpoint", str(path), "--image-size", str(IMAGE_SIZE), *argument]) == 2
        assert match in capsys.readouterr().err
