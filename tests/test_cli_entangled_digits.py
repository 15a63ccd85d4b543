import json
import logging

import pytest
import torch

from pml_tride.cli import main
from pml_tride.models import save_model, small_cnn_embedder

TINY_TRAINING = ["--image-size", "8", "--epochs", "1", "--steps", "1", "--batch-size", "20", "--max-iters", "1"]
TINY_EVALUATION = ["--steps", "1", "--attacks", "GTT", "--max-batches", "1"]


def test_train_records_the_entanglement_and_evaluate_follows_it(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "entangled-digits", "--entanglement", "8/255", "--subclasses", "3",
                 "--defense", "none", *TINY_TRAINING, "--out", str(out)]) == 0
    data = torch.load(out / "model.pt", weights_only=True)["data"]
    assert data == {"dataset": "entangled-digits", "image_size": 8, "entanglement": 8 / 255, "subclasses": 3}
    report = tmp_path / "r.json"
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--dataset", "entangled-digits",
                 *TINY_EVALUATION, "--out", str(report)]) == 0
    settings = json.loads(report.read_text())["settings"]
    assert (settings["entanglement"], settings["subclasses"], settings["image_size"]) == (8 / 255, 3, 8)
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--dataset", "entangled-digits",
                 "--subclasses", "2", *TINY_EVALUATION, "--out", str(report)]) == 0
    settings = json.loads(report.read_text())["settings"]
    assert (settings["entanglement"], settings["subclasses"]) == (8 / 255, 2)  # the flag wins over the record


def test_the_options_are_refused_for_other_data_sets_and_checked(tmp_path, capsys):
    assert main(["train", "--dataset", "digits", "--entanglement", "16/255", *TINY_TRAINING,
                 "--out", str(tmp_path)]) == 2
    assert "--entanglement only apply to --dataset entangled-digits, not digits" in capsys.readouterr().err
    model = tmp_path / "model.pt"
    save_model(small_cnn_embedder(embedding_dim=8, width=4), str(model))
    assert main(["evaluate", "--checkpoint", str(model), "--dataset", "cub", "--data-root", str(tmp_path),
                 "--subclasses", "2"]) == 2
    assert "--subclasses only apply to --dataset entangled-digits, not cub" in capsys.readouterr().err
    assert main(["train", "--dataset", "entangled-digits", "--subclasses", "1", *TINY_TRAINING,
                 "--out", str(tmp_path)]) == 2
    assert "subclasses (sub-classes per digit) must be an integer >= 2" in capsys.readouterr().err


def test_train_takes_lam_auto(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "entangled-digits", "--lam", "auto", *TINY_TRAINING, "--out", str(out)]) == 0
    loss_state = torch.load(out / "epoch_1.pt", weights_only=True)["loss_funcs"]["metric_loss"]
    adaptive = loss_state["adaptive_lambda._extra_state"]
    assert adaptive["batches"] == 1 and 0 <= adaptive["lam"] <= 10
    with pytest.raises(SystemExit):
        main(["train", "--lam", "automatic"])
    assert "expected a number or 'auto'" in capsys.readouterr().err


def test_resume_checks_the_entanglement_and_the_subclasses(tmp_path, capsys, caplog):
    out = tmp_path / "run"
    entangled = ["train", "--dataset", "entangled-digits", "--defense", "none", *TINY_TRAINING]
    assert main([*entangled, "--entanglement", "8/255", "--out", str(out)]) == 0
    latest = out / "latest.pt"
    run = torch.load(latest, weights_only=True)["run"]
    assert (run["entanglement"], run["subclasses"]) == (8 / 255, 4)  # the default sub-classes filled in
    capsys.readouterr()
    assert main([*entangled, "--epochs", "2", "--entanglement", "16/255", "--out", str(out / "a"),
                 "--resume", str(latest)]) == 2
    message = capsys.readouterr().err
    assert f"--resume {latest} is a checkpoint of another run (--entanglement 0.0313725 there, 0.0627451 here)" \
        in message
    assert main([*entangled, "--epochs", "2", "--entanglement", "8/255", "--subclasses", "3", "--out",
                 str(out / "b"), "--resume", str(latest)]) == 2
    assert "(--subclasses 4 there, 3 here)" in capsys.readouterr().err
    state = torch.load(latest, weights_only=True)  # a checkpoint from before the options were recorded
    state["run"] = {key: value for key, value in state["run"].items() if key not in ("entanglement", "subclasses")}
    older = tmp_path / "older.pt"
    torch.save(state, older)
    with caplog.at_level(logging.WARNING, logger="pml_tride"):
        assert main([*entangled, "--epochs", "2", "--entanglement", "8/255", "--out", str(out / "c"),
                     "--resume", str(older)]) == 0
    assert "does not record its --entanglement, --subclasses (an older checkpoint)" in caplog.text
