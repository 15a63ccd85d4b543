"""Data sets: CUB-200-2011, Cars-196, Stanford Online Products (standard layouts), any ImageFolder-layout
collection, sklearn's digits and their entangled sub-classes."""

from typing import Any, Optional

from torch.utils.data import Dataset

from .cars196 import Cars196
from .cub200 import CUB200
from .digits import Digits
from .entangled_digits import EntangledDigits
from .image_folder import ImageFolder
from .image_list_dataset import ImageListDataset
from .stanford_online_products import StanfordOnlineProducts
from .transforms import ImageTransform, test_transform, train_transform

DATASETS = {"digits": Digits, "entangled-digits": EntangledDigits, "cub": CUB200, "cars": Cars196,
            "sop": StanfordOnlineProducts, "image-folder": ImageFolder}
DEFAULT_IMAGE_SIZES = {"digits": 16, "entangled-digits": 16, "cub": 224, "cars": 224, "sop": 224, "image-folder": 224}
# The data sets built in memory, without a root folder.
BUILT_IN_DATASETS = ("digits", "entangled-digits")
# The keyword arguments build_dataset passes on, per data set that takes any.
DATASET_OPTIONS = {"entangled-digits": ("entanglement", "subclasses", "pattern_seed")}


def build_dataset(name: str, root: Optional[str] = None, split: str = "test",
                  image_size: Optional[int] = None, **options: Any) -> Dataset:
    """A data set by name (a key of :data:`DATASETS`); ``root`` is required except for the built-in ones (digits,
    entangled-digits). ``options`` go to the data sets that take them (:data:`DATASET_OPTIONS`: entangled-digits'
    ``entanglement``, ``subclasses`` and ``pattern_seed``); any other is an error."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid: {sorted(DATASETS)}")
    accepted = DATASET_OPTIONS.get(name, ())
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"the {name!r} data set takes no option {', '.join(unknown)}; it takes: "
                         f"{', '.join(accepted) if accepted else 'none'}")
    image_size = DEFAULT_IMAGE_SIZES[name] if image_size is None else image_size
    if name in BUILT_IN_DATASETS:
        return DATASETS[name](split=split, image_size=image_size, **options)
    if root is None:
        raise ValueError(f"the {name!r} data set needs root= (--data-root): the folder of its standard layout")
    return DATASETS[name](root, split=split, image_size=image_size)


__all__ = ["CUB200", "Cars196", "StanfordOnlineProducts", "Digits", "EntangledDigits", "ImageFolder",
           "ImageListDataset", "ImageTransform", "train_transform", "test_transform", "build_dataset", "DATASETS",
           "DATASET_OPTIONS", "BUILT_IN_DATASETS"]
