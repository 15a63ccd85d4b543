"""Real handwritten digits from scikit-learn (no download), as a zero-shot retrieval set."""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..validation import check_number

__all__ = ["Digits", "DIGIT_CLASSES"]

DIGIT_CLASSES = tuple(range(10))
DIGIT_PIXEL_MAX = 16.0


class Digits(Dataset):
    """sklearn's 1,797 8x8 digits, class-disjoint split (train 0-4, test 5-9), scaled to [0, 1] and upsampled
    bilinearly to ``image_size``; items are ((1, s, s) tensor, label)."""

    def __init__(self, split: str = "train", image_size: int = 16,
                 train_classes: Sequence[int] = (0, 1, 2, 3, 4)) -> None:
        from sklearn.datasets import load_digits

        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        check_number("image_size", image_size, minimum=1, integer=True)
        if not set(train_classes) < set(DIGIT_CLASSES):
            raise ValueError(f"train_classes must be a proper subset of 0-9, got {train_classes!r}")
        data = load_digits()
        targets = torch.as_tensor(data.target)
        in_train = torch.isin(targets, torch.tensor(list(train_classes)))
        keep = in_train if split == "train" else ~in_train
        images = torch.as_tensor(data.images, dtype=torch.float32)[keep].unsqueeze(1) / DIGIT_PIXEL_MAX
        self.images = F.interpolate(images, size=image_size, mode="bilinear", align_corners=False).clamp(0, 1)
        self.labels = targets[keep].long()
        self.classes = len(torch.unique(self.labels))
        self.split, self.image_size = split, image_size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])
