"""SPC2SoftHardMiner: robrank's ``spc2-softhard`` triplets, the source triplets of its HM defense."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from ..validation import check_bool
from .spc2_miner import SPC2Miner

__all__ = ["SPC2SoftHardMiner"]


class SPC2SoftHardMiner(SPC2Miner):
    """One soft-hard triplet per same-class pair of an SPC-2 batch, anchor 2i (robrank ``losses/miner.py``
    ``spc2-softhard``, the source miner of HM's ``ghmetsmi`` configuration). With d the distance of the anchor to
    each row of the batch:

    * negative: uniform among the other-label rows closer to the anchor than its farthest same-label row,
      d(a, n) < max_{p: y_p = y_a} d(a, p); if there is none, uniform among all other-label rows;
    * positive: uniform among the same-label rows farther from the anchor than its nearest other-label row,
      d(a, p) > min_{n: y_n != y_a} d(a, n); if there is none, uniform among the same-label rows (with two images
      per class, row 2i + 1).

    Both rules look at the anchor's whole row of distances, so the negative does not depend on the positive drawn.
    Fallbacks are counted in the ``num_fallback_negatives`` and ``num_fallback_positives`` statistics.
    Vectorised over anchors.

    Args:
        anchor_as_positive: robrank draws the fallback positive among all same-label rows, the anchor itself
            included, which gives degenerate triplets (a, a, n); True reproduces that, False (default) draws among
            the other same-label rows only.
        seed: seed of the miner's own generator (None: torch's global RNG). Its state is in ``state_dict()``.
        **kwargs: PML miner arguments (``distance``, ``collect_stats``). The distance must not be a similarity.
    """

    def __init__(self, anchor_as_positive: bool = False, seed: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        check_bool("anchor_as_positive", anchor_as_positive)
        self.anchor_as_positive = anchor_as_positive
        self.add_to_recordable_attributes(
            list_of_names=["num_fallback_negatives", "num_fallback_positives"], is_stat=True
        )

    def select(
        self, anchors: torch.Tensor, same_label: torch.Tensor, other_label: torch.Tensor, distances: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(len(anchors), device=anchors.device)
        inf = torch.full_like(distances, float("inf"))
        farthest_positive = torch.where(same_label, distances, -inf).amax(dim=1, keepdim=True)
        nearest_negative = torch.where(other_label, distances, inf).amin(dim=1, keepdim=True)
        soft_negatives = other_label & (distances < farthest_positive)
        soft_positives = same_label & (distances > nearest_negative)
        has_soft_negative, has_soft_positive = soft_negatives.any(dim=1), soft_positives.any(dim=1)
        fallback_positives = same_label.clone()
        if self.anchor_as_positive:
            fallback_positives[rows, anchors] = True
        negatives = self.uniform_choice(torch.where(has_soft_negative[:, None], soft_negatives, other_label))
        positives = self.uniform_choice(torch.where(has_soft_positive[:, None], soft_positives, fallback_positives))
        if self.collect_stats:
            self.num_fallback_negatives = int((~has_soft_negative).sum())
            self.num_fallback_positives = int((~has_soft_positive).sum())
        return positives, negatives
