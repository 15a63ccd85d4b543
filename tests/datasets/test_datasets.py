import numpy as np
import pytest
import torch
from PIL import Image

from pml_tride.datasets import CUB200, Cars196, Digits, StanfordOnlineProducts, build_dataset
from pml_tride.datasets import test_transform as make_test_transform


def jpeg(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(path, "JPEG")


def cub_tree(root):
    classes = [1, 2, 100, 101, 102, 200]
    lines, labels = [], []
    image_id = 1
    for class_id in classes:
        for k in range(2):
            relative = f"{class_id:03d}.Bird_{class_id}/Bird_{class_id}_{k}.jpg"
            jpeg(root / "images" / relative, image_id)
            lines.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {class_id}")
            image_id += 1
    (root / "images.txt").write_text("\n".join(lines) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    return root


def cars_tree(root):
    from scipy.io import savemat

    dtype = [("relative_im_path", "O"), ("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"),
             ("class", "O"), ("test", "O")]
    classes = [1, 98, 99, 196]
    records = np.zeros((1, 2 * len(classes)), dtype=dtype)
    for index, class_id in enumerate(np.repeat(classes, 2)):
        relative = f"car_ims/{index + 1:06d}.jpg"
        jpeg(root / relative, index)
        records[0, index] = (relative, np.array([[1]]), np.array([[1]]), np.array([[10]]), np.array([[10]]),
                             np.array([[class_id]], dtype=np.uint8), np.array([[index % 2]], dtype=np.uint8))
    savemat(root / "cars_annos.mat", {"annotations": records, "class_names": np.array([["a", "b"]], dtype=object)})
    return root


def sop_tree(root):
    for split, classes in (("train", [1, 2]), ("test", [11316, 11317])):
        lines = ["image_id class_id super_class_id path"]
        for k, class_id in enumerate(np.repeat(classes, 2)):
            relative = f"bicycle_final/{class_id}{k}_{k}.JPG"
            jpeg(root / relative, k + class_id)
            lines.append(f"{k + 1} {class_id} 1 {relative}")
        (root / f"Ebay_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_cub_split_labels_and_transforms(tmp_path):
    root = cub_tree(tmp_path / "CUB_200_2011")
    train, test = CUB200(str(root), "train", image_size=32), CUB200(str(root), "test", image_size=32)
    assert sorted(set(train.labels.tolist())) == [0, 1, 99] and sorted(set(test.labels.tolist())) == [100, 101, 199]
    image, label = train[0]
    assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1 and isinstance(label, int)
    assert torch.equal(test[0][0], test[0][0])  # the test transform is deterministic
    assert len(train) == len(test) == 6 and train.classes == 3


def test_cars_and_sop_layouts(tmp_path):
    cars = cars_tree(tmp_path / "cars")
    assert sorted(set(Cars196(str(cars), "train", 16).labels.tolist())) == [1, 98]
    assert sorted(set(Cars196(str(cars), "test", 16).labels.tolist())) == [99, 196]
    assert Cars196(str(cars), "test", 16)[0][0].shape == (3, 16, 16)
    sop = sop_tree(tmp_path / "Stanford_Online_Products")
    test = StanfordOnlineProducts(str(sop), "test", 16)
    assert sorted(set(test.labels.tolist())) == [11316, 11317] and test[3][0].shape == (3, 16, 16)


def test_errors_name_the_file_and_show_the_layout(tmp_path):
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
