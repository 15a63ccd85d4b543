"""ClassPairSampler: SPC-2 batches (rows 2i and 2i + 1 of one class) for data sets of any number of classes."""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional, Sequence, Union

import torch
from torch.utils.data import Sampler

__all__ = ["ClassPairSampler"]

PAIR = 2


class ClassPairSampler(Sampler[int]):
    """Data set indices in same-class pairs: positions 2i and 2i + 1 hold two different images of one class.

    PML's ``MPerClassSampler(m=2)`` gives SPC-2 batches only when the data set has at least batch_size / 2 classes
    (CUB: 100); this sampler gives them for any number of classes (sklearn's digits: 5) by drawing each pair's class
    uniformly, with replacement, among the classes with at least two images, then two distinct images of it
    uniformly. Any even batch size then keeps the pairs whole, as ``TrideMiner(anchors="spc2")`` (one triplet per
    pair, the released code's 56 per 112 images) needs. ``length`` (default: the data set size) is rounded down to
    an even number. The sampler's generator is seeded by ``seed`` and saved by :meth:`state_dict`, so a resumed
    :class:`~pml_tride.TrideTrainer` draws the same batches.
    """

    def __init__(self, labels: Union[Sequence[int], torch.Tensor], length: Optional[int] = None,
                 seed: int = 0) -> None:
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.numel() == 0:
            raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {tuple(labels.shape)}")
        classes, counts = torch.unique(labels, return_counts=True)
        eligible = classes[counts >= PAIR]
        if len(eligible) < PAIR:
            raise ValueError(f"same-class pairs with negatives need at least 2 classes of at least 2 images, got "
                             f"{len(eligible)}")
        length = len(labels) if length is None else length
        if isinstance(length, bool) or not isinstance(length, int) or length < PAIR:
            raise ValueError(f"length must be an integer >= 2, got {length!r}")
        self.members = [torch.nonzero(labels == label).flatten() for label in eligible]
        self.sizes = torch.tensor([len(members) for members in self.members])
        self.length = length - length % PAIR
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        pairs = self.length // PAIR
        chosen = torch.randint(len(self.members), (pairs,), generator=self.generator)
        sizes = self.sizes[chosen]
        first = (torch.rand(pairs, generator=self.generator) * sizes).long()
        # the second image: uniform among the class's other images (an offset of 1 .. size - 1 from the first)
        second = (first + 1 + (torch.rand(pairs, generator=self.generator) * (sizes - 1)).long()) % sizes
        for index in range(pairs):
            members = self.members[int(chosen[index])]
            yield int(members[first[index]])
            yield int(members[second[index]])

    def state_dict(self) -> Dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
