"""SPC2RandomMiner: robrank's ``spc2-random`` triplets, the selection of its EST and ACT defenses."""

from __future__ import annotations

from typing import Tuple

import torch

from .spc2_miner import SPC2Miner

__all__ = ["SPC2RandomMiner"]


class SPC2RandomMiner(SPC2Miner):
    """One triplet per same-class pair of an SPC-2 batch: anchor 2i, positive 2i + 1, negative uniform among the
    rows of other labels (robrank ``losses/miner.py`` ``spc2-random``, used by EST and ACT). Vectorised over anchors.

    Args:
        seed: seed of the miner's own generator (None: torch's global RNG). Its state is in ``state_dict()``.
        **kwargs: PML miner arguments (``distance``, ``collect_stats``); the distance only enters the statistics.
    """

    def select(
        self, anchors: torch.Tensor, same_label: torch.Tensor, other_label: torch.Tensor, distances: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        return anchors + 1, self.uniform_choice(other_label)
