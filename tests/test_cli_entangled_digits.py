import json

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
