import pytest
import torch
from torch import nn

from pml_tride.models import Embedder, build_model, load_model, save_model, small_cnn_embedder


def test_embedder_normalises_inside_the_model():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(2 * 2 * 2, 3))
    model = Embedder(backbone, 3, 4, mean=(0.1, 0.2), std=(0.5, 0.25))
    images = torch.rand(5, 2, 2, 2)
    normalised = torch.stack([(images[:, 0] - 0.1) / 0.5, (images[:, 1] - 0.2) / 0.25], dim=1)
    assert torch.allclose(model(images), model.head(backbone(normalised)))
    unit = Embedder(backbone, 3, 4, mean=(0.1, 0.2), std=(0.5, 0.25), normalize_output=True)
    assert torch.allclose(unit(images).norm(dim=1), torch.ones(5))
    with pytest.raises(ValueError, match="expected images"):
        model(torch.rand(5, 3, 2, 2))
    with pytest.raises(ValueError, match="one value per channel"):
        Embedder(backbone, 3, 4, mean=(0.1,), std=(0.5, 0.5))


def test_small_cnn_shapes_and_input_gradient():
    model = small_cnn_embedder(in_channels=1, embedding_dim=16, width=8)
    images = torch.rand(4, 1, 16, 16, requires_grad=True)
    output = model(images)
    assert output.shape == (4, 16)
    (gradient,) = torch.autograd.grad(output.sum(), images)
    assert gradient.abs().sum() > 0


def test_save_load_round_trips(tmp_path):
    model = small_cnn_embedder(embedding_dim=8, width=4).eval()
    images = torch.rand(2, 1, 8, 8)
    path = tmp_path / "model.pt"
    save_model(model, str(path), data={"dataset": "digits", "image_size": 8})
    loaded = load_model(str(path))
    assert torch.allclose(loaded(images), model(images)) and loaded.data_info == {"dataset": "digits", "image_size": 8}
    state = torch.load(path, weights_only=True)
    state["model"]["kwargs"]["embedding_dim"] = 9
    torch.save(state, path)
    with pytest.raises(ValueError, match="do not fit a small_cnn"):
        load_model(str(path))
    scripted = tmp_path / "scripted.pt"
    torch.jit.script(model).save(str(scripted))
    assert torch.allclose(load_model(str(scripted))(images), model(images))
    pickled = tmp_path / "pickled.pt"
    torch.save(model, pickled)
    with pytest.raises(ValueError, match="trust_pickle"):
        load_model(str(pickled))
    assert torch.allclose(load_model(str(pickled), trust_pickle=True)(images), model(images))
    with pytest.raises(FileNotFoundError):
        load_model(str(tmp_path / "missing.pt"))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match="no pml-tride model"):
        load_model(str(foreign))
    with pytest.raises(ValueError, match="needs a model built"):
        save_model(nn.Linear(2, 2), str(tmp_path / "x.pt"))
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg")


def test_resnet18_embedder_with_local_weights(tmp_path):
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed (pip install 'pml-tride[vision]')")
    from pml_tride.models import import_torchvision, resnet18_embedder

    torchvision = import_torchvision()

    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = resnet18_embedder(embedding_dim=512, weights=str(path)).eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 512)
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    with pytest.raises(FileNotFoundError):
        resnet18_embedder(weights=str(tmp_path / "missing.pth"))


def test_failed_imagenet_download_says_how_to_pass_a_file(monkeypatch):
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed (pip install 'pml-tride[vision]')")
    from pml_tride.models import import_torchvision, resnet18_embedder

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(import_torchvision().models.ResNet18_Weights, "get_state_dict", offline)
    with pytest.raises(ConnectionError, match="weights='/path/to/resnet18"):
        resnet18_embedder(weights="imagenet")


def test_import_torchvision_works_next_to_this_torch():
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed")
    from pml_tride.models import import_torchvision

    torchvision = import_torchvision()
    assert torchvision.models.resnet18(weights=None).fc.in_features == 512
