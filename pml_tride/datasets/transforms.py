"""The paper's image transforms with PIL and torch only (no torchvision), scaled to any image size.

Train: resize to (256, 256) -> random crop 224 -> random horizontal flip -> tensor in [0, 1].
Test: resize to (256, 256) -> center crop 224 -> tensor. No mean/std: it lives in the model.
For ``image_size`` s the resize side is round(256 s / 224).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..optional_imports import import_pillow
from ..validation import check_number

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["ImageTransform", "train_transform", "test_transform", "RESIZE_RATIO"]

RESIZE_RATIO = 256 / 224
FLIP_PROBABILITY = 0.5
PIXEL_MAX = 255.0


class ImageTransform:
    """PIL image -> (3, s, s) float tensor in [0, 1]; random crop and flip when ``train`` (torch's RNG)."""

    def __init__(self, image_size: int = 224, train: bool = False) -> None:
        check_number("image_size", image_size, minimum=1, integer=True)
        self.image_size, self.train = image_size, train
        self.resize = max(image_size, round(image_size * RESIZE_RATIO))

    def __call__(self, image: "PILImage") -> torch.Tensor:
        Image = import_pillow()
        image = image.convert("RGB").resize((self.resize, self.resize), Image.BILINEAR)
        margin = self.resize - self.image_size
        if self.train:
            left, top = (int(v) for v in torch.randint(0, margin + 1, (2,)))
        else:
            left = top = margin // 2
        image = image.crop((left, top, left + self.image_size, top + self.image_size))
        if self.train and torch.rand(()) < FLIP_PROBABILITY:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        array = np.asarray(image, dtype=np.float32) / PIXEL_MAX
        return torch.from_numpy(array.copy()).permute(2, 0, 1)


def train_transform(image_size: int = 224) -> ImageTransform:
    return ImageTransform(image_size, train=True)


def test_transform(image_size: int = 224) -> ImageTransform:
    return ImageTransform(image_size, train=False)
