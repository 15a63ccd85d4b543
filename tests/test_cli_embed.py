import numpy as np
import pytest
import torch

from pml_tride.cli import main
from pml_tride.datasets import Digits
from pml_tride.models import load_model, save_model, small_cnn_embedder


@pytest.fixture
def saved_model(tmp_path):
    torch.manual_seed(0)
    model = small_cnn_embedder(embedding_dim=16, width=8)
    path = tmp_path / "model.pt"
    save_model(model, str(path), data={"dataset": "digits", "image_size": 8})
    return path


@pytest.mark.parametrize("split", ["train", "test"])
def test_embed_writes_the_models_embeddings_and_labels(saved_model, tmp_path, capsys, split):
    out = tmp_path / "emb" / "digits.npy"
    assert main(["embed", "--checkpoint", str(saved_model), "--dataset", "digits", "--split", split,
                 "--batch-size", "50", "--device", "cpu", "--workers", "0", "--out", str(out)]) == 0
    embeddings, labels = np.load(out), np.load(tmp_path / "emb" / "digits.labels.npy")
    dataset = Digits(split=split, image_size=8)  # the size recorded in the checkpoint
    model = load_model(str(saved_model))
    with torch.no_grad():
        expected = model(dataset.images).numpy()
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(dataset), 16)
    np.testing.assert_allclose(embeddings, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, dataset.labels.numpy())
    assert "written" in capsys.readouterr().out


def test_embed_with_loader_workers_gives_the_same_embeddings(saved_model, tmp_path):
    paths = [tmp_path / f"w{workers}.npy" for workers in (0, 2)]
    for workers, path in zip((0, 2), paths):
        assert main(["embed", "--checkpoint", str(saved_model), "--image-size", "8", "--workers", str(workers),
                     "--batch-size", "200", "--out", str(path), "--quiet"]) == 0
    np.testing.assert_array_equal(np.load(paths[0]), np.load(paths[1]))


def test_embed_errors(saved_model, tmp_path, capsys):
    assert main(["embed", "--checkpoint", str(saved_model), "--out", str(tmp_path / "e.txt")]) == 2
    assert ".npy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["embed", "--checkpoint", str(saved_model), "--workers", "-1"])
    assert "non-negative" in capsys.readouterr().err


def test_embed_uses_the_test_transform_on_the_train_split(image_folder_tree, tmp_path):
    root = image_folder_tree(tmp_path / "pets")
    torch.manual_seed(0)
    path = tmp_path / "rgb.pt"
    save_model(small_cnn_embedder(in_channels=3, embedding_dim=8, width=4), str(path))
    outputs = [tmp_path / f"run{run}.npy" for run in range(2)]
    for out in outputs:  # a random crop or flip would make the two runs differ
        assert main(["embed", "--checkpoint", str(path), "--dataset", "image-folder", "--data-root", str(root),
                     "--split", "train", "--image-size", "12", "--out", str(out), "--quiet"]) == 0
    np.testing.assert_array_equal(np.load(outputs[0]), np.load(outputs[1]))
    assert np.load(tmp_path / "run0.labels.npy").tolist() == sorted(np.load(tmp_path / "run0.labels.npy").tolist())
