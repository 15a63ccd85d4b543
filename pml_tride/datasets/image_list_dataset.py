"""Base class of the on-disk image data sets: a list of (path, label), PIL decoding, clear errors."""

from __future__ import annotations

import os
from typing import Callable, List, Optional, Tuple

import torch
from torch.utils.data import Dataset

from ..optional_imports import import_pillow
from ..validation import check_choice
from .transforms import ImageTransform

__all__ = ["ImageListDataset", "SPLITS", "require_file"]

SPLITS = ("train", "test")


def require_file(path: str, layout: str) -> str:
    """``path`` if it exists, else a FileNotFoundError naming it and showing the expected layout."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"missing {path!r}. Expected layout:\n{layout}")
    return path


class ImageListDataset(Dataset):
    """Images listed as (relative path, label); subclasses fill ``samples`` in ``read_index``.

    Args:
        root: the data set folder.
        split: "train" or "test" (the zero-shot class split).
        image_size: output side (the paper: 224).
        transform: overrides the paper's transform for the split (then it alone decides the size).
    """

    LAYOUT = ""

    def __init__(self, root: str, split: str = "train", image_size: int = 224,
                 transform: Optional[Callable] = None) -> None:
        check_choice("split", split, SPLITS)
        import_pillow()  # fail now, not in the first batch, when pillow is missing
        if root is None or not os.path.isdir(root):
            raise FileNotFoundError(f"data set folder not found: {root!r}. Expected layout:\n{self.LAYOUT}")
        self.root, self.split, self.image_size = root, split, image_size
        self.transform = transform if transform is not None else ImageTransform(image_size, train=split == "train")
        self.samples: List[Tuple[str, int]] = self.read_index()
        if not self.samples:
            raise ValueError(f"no {split} images found under {root!r}")
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.long)
        self.classes = len(torch.unique(self.labels))

    def read_index(self) -> List[Tuple[str, int]]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        relative, label = self.samples[index]
        path = os.path.join(self.root, relative)
        Image = import_pillow()
        try:
            with Image.open(require_file(path, self.LAYOUT)) as image:
                image.load()
                return self.transform(image), label
        except FileNotFoundError:
            raise
        except OSError as error:  # PIL's UnidentifiedImageError and truncated files are OSErrors
            raise ValueError(f"cannot decode image {path!r}: {error}") from error

    @staticmethod
    def parse_lines(path: str, fields: int, skip_header: bool = False):
        """Yield (line number, whitespace-split fields) of a text index; malformed lines raise a ValueError."""
        with open(path) as handle:
            for number, line in enumerate(handle, start=1):
                if (skip_header and number == 1) or not line.strip():
                    continue
                parts = line.split()
                if len(parts) != fields:
                    raise ValueError(f"{path}, line {number}: expected {fields} fields, got {len(parts)}: {line!r}")
                yield number, parts
