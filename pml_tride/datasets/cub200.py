"""CUB-200-2011 with the zero-shot split: classes 1-100 train, 101-200 test (reference doc section 3.5)."""

from __future__ import annotations

import os
from typing import List, Tuple

from .image_list_dataset import ImageListDataset, require_file

__all__ = ["CUB200"]

TRAIN_CLASSES = 100


class CUB200(ImageListDataset):
    """Caltech-UCSD Birds 200-2011; labels are the 0-based class ids (test labels are 100-199)."""

    LAYOUT = """CUB_200_2011/
  images.txt                  <image id> <relative path>
  image_class_labels.txt      <image id> <class id 1-200>
  images/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg
  ..."""

    def read_index(self) -> List[Tuple[str, int]]:
        paths_file = require_file(os.path.join(self.root, "images.txt"), self.LAYOUT)
        labels_file = require_file(os.path.join(self.root, "image_class_labels.txt"), self.LAYOUT)
        paths = {}
        for _, (image_id, path) in self.parse_lines(paths_file, 2):
            paths[image_id] = path
        samples = []
        for number, (image_id, class_id) in self.parse_lines(labels_file, 2):
            if image_id not in paths or not class_id.isdigit():
                raise ValueError(
                    f"{labels_file}, line {number}: unknown image id {image_id!r} or bad class {class_id!r}"
                )
            class_number = int(class_id)
            if (class_number <= TRAIN_CLASSES) == (self.split == "train"):
                samples.append((os.path.join("images", paths[image_id]), class_number - 1))
        return samples
