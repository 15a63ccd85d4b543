"""load_model: checkpoints written on a GPU load on a CPU machine; an unreadable file never suggests unpickling,
a file that really needs it says why it is unsafe."""

import pytest
import torch
import torch.serialization

from pml_tride.cli import main
from pml_tride.models import load_model, save_model, small_cnn_embedder


def _model():
    torch.manual_seed(0)
    return small_cnn_embedder(embedding_dim=16, width=8)


def test_a_checkpoint_written_on_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    model = _model()
    path = tmp_path / "gpu.pt"
    registry = list(torch.serialization._package_registry)  # tag every storage cuda:0, as a GPU machine writes it
    monkeypatch.setattr(torch.serialization, "_package_registry", registry)
    torch.serialization.register_package(0, lambda storage: "cuda:0", lambda storage, location: None)
    save_model(model, str(path))
    registry.pop(0)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    loaded = load_model(str(path), map_location=torch.device("cpu"))
    images = torch.rand(3, 1, 8, 8)
    assert next(loaded.parameters()).device.type == "cpu"
    assert torch.equal(loaded(images), model.eval()(images))


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b""])
def test_an_unreadable_file_does_not_suggest_unpickling(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="cannot be read as a model") as raised:
        load_model(str(path))
    assert "pickle" not in str(raised.value)


def test_a_truncated_checkpoint_does_not_suggest_unpickling(tmp_path):
    path = tmp_path / "model.pt"
    save_model(_model(), str(path))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated or corrupted") as raised:
        load_model(str(path))
    assert "pickle" not in str(raised.value)


def test_a_pickled_module_names_what_it_holds_and_why_it_is_unsafe(tmp_path, capsys):
    path = tmp_path / "pickled.pt"
    torch.save(_model(), path)
    with pytest.raises(ValueError) as raised:
        load_model(str(path))
    message = str(raised.value)
    assert "pml_tride.models.embedder.Embedder" in message and "unpickling can run arbitrary code" in message
    assert "--trust-pickle" in message
    assert main(["evaluate", "--checkpoint", str(path)]) == 2
    assert "unpickling can run arbitrary code" in capsys.readouterr().err
