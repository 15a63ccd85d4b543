"""Data sets: CUB-200-2011, Cars-196, Stanford Online Products (standard layouts), any ImageFolder-layout
collection and sklearn's digits."""

from typing import Optional

from torch.utils.data import Dataset

from .cars196 import Cars196
from .cub200 import CUB200
from .digits import Digits
from .image_folder import ImageFolder
from .image_list_dataset import ImageListDataset
from .stanford_online_products import StanfordOnlineProducts
from .transforms import ImageTransform, test_transform, train_transform

DATASETS = {"digits": Digits, "cub": CUB200, "cars": Cars196, "sop": StanfordOnlineProducts,
            "image-folder": ImageFolder}
DEFAULT_IMAGE_SIZES = {"digits": 16, "cub": 224, "cars": 224, "sop": 224, "image-folder": 224}


def build_dataset(name: str, root: Optional[str] = None, split: str = "test",
                  image_size: Optional[int] = None) -> Dataset:
    """A data set by name (a key of :data:`DATASETS`); ``root`` is required except for digits."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid: {sorted(DATASETS)}")
    image_size = DEFAULT_IMAGE_SIZES[name] if image_size is None else image_size
    if name == "digits":
        return Digits(split=split, image_size=image_size)
    if root is None:
        raise ValueError(f"the {name!r} data set needs root= (--data-root): the folder of its standard layout")
    return DATASETS[name](root, split=split, image_size=image_size)


__all__ = ["CUB200", "Cars196", "StanfordOnlineProducts", "Digits", "ImageFolder", "ImageListDataset", "ImageTransform",
           "train_transform", "test_transform", "build_dataset", "DATASETS"]
