"""Bad command-line input is refused with exit code 2 and one message naming the flag and the fix, before any
data is loaded or any model is built."""

import logging

import pytest
import torch
import torch.serialization

from pml_tride.cli import main
from pml_tride.models import save_model, small_cnn_embedder

TINY_TRAIN = ["--dataset", "digits", "--image-size", "8", "--steps", "1", "--batch-size", "50", "--max-iters", "1"]


def _never(*args, **kwargs):
    raise AssertionError("heavy work started before the arguments were checked")


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Loading data, loading a model or running the demo fails the test."""
    monkeypatch.setattr("pml_tride.datasets.build_dataset", _never)
    monkeypatch.setattr("pml_tride.models.load_model", _never)
    monkeypatch.setattr("pml_tride.demo.run_demo", _never)


def _error(capsys) -> str:
    return capsys.readouterr().err.strip()


def _saved_model(tmp_path) -> str:
    path = tmp_path / "model.pt"
    save_model(small_cnn_embedder(embedding_dim=16, width=8), str(path))
    return str(path)


def _claiming_cuda(monkeypatch, save) -> None:
    """Run ``save`` with every storage tagged as living on cuda:0, as torch.save on a GPU machine writes it."""
    registry = list(torch.serialization._package_registry)
    monkeypatch.setattr(torch.serialization, "_package_registry", registry)
    torch.serialization.register_package(0, lambda storage: "cuda:0", lambda storage, location: None)
    try:
        save()
    finally:
        registry.pop(0)


@pytest.mark.parametrize("command", [["demo", "--quick"], ["train", "--epochs", "1"], ["evaluate", "--checkpoint",
                                                                                        "model.pt"]])
def test_a_device_torch_does_not_know(command, no_heavy_work, capsys):
    assert main([*command, "--device", "gpu"]) == 2
    assert _error(capsys).endswith("error: --device 'gpu' is not a torch device: use cpu, cuda or cuda:<index> "
                                   "(mps on Apple silicon)")


@pytest.mark.parametrize("command", [["demo", "--quick"], ["train", "--epochs", "1"], ["evaluate", "--checkpoint",
                                                                                        "model.pt"]])
def test_cuda_on_a_machine_without_cuda(command, no_heavy_work, monkeypatch, capsys):
    if torch.cuda.is_available():  # on a CUDA machine, play one without (a CPU-only machine runs it for real)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([*command, "--device", "cuda"]) == 2
    message = _error(capsys)
    assert "--device cuda: torch finds no CUDA device on this machine" in message
    assert "use --device cpu, or install a CUDA build of torch" in message


def test_a_cuda_index_the_machine_does_not_have(no_heavy_work, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert main(["train", "--epochs", "1", "--device", "cuda:2"]) == 2
    assert "--device cuda:2: this machine has 2 CUDA device(s), cuda:0 to cuda:1" in _error(capsys)


@pytest.mark.parametrize("flag", ["--eps", "--alpha"])
@pytest.mark.parametrize("command", [["train", "--epochs", "1"], ["evaluate", "--checkpoint", "model.pt"]])
def test_budgets_out_of_pixel_range(command, flag, no_heavy_work, capsys):
    assert main([*command, flag, "8"]) == 2
    assert f"{flag} 8 is above 1: budgets are in pixel units of images in [0, 1], e.g. {flag} 8/255" in _error(capsys)
    assert main([*command, flag, "-0.1"]) == 2
    assert f"{flag} must be >= 0, got -0.1" in _error(capsys)


def test_demo_budget_out_of_pixel_range(no_heavy_work, capsys):
    assert main(["demo", "--eps", "16"]) == 2
    assert "--eps 16 is above 1" in _error(capsys)


@pytest.mark.parametrize("command", [["train"], ["demo"]])
def test_no_epochs(command, no_heavy_work, capsys):
    assert main([*command, "--epochs", "0"]) == 2
    assert "--epochs must be >= 1, got 0" in _error(capsys)


def test_a_batch_that_cannot_hold_a_pair(no_heavy_work, capsys):
    assert main(["train", "--epochs", "1", "--batch-size", "1"]) == 2
    assert "--batch-size must be >= 2 (a triplet needs two images of a class), got 1" in _error(capsys)
    assert main(["evaluate", "--checkpoint", "model.pt", "--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1, got 0" in _error(capsys)


@pytest.mark.parametrize("defense", ["est", "act", "hm"])
def test_an_odd_batch_for_a_defense_that_mines_spc2_batches(defense, no_heavy_work, capsys):
    assert main(["train", "--epochs", "1", "--defense", defense, "--batch-size", "49"]) == 2
    message = _error(capsys)
    assert f"--batch-size 49: defense {defense!r} mines with SPC2" in message
    assert "use an even size, e.g. --batch-size 50" in message


def test_an_odd_batch_is_fine_for_ca_tride(monkeypatch, capsys):
    monkeypatch.setattr("pml_tride.datasets.build_dataset", _never)
    with pytest.raises(AssertionError, match="heavy work"):  # the checks passed: the run went on to load the data
        main(["train", "--epochs", "1", "--batch-size", "49"])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", *TINY_TRAIN, "--epochs", "1", "--defense", "ca-tride", "--out", str(out)]) == 0
    return out


def test_checkpoints_record_the_run(trained_run):
    expected = {"model": "small_cnn", "embedding_dim": 64, "defense": "ca-tride", "dataset": "digits", "image_size": 8}
    for name in ("latest.pt", "model.pt"):
        assert torch.load(trained_run / name, weights_only=True)["run"] == expected


@pytest.mark.parametrize("change, difference", [
    (["--defense", "hm"], "--defense ca-tride there, hm here"),
    (["--embedding-dim", "32"], "--embedding-dim 64 there, 32 here"),
    (["--image-size", "16"], "--image-size 8 there, 16 here"),
])
def test_resume_from_another_run(trained_run, change, difference, no_heavy_work, capsys):
    arguments = ["train", *TINY_TRAIN, "--epochs", "2", "--out", str(trained_run / "next"),
                 "--resume", str(trained_run / "latest.pt"), *change]
    assert main(arguments) == 2
    message = _error(capsys)
    assert f"--resume {trained_run / 'latest.pt'} is a checkpoint of another run ({difference})" in message
    assert "pass the same settings to continue it, or write the new run to another --out" in message


def test_resume_from_a_model_file(trained_run, no_heavy_work, capsys):
    assert main(["train", *TINY_TRAIN, "--epochs", "2", "--resume", str(trained_run / "model.pt")]) == 2
    assert "not a training checkpoint" in _error(capsys)


def test_resume_from_a_checkpoint_without_its_run_warns(trained_run, tmp_path, caplog):
    state = torch.load(trained_run / "latest.pt", weights_only=True)
    del state["run"]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    with caplog.at_level(logging.WARNING, logger="pml_tride"):
        assert main(["train", *TINY_TRAIN, "--epochs", "2", "--out", str(tmp_path / "resumed"),
                     "--resume", str(old)]) == 0
    assert "does not record its --defense, --dataset (an older checkpoint)" in caplog.text


def test_resume_a_checkpoint_written_on_a_gpu(trained_run, tmp_path, monkeypatch):
    state = torch.load(trained_run / "latest.pt", weights_only=True)
    gpu = tmp_path / "gpu.pt"
    _claiming_cuda(monkeypatch, lambda: torch.save(state, gpu))
    if not torch.cuda.is_available():  # the file really claims CUDA storages
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(gpu, weights_only=True)
    assert main(["train", *TINY_TRAIN, "--epochs", "2", "--device", "cpu", "--out", str(tmp_path / "resumed"),
                 "--resume", str(gpu)]) == 0
    assert (tmp_path / "resumed" / "epoch_2.pt").exists()
