import numpy as np
import pytest
import torch
from PIL import Image

from pml_tride.datasets import CUB200, Cars196, Digits, StanfordOnlineProducts, build_dataset
from pml_tride.datasets import test_transform as make_test_transform


def test_cub_split_labels_and_transforms(cub_tree, tmp_path):
    root = cub_tree(tmp_path / "CUB_200_2011")
    train, test = CUB200(str(root), "train", image_size=32), CUB200(str(root), "test", image_size=32)
    assert sorted(set(train.labels.tolist())) == [0, 1, 99] and sorted(set(test.labels.tolist())) == [100, 101, 199]
    image, label = train[0]
    assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1 and isinstance(label, int)
    assert torch.equal(test[0][0], test[0][0])  # the test transform is deterministic
    assert len(train) == len(test) == 6 and train.classes == 3


def test_cars_and_sop_layouts(cars_tree, sop_tree, tmp_path):
    cars = cars_tree(tmp_path / "cars")
    assert sorted(set(Cars196(str(cars), "train", 16).labels.tolist())) == [1, 98]
    assert sorted(set(Cars196(str(cars), "test", 16).labels.tolist())) == [99, 196]
    assert Cars196(str(cars), "test", 16)[0][0].shape == (3, 16, 16)
    sop = sop_tree(tmp_path / "Stanford_Online_Products")
    test = StanfordOnlineProducts(str(sop), "test", 16)
    assert sorted(set(test.labels.tolist())) == [11316, 11317] and test[3][0].shape == (3, 16, 16)


def test_errors_name_the_file_and_show_the_layout(cub_tree, sop_tree, tmp_path):
    root = cub_tree(tmp_path / "CUB_200_2011")
    (root / "images.txt").unlink()
    with pytest.raises(FileNotFoundError, match="images.txt") as error:
        CUB200(str(root))
    assert "image_class_labels.txt" in str(error.value)  # the expected layout is shown
    root = cub_tree(tmp_path / "again" / "CUB_200_2011")
    (root / "images.txt").write_text("1 a.jpg extra\n")
    with pytest.raises(ValueError, match="line 1"):
        CUB200(str(root))
    sop = sop_tree(tmp_path / "sop")
    dataset = StanfordOnlineProducts(str(sop), "train", 16)
    broken = sop / dataset.samples[0][0]
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=broken.name):
        dataset[0]
    with pytest.raises(FileNotFoundError, match="not found"):
        CUB200(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="split"):
        CUB200(str(root), split="val")


def test_digits_split_and_range():
    train, test = Digits("train", image_size=16), Digits("test", image_size=16)
    assert set(train.labels.tolist()) == {0, 1, 2, 3, 4} and set(test.labels.tolist()) == {5, 6, 7, 8, 9}
    assert len(train) + len(test) == 1797
    image, _ = test[0]
    assert image.shape == (1, 16, 16) and image.min() >= 0 and image.max() <= 1
    with pytest.raises(ValueError, match="image_size"):
        Digits(image_size=0)


def test_build_dataset():
    assert isinstance(build_dataset("digits", image_size=8), Digits)
    with pytest.raises(ValueError, match="unknown data set"):
        build_dataset("mnist")
    with pytest.raises(ValueError, match="root"):
        build_dataset("cub")


def test_transform_sizes():
    image = Image.fromarray(np.zeros((50, 80, 3), dtype=np.uint8))
    assert make_test_transform(24)(image).shape == (3, 24, 24)
