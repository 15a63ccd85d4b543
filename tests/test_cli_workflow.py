"""The CLI's workflow options: --quiet/--verbose everywhere, output folders checked first, train --eval-every."""

import json

import pytest
import torch

from pml_tride.cli import build_parser, main
from pml_tride.models import save_model, small_cnn_embedder


def saved_model(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    save_model(small_cnn_embedder(embedding_dim=16, width=8), str(path))
    return path


@pytest.mark.parametrize("command", ["demo", "train", "evaluate"])
def test_every_command_takes_quiet_and_verbose(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "--quiet" in text and "--verbose" in text
    with pytest.raises(SystemExit):
        main([command, "--quiet", "--verbose"])
    assert "not allowed with" in capsys.readouterr().err


def test_robrank_compat_help_names_every_quirk():
    text = build_parser()._subparsers._group_actions[0].choices["evaluate"].format_help()
    for quirk in ("GTM", "LTM", "ES:D", "CA+/QA+/TMA"):
        assert quirk in text


def test_evaluate_creates_the_output_folder_and_shows_per_attack_ars(tmp_path, capsys):
    out = tmp_path / "some" / "new" / "dir" / "report.json"
    assert main(["evaluate", "--checkpoint", str(saved_model(tmp_path)), "--image-size", "8", "--steps", "2",
                 "--attacks", "CA+,QA-,ES:R", "--max-batches", "1", "--out", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert (out.parent / "report.md").exists()
    printed = capsys.readouterr()
    assert "robrank_compat=False" in printed.out and "attacks:" not in printed.err  # --quiet: no progress bar
    ars_row = [line for line in printed.out.splitlines() if line.startswith("| model.pt |")][-1]
    for name in ("CA+", "QA-", "ES:R"):
        assert f"{report['ars_per_attack'][name]:.1f} (" in ars_row
    assert ars_row.rstrip(" |").endswith("- (-)")


def test_unwritable_output_fails_before_the_evaluation(tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the evaluation ran although its output cannot be written")

    monkeypatch.setattr("pml_tride.evaluation.RobustnessEvaluator.evaluate", never)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["evaluate", "--checkpoint", str(saved_model(tmp_path)), "--out", str(blocker / "report.json")]) == 2
    assert "a_file" in capsys.readouterr().err
    assert main(["train", "--epochs", "1", "--out", str(blocker / "run")]) == 2
    assert main(["demo", "--quick", "--out", str(blocker / "demo")]) == 2


def test_train_monitors_robustness_every_epoch(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--image-size", "8", "--epochs", "2", "--steps", "1", "--batch-size", "50",
                 "--max-iters", "2", "--out", str(out), "--eval-every", "1", "--eval-queries", "20",
                 "--eval-steps", "1", "--eval-attacks", "CA+,ES:R", "--eval-select", "R@1"]) == 0
    rows = json.loads((out / "robustness.json").read_text())
    assert [row["epoch"] for row in rows] == [1, 2]
    assert all(row["score"] == row["R_at_1"] and row["ARS"] == row["ARS"] for row in rows)
    best = max(rows, key=lambda row: row["score"])["epoch"]
    assert torch.load(str(out / "best.pt"), weights_only=True)["epoch"] == best
    history = torch.load(str(out / "epoch_2.pt"), weights_only=True)["ranks"][0]["history"]  # rank 0's history
    assert [row["epoch"] for row in history if row.get("evaluation") == "test"] == [1, 2]
    assert "epoch 2, test: ARS" in capsys.readouterr().err


def test_quiet_hides_information_and_progress_bars(tmp_path, capsys):
    assert main(["train", "--image-size", "8", "--epochs", "1", "--steps", "1", "--batch-size", "50",
                 "--max-iters", "1", "--out", str(tmp_path / "run"), "--eval-every", "1", "--eval-queries", "10",
                 "--eval-steps", "1", "--eval-attacks", "GTT", "--quiet"]) == 0
    printed = capsys.readouterr()
    assert "ARS" not in printed.err and "epochs" not in printed.err and "total_loss" not in printed.err
    assert "trained none" not in printed.out and "trained ca-tride" in printed.out


TINY_MONITORED_TRAIN = ["train", "--image-size", "8", "--epochs", "1", "--steps", "1", "--batch-size", "50",
                        "--max-iters", "1", "--eval-queries", "10", "--eval-steps", "1", "--eval-attacks", "GTT",
                        "--quiet"]


def test_train_says_no_epoch_was_selected_when_every_monitored_epoch_collapsed(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("pml_tride.evaluation.robustness_report.is_collapsed", lambda *args, **kwargs: True)
    out = tmp_path / "run"
    assert main([*TINY_MONITORED_TRAIN, "--eval-every", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no epoch selected: every monitored epoch was collapsed (benign R@1 within 10% of the way" in printed
    assert "no best.pt written" in printed and "best epoch by" not in printed
    assert json.loads((out / "robustness.json").read_text())[0]["collapsed"] == 1.0
    assert not (out / "best.pt").exists()


def test_train_says_no_epoch_was_monitored_when_eval_every_exceeds_the_epochs(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY_MONITORED_TRAIN, "--eval-every", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no epoch selected: no epoch was monitored (--eval-every 2, --epochs 1); no best.pt written" in printed
    assert not (out / "best.pt").exists()
