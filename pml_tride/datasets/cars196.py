"""Cars-196 with the zero-shot split: classes 1-98 train, 99-196 test (reference doc section 3.5)."""

from __future__ import annotations

import os
from typing import List, Tuple

from .image_list_dataset import ImageListDataset, require_file

__all__ = ["Cars196"]

TRAIN_CLASSES = 98


class Cars196(ImageListDataset):
    """Stanford Cars; labels are the 1-based class ids of ``cars_annos.mat`` (the test flag is ignored)."""

    LAYOUT = """cars/
  cars_annos.mat      struct array 'annotations' with fields relative_im_path, bbox_x1, bbox_y1, bbox_x2,
                      bbox_y2, class (1-196), test
  car_ims/000001.jpg
  ..."""

    def read_index(self) -> List[Tuple[str, int]]:
        from scipy.io import loadmat

        annotations_file = require_file(os.path.join(self.root, "cars_annos.mat"), self.LAYOUT)
        try:
            annotations = loadmat(annotations_file)["annotations"][0]
        except Exception as error:
            raise ValueError(
                f"{annotations_file}: not a cars_annos.mat with an 'annotations' array ({error})"
            ) from error
        samples = []
        for number, entry in enumerate(annotations, start=1):
            try:
                path, class_number = str(entry["relative_im_path"][0]), int(entry["class"][0][0])
            except (ValueError, IndexError, KeyError) as error:
                raise ValueError(f"{annotations_file}: annotation {number} is malformed ({error})") from error
            if (class_number <= TRAIN_CLASSES) == (self.split == "train"):
                samples.append((path, class_number))
        return samples
