"""sklearn's digits split into fine-grained sub-classes that differ only by a faint fixed pattern: a controllable
stand-in for entangled, fine-grained classes (every class within an L-inf ball of radius ``entanglement`` of its
siblings)."""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
from torch.utils.data import Dataset

from .digits import Digits

__all__ = ["EntangledDigits", "MIN_SUBCLASSES", "MAX_ENTANGLEMENT"]

MIN_SUBCLASSES = 2
# At a = 0.5 every digit would be squeezed to the constant 0.5 (see EntangledDigits): no digit left.
MAX_ENTANGLEMENT = 0.5


def _check_arguments(entanglement: float, subclasses: int, pattern_seed: int) -> None:
    if (isinstance(entanglement, bool) or not isinstance(entanglement, (int, float)) or not math.isfinite(entanglement)
            or not 0 < entanglement < MAX_ENTANGLEMENT):
        raise ValueError(f"entanglement (the pattern's L-inf amplitude, in pixel units) must be a number in "
                         f"(0, {MAX_ENTANGLEMENT}), got {entanglement!r}")
    if isinstance(subclasses, bool) or not isinstance(subclasses, int) or subclasses < MIN_SUBCLASSES:
        raise ValueError(f"subclasses (sub-classes per digit) must be an integer >= {MIN_SUBCLASSES}, "
                         f"got {subclasses!r}")
    if isinstance(pattern_seed, bool) or not isinstance(pattern_seed, int):
        raise ValueError(f"pattern_seed must be an integer, got {pattern_seed!r}")


def rank_within_class(labels: torch.Tensor) -> torch.Tensor:
    """The position of every item among the items of its class, in data set order (0, 1, 2, ... per class)."""
    ranks = torch.empty_like(labels)
    for label in torch.unique(labels):
        members = (labels == label).nonzero().squeeze(1)
        ranks[members] = torch.arange(len(members))
    return ranks


def sign_patterns(subclasses: int, image_size: int, pattern_seed: int) -> torch.Tensor:
    """``subclasses`` pairwise different (1, s, s) masks of -1 and +1, drawn from ``pattern_seed``."""
    generator = torch.Generator().manual_seed(pattern_seed)
    draws = torch.randint(0, 2, (subclasses, 1, image_size, image_size), generator=generator)
    patterns = draws.float() * 2 - 1
    flat = patterns.flatten(1)
    if len(torch.unique(flat, dim=0)) < subclasses:
        raise ValueError(f"{subclasses} sub-classes need pairwise different patterns, which pattern_seed "
                         f"{pattern_seed} does not draw at image_size {image_size}: take a larger image_size or "
                         "another pattern_seed")
    return patterns


class EntangledDigits(Dataset):
    """sklearn's digits (see :class:`Digits`), each digit split into ``subclasses`` sub-classes by a fixed pattern.

    Construction, for the base image x in [0, 1] of :class:`Digits` and a = ``entanglement``:

    * x is first mapped to x_base = a + (1 - 2a) x, in [a, 1 - a];
    * sub-class k adds a * P_k, with P_k a fixed mask of -1 and +1 drawn from ``pattern_seed`` (the same masks in
      both splits): x_k = x_base + a P_k, which stays in [0, 1], so the final clamp to [0, 1] only removes
      rounding and every pixel changes by exactly a (|x_k - x_base| = a everywhere);
    * every base image appears once, in one sub-class: the j-th image of a digit (in the order of :class:`Digits`)
      goes to sub-class j mod K. The sub-classes of a digit are balanced (to one image) and hold different
      handwriting samples drawn alike, so the pattern is the only evidence that tells them apart.

    Labels are digit * K + k (``base_labels`` holds the digit). The split is zero-shot by digit as in
    :class:`Digits` (train 0-4, test 5-9): the test classes are unseen digits times the same K patterns.

    What it is for: the sub-classes of a digit lie within an L-inf distance 2a of each other, and x_base is within
    a of all of them, so an adversary with an L-inf budget eps >= a can erase the class evidence entirely (map any
    x_k to x_base) and one with eps >= 2a can turn any sub-class into another. It is a controllable stand-in for
    fine-grained classes, not a model of real fine-grained data. Three levels of R@1 read it: chance (about
    1 / (digits x K), the embedding carries nothing), about 1 / K (the digit is kept, the pattern ignored: the
    nearest neighbour is a same-digit image of a random sub-class) and near 100 (the pattern is used).
    """

    def __init__(self, split: str = "train", image_size: int = 16, entanglement: float = 16 / 255,
                 subclasses: int = 4, pattern_seed: int = 0,
                 train_classes: Sequence[int] = (0, 1, 2, 3, 4)) -> None:
        _check_arguments(entanglement, subclasses, pattern_seed)
        digits = Digits(split=split, image_size=image_size, train_classes=train_classes)
        self.patterns = sign_patterns(subclasses, image_size, pattern_seed)
        self.base_images = entanglement + (1 - 2 * entanglement) * digits.images
        self.subclass = rank_within_class(digits.labels) % subclasses
        self.images = (self.base_images + entanglement * self.patterns[self.subclass]).clamp(0, 1)
        self.base_labels = digits.labels
        self.labels = digits.labels * subclasses + self.subclass
        self.classes = len(torch.unique(self.labels))
        self.split, self.image_size = split, image_size
        self.entanglement, self.subclasses, self.pattern_seed = entanglement, subclasses, pattern_seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])
