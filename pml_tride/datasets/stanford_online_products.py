"""Stanford Online Products: Ebay_train.txt / Ebay_test.txt (reference doc section 3.5)."""

from __future__ import annotations

import os
from typing import List, Tuple

from .image_list_dataset import ImageListDataset, require_file

__all__ = ["StanfordOnlineProducts"]


class StanfordOnlineProducts(ImageListDataset):
    """SOP; labels are the class ids of the index files (train and test classes are disjoint)."""

    LAYOUT = """Stanford_Online_Products/
  Ebay_train.txt      header line, then: image_id class_id super_class_id path
  Ebay_test.txt
  bicycle_final/111085122871_0.JPG
  ..."""

    def read_index(self) -> List[Tuple[str, int]]:
        index_file = require_file(os.path.join(self.root, f"Ebay_{self.split}.txt"), self.LAYOUT)
        samples = []
        for number, (_, class_id, _, path) in self.parse_lines(index_file, 4, skip_header=True):
            if not class_id.isdigit():
                raise ValueError(f"{index_file}, line {number}: class id {class_id!r} is not a number")
            samples.append((path, int(class_id)))
        return samples
