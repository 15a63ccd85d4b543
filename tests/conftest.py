import numpy as np
import pytest
import torch
from PIL import Image

from tiny_models import tiny_cnn
from triplet_loops import HAND_IMAGES, HAND_LABELS, Identity, hand_indices

# Real 8x8 digits of the digits_batch fixture: this many classes, two images each (an SPC-2 batch).
DIGITS_BATCH_CLASSES = 5


@pytest.fixture(autouse=True)
def _deterministic_single_thread():
    """Tiny models run fastest on one thread, and seeds make every test reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


# Toy models and batches shared by the tests of losses, miners and reducers.
@pytest.fixture
def tiny_model():
    """Conv-BN-ReLU-pool-linear on 1-channel images (tests/tiny_models.py), in train mode."""
    return tiny_cnn()


@pytest.fixture
def identity_model():
    """Embedding = flattened pixels (tests/triplet_loops.py): every distance can be re-derived by hand."""
    return Identity()


@pytest.fixture
def hand_batch():
    """The hand-made batch of tests/triplet_loops.py: (images (6, 3) float64 in [0, 1], labels, indices_tuple of
    its five triplets)."""
    return HAND_IMAGES.clone(), HAND_LABELS.clone(), hand_indices()


@pytest.fixture(scope="session")
def digits_batch():
    """Real handwritten digits (scikit-learn's 8x8 set, no download), two images of each of the first classes in
    SPC-2 order (rows 2i and 2i + 1 of one class): (images (10, 1, 8, 8) in [0, 1], labels)."""
    from pml_tride.datasets import Digits

    data = Digits("train", image_size=8)
    rows = [int(row) for label in range(DIGITS_BATCH_CLASSES)
            for row in torch.nonzero(data.labels == label).squeeze(1)[:2]]
    return data.images[rows].clone(), data.labels[rows].clone()


# Miniature data set trees in the real on-disk layouts (tiny generated JPEGs).
def jpeg(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(path, "JPEG")


def _cub_tree(root):
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


def _cars_tree(root):
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


def _sop_tree(root):
    for split, classes in (("train", [1, 2]), ("test", [11316, 11317])):
        lines = ["image_id class_id super_class_id path"]
        for k, class_id in enumerate(np.repeat(classes, 2)):
            relative = f"bicycle_final/{class_id}{k}_{k}.JPG"
            jpeg(root / relative, k + class_id)
            lines.append(f"{k + 1} {class_id} 1 {relative}")
        (root / f"Ebay_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def _image_folder_tree(root, images_per_class=2):
    """Classes ant, bee, cat (train) and dog, emu (test) in unsorted creation order; JPEGs of 20x30, one grey PNG
    of another size in a nested folder, and a text file that is not an image."""
    for class_index, name in enumerate(("emu", "cat", "ant", "dog", "bee")):
        for k in range(images_per_class):
            jpeg(root / name / f"{name}_{k}.jpg", 10 * class_index + k)
        nested = root / name / "more" / f"{name}_grey.png"
        nested.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((7, 11), 40 * class_index, dtype=np.uint8), mode="L").save(nested)
        (root / name / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def image_folder_tree():
    """Builds an ImageFolder tree: five classes (ant, bee, cat train; dog, emu test), images of mixed sizes."""
    return _image_folder_tree


@pytest.fixture
def cub_tree():
    """Builds a CUB_200_2011 tree: classes 1, 2, 100 (train) and 101, 102, 200 (test), two images each."""
    return _cub_tree


@pytest.fixture
def cars_tree():
    """Builds a cars/ tree with a generated cars_annos.mat: classes 1, 98 (train) and 99, 196 (test)."""
    return _cars_tree


@pytest.fixture
def sop_tree():
    """Builds a Stanford_Online_Products tree with Ebay_train.txt / Ebay_test.txt."""
    return _sop_tree
