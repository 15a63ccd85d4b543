"""SPC2Sampler: batches of same-class pairs (rows 2i and 2i + 1 share a label), classes may repeat in a batch."""

from __future__ import annotations

from typing import Any, Dict, Iterator, Sequence

import torch
from torch.utils.data import Sampler

__all__ = ["SPC2Sampler", "PAIR_SIZE"]

PAIR_SIZE = 2


class SPC2Sampler(Sampler[int]):
    """Index sampler of SPC-2 batches ("samples per class 2", robrank's and the released CA-TRIDE's batches).

    Every pass shuffles each class's items, cuts them into pairs (an odd item out is left for the next pass's
    draw), and shuffles the pairs; read in batches of an even size, rows 2i and 2i + 1 of every batch share a
    label. Unlike PML's ``MPerClassSampler(m=2)``, a batch may hold several pairs of one class, so data sets with
    fewer than batch_size / 2 classes (digits: 5 training classes) still get SPC-2 batches.

    Args:
        labels: one label per item of the data set.
        seed: seeds the sampler's own generator (its state is in :meth:`state_dict`).
    """

    def __init__(self, labels: Sequence[Any], *, seed: int = 0) -> None:
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or len(labels) == 0:
            raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {tuple(labels.shape)}")
        self.class_members = [torch.nonzero(labels == label).squeeze(1) for label in torch.unique(labels)]
        if not any(len(members) >= PAIR_SIZE for members in self.class_members):
            raise ValueError("SPC2Sampler needs at least one class with two items to form a same-class pair")
        self.generator = torch.Generator().manual_seed(seed)
        self.num_pairs = sum(len(members) // PAIR_SIZE for members in self.class_members)

    def __len__(self) -> int:
        return self.num_pairs * PAIR_SIZE

    def __iter__(self) -> Iterator[int]:
        pairs = []
        for members in self.class_members:
            usable = len(members) // PAIR_SIZE * PAIR_SIZE
            shuffled = members[torch.randperm(len(members), generator=self.generator)][:usable]
            pairs.append(shuffled.view(-1, PAIR_SIZE))
        pairs = torch.cat(pairs)
        order = torch.randperm(len(pairs), generator=self.generator)
        return iter(pairs[order].flatten().tolist())

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
