import pytest
import torch

from pml_tride.cli import main
from pml_tride.datasets import DATASETS, ImageFolder, build_dataset


def test_class_disjoint_split_by_sorted_class_name(image_folder_tree, tmp_path):
    root = image_folder_tree(tmp_path / "pets")
    train = ImageFolder(str(root), split="train", image_size=8)
    test = ImageFolder(str(root), split="test", image_size=8)
    assert train.class_names == ["ant", "bee", "cat", "dog", "emu"] and train.train_classes == 3
    # two JPEGs and the nested grey PNG per class; notes.txt is skipped
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and test.labels.tolist() == [3, 3, 3, 4, 4, 4]
    assert train.samples[0] == ("ant/ant_0.jpg", 0) and train.samples[2] == ("ant/more/ant_grey.png", 0)
    assert train.classes == 3 and test.classes == 2
    for dataset in (train, test):
        for index in range(len(dataset)):
            image, label = dataset[index]
            assert image.shape == (3, 8, 8) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert DATASETS["image-folder"] is ImageFolder
    built = build_dataset("image-folder", root=str(root), split="test", image_size=12)
    assert len(built) == 6 and built[0][0].shape == (3, 12, 12)


def test_train_classes_and_errors(image_folder_tree, tmp_path):
    root = image_folder_tree(tmp_path / "pets")
    assert ImageFolder(str(root), split="test", image_size=8, train_classes=1).labels.unique().tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="train_classes must be between 1 and 4"):
        ImageFolder(str(root), train_classes=5)
    with pytest.raises(ValueError, match="train_classes must be None or an integer"):
        ImageFolder(str(root), train_classes=1.5)
    single = tmp_path / "single"
    (single / "only").mkdir(parents=True)
    with pytest.raises(ValueError, match="1 class folder.*at least 2"):
        ImageFolder(str(single))
    with pytest.raises(FileNotFoundError, match="one sub-folder per class|class name"):
        ImageFolder(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="root"):
        build_dataset("image-folder", root=None)


def test_cli_trains_and_evaluates_on_an_image_folder(image_folder_tree, tmp_path):
    root = image_folder_tree(tmp_path / "pets", images_per_class=3)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "image-folder", "--data-root", str(root), "--model", "small_cnn",
                 "--image-size", "8", "--epochs", "1", "--steps", "1", "--batch-size", "6",
                 "--out", str(out)]) == 0
    report = tmp_path / "r.json"
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--dataset", "image-folder", "--data-root",
                 str(root), "--steps", "1", "--attacks", "GTT", "--out", str(report)]) == 0
    assert report.exists()
