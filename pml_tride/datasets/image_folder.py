"""Any labelled image collection in torchvision's ImageFolder layout (one sub-folder per class), split by class."""

from __future__ import annotations

import os
from typing import Callable, List, Optional, Tuple

from .image_list_dataset import ImageListDataset

__all__ = ["ImageFolder", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MIN_CLASSES = 2


class ImageFolder(ImageListDataset):
    """Images under ``root/<class name>/**`` with a zero-shot (class-disjoint) split by sorted class name.

    The classes are sorted by name; the first ``train_classes`` of them (default: the first half, rounded up)
    form the train split, the others the test split, as the standard CUB/Cars split by class id. Labels are the
    class's position in the sorted list (test labels follow the train labels). Images of any size and mode are
    converted to RGB and resized, cropped (and, for train, flipped) to ``image_size`` by
    :class:`~pml_tride.datasets.ImageTransform`. Files whose extension is not an image extension are ignored.

    Args:
        root: the folder holding one sub-folder per class.
        split: "train" or "test".
        image_size: output side.
        train_classes: how many of the sorted classes are train classes (at least 1, at most all but 1).
        transform: overrides the split's transform.
    """

    LAYOUT = """root/
  <class name A>/<any name>.jpg   (png, bmp, gif, webp, tif, ppm, pgm; sub-folders allowed)
  <class name B>/...
  ...  (at least two classes; the first half by sorted name trains, the rest tests)"""

    def __init__(self, root: str, split: str = "train", image_size: int = 224, train_classes: Optional[int] = None,
                 transform: Optional[Callable] = None) -> None:
        if train_classes is not None and (isinstance(train_classes, bool) or not isinstance(train_classes, int)):
            raise ValueError(f"train_classes must be None or an integer, got {train_classes!r}")
        self.requested_train_classes = train_classes
        self.class_names: List[str] = []
        super().__init__(root, split=split, image_size=image_size, transform=transform)

    def read_index(self) -> List[Tuple[str, int]]:
        names = sorted(entry.name for entry in os.scandir(self.root) if entry.is_dir())
        if len(names) < MIN_CLASSES:
            raise ValueError(f"{self.root!r} has {len(names)} class folder(s); the class-disjoint split needs at "
                             f"least {MIN_CLASSES}. Expected layout:\n{self.LAYOUT}")
        train_count = (len(names) + 1) // 2 if self.requested_train_classes is None else self.requested_train_classes
        if not 1 <= train_count <= len(names) - 1:
            raise ValueError(f"train_classes must be between 1 and {len(names) - 1} for the {len(names)} classes "
                             f"of {self.root!r}, got {train_count}")
        self.class_names = names
        self.train_classes = train_count
        chosen = range(train_count) if self.split == "train" else range(train_count, len(names))
        samples = []
        for label in chosen:
            class_root = os.path.join(self.root, names[label])
            for folder, subfolders, files in os.walk(class_root):
                subfolders.sort()
                for name in sorted(files):
                    if name.lower().endswith(IMAGE_EXTENSIONS):
                        samples.append((os.path.relpath(os.path.join(folder, name), self.root), label))
        return samples
