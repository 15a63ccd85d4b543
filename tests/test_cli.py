import json
import os

import pytest
import torch

from pml_tride.cli import main, pixel_value
from pml_tride.models import save_model, small_cnn_embedder


def test_version_and_help(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "pml-tride" in capsys.readouterr().out
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def test_pixel_values():
    assert pixel_value("8/255") == pytest.approx(8 / 255) and pixel_value("0.5") == 0.5
    with pytest.raises(Exception, match="fraction"):
        pixel_value("eight")


def test_evaluate_a_saved_model(tmp_path, capsys):
    torch.manual_seed(0)
    model = small_cnn_embedder(embedding_dim=16, width=8)
    path = tmp_path / "model.pt"
    save_model(model, str(path))
    out = tmp_path / "report.json"
    code = main(["evaluate", "--checkpoint", str(path), "--image-size", "8", "--steps", "2", "--attacks", "CA+,ES:R",
                 "--max-batches", "1", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["raw"]) == {"CA+", "ES:D", "ES:R"} and len(report["trials"]["CA+"]["after"]) == 112
    assert (tmp_path / "report.md").exists() and "CA+" in capsys.readouterr().out


def test_train_then_evaluate_the_trainer_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--image-size", "8", "--epochs", "1", "--steps", "2",
                 "--batch-size", "50", "--max-iters", "2", "--out", str(out)]) == 0
    assert (out / "model.pt").exists() and (out / "epoch_1.pt").exists()
    report = tmp_path / "r.json"
    for checkpoint in ("epoch_1.pt", "model.pt"):  # both record the training image size; evaluate uses it
        assert main(["evaluate", "--checkpoint", str(out / checkpoint), "--steps", "1", "--attacks", "GTT",
                     "--max-batches", "1", "--out", str(report)]) == 0
        written = json.loads(report.read_text())
        assert "GTT" in written["raw"] and written["settings"]["image_size"] == 8
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--image-size", "12", "--steps", "1",
                 "--attacks", "GTT", "--max-batches", "1", "--out", str(report)]) == 0
    assert "trained on 8x8" in capsys.readouterr().err


def _summary_table(printed: str) -> list:
    """The rows of the demo's side-by-side table (the first table printed), header included, split into cells."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model |"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return [line.strip("| ").split(" | ") for line in lines[start:end]]


def test_demo_quick(tmp_path, capsys, caplog):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--image-size", "8", "--subclasses", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    for text in (printed.out, printed.err, caplog.text):  # nothing the user did not cause reads like an error
        assert "is missing" not in text and "error" not in text.lower()
    table = _summary_table(printed.out)
    assert table[0][:7] == ["model", "defense", "R@1", "base R@1", "chance R@1", "collapsed",
                            "entanglement d_intra/d_inter"]
    rows = {row[0]: row for row in table[2:]}
    assert list(rows) == ["undefended", "naive AT", "CA-TRIDE"]
    assert [row[1] for row in rows.values()] == ["none", "naive-at", "ca-tride"]
    reports = {name: json.loads((out / f"{stem}_report.json").read_text())
               for name, stem in (("undefended", "undefended"), ("naive AT", "naive_at"), ("CA-TRIDE", "ca_tride"))}
    undefended_r1 = reports["undefended"]["benign"]["R@1"]
    for name, report in reports.items():  # the printed flags are the report's
        assert rows[name][5] == ("YES" if report["collapsed"] else "no")
        assert rows[name][4] == f"{report['chance_r1']:.1f}"
        assert rows[name][3] == f"{report['benign']['base R@1']:.1f}"  # the digit, the entangled data's base class
        verdict = f"{name} COLLAPSED: its benign R@1 {report['benign']['R@1']:.1f}"
        assert (verdict in printed.out) == report["collapsed"]
        degraded = not report["collapsed"] and report["benign"]["R@1"] < undefended_r1 - 10
        assert (f"{name} DEGRADED: its benign R@1" in printed.out) == degraded
    assert "epoch 2, test: ARS" in printed.err
    monitored = [row for row in json.loads((out / "histories.json").read_text())["naive AT"] if "evaluation" in row]
    assert [row["epoch"] for row in monitored] == [1, 2]
    for name in ("undefended_report.json", "naive_at_report.json", "ca_tride_report.json", "summary.md",
                 "collapse_diagnostics.png", "ars_per_attack.png", "naive_at.pt"):
        assert os.path.getsize(out / name) > 0, name
    assert reports["CA-TRIDE"]["ers"] is not None and reports["CA-TRIDE"]["ars"] is not None
    assert reports["naive AT"]["entanglement"] is not None


def test_demo_on_plain_digits_compares_two_models(tmp_path, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr("pml_tride.demo.run_demo", lambda settings, **kwargs: ran.append(settings) or {})
    assert main(["demo", "--dataset", "digits", "--eval-steps", "3", "--out", str(tmp_path / "demo")]) == 0
    assert [name for name, _ in ran[0].models] == ["undefended", "CA-TRIDE"]
    assert (ran[0].dataset, ran[0].epochs, ran[0].train_steps, ran[0].eval_steps) == ("digits", 20, 10, 3)
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    assert [defense for _, defense in ran[1].models] == ["none", "naive-at", "ca-tride"]
    assert ran[1].dataset_options() == {"entanglement": ran[1].eps, "subclasses": 4}
    assert main(["demo", "--dataset", "digits", "--subclasses", "2"]) == 2
    assert "--subclasses only apply to --dataset entangled-digits" in capsys.readouterr().err


def test_errors_are_reported_with_exit_code_2(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["train", "--dataset", "cub", "--epochs", "1"]) == 2
    assert "root" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--model", "resnet18", "--epochs", "1"]) == 2
    assert "--model small_cnn" in capsys.readouterr().err


def test_train_takes_every_defense_and_the_defense_default_steps(tmp_path, capsys):
    from pml_tride.cli import build_parser
    from pml_tride.recipes import DEFENSES

    train = build_parser().parse_args(["train"])
    assert train.steps is None and train.lam is None
    for defense in DEFENSES:
        assert build_parser().parse_args(["train", "--defense", defense]).defense == defense
    out = tmp_path / "hm"
    # hm mines SPC-2 batches: digits has 5 training classes, so its batches of 50 repeat classes (SPC2Sampler)
    assert main(["train", "--dataset", "digits", "--image-size", "8", "--epochs", "1", "--defense", "hm", "--steps",
                 "1", "--batch-size", "49", "--max-iters", "1", "--out", str(out)]) == 2
    assert "SPC2SoftHardMiner, which needs SPC-2 batches" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--image-size", "8", "--epochs", "1", "--defense", "hm", "--steps",
                 "1", "--batch-size", "50", "--max-iters", "1", "--out", str(out)]) == 0
    assert (out / "model.pt").exists()
    assert main(["train", "--dataset", "digits", "--image-size", "8", "--defense", "est", "--lam", "5",
                 "--epochs", "1", "--out", str(out)]) == 2
    assert "'est'" in capsys.readouterr().err
