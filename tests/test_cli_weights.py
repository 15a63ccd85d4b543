"""pml-tride train's --weights: ImageNet by default for resnet18, a local file, none; nothing is downloaded here."""

import importlib.util

import pytest
import torch

from pml_tride.cli import DEFAULT_BACKBONE_WEIGHTS, backbone_weights, build_parser, main
from pml_tride.models import load_model

needs_torchvision = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                                       reason="torchvision is not installed (pip install 'pml-tride[vision]')")


def test_resnet18_defaults_to_imagenet_weights():
    args = build_parser().parse_args(["train", "--model", "resnet18"])
    assert backbone_weights(args.weights) == DEFAULT_BACKBONE_WEIGHTS == "imagenet"
    assert backbone_weights("none") is None and backbone_weights("w.pth") == "w.pth"


@needs_torchvision
def test_train_starts_from_a_local_weights_file(image_folder_tree, tmp_path):
    from pml_tride.models import import_torchvision

    torch.manual_seed(1)
    state = import_torchvision().models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    out = tmp_path / "run"
    root = image_folder_tree(tmp_path / "pets", images_per_class=2)
    # lr 0: the trained model keeps the file's convolution weights
    assert main(["train", "--dataset", "image-folder", "--data-root", str(root), "--model", "resnet18", "--weights",
                 str(path), "--image-size", "32", "--batch-size", "4", "--epochs", "1", "--max-iters", "1", "--steps",
                 "1", "--lr", "0", "--embedding-dim", "8", "--out", str(out), "--quiet"]) == 0
    model = load_model(str(out / "model.pt"))
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


@needs_torchvision
def test_a_failed_download_is_a_clear_error(image_folder_tree, tmp_path, monkeypatch, capsys):
    from pml_tride.models import import_torchvision

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(import_torchvision().models.ResNet18_Weights, "get_state_dict", offline)
    root = image_folder_tree(tmp_path / "pets", images_per_class=2)
    assert main(["train", "--dataset", "image-folder", "--data-root", str(root), "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "could not download" in error and "--weights FILE" in error


def test_weights_are_for_resnet18_only(tmp_path, capsys):
    assert main(["train", "--dataset", "digits", "--weights", "imagenet", "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 2
    assert "--model resnet18" in capsys.readouterr().err
