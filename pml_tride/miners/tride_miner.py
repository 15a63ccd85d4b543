"""TrideMiner: semi-hard triplet mining with the shrinking band of CA-TRIDE (Appendix C, Eq. 32)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from ..collapseness import dissimilarity
from ..schedules import SCHEDULES, check_epoch, semi_hard_band
from ..validation import check_choice, check_number
from .seeded_miner import SeededMiner
from .spc2_miner import spc2_anchor_rows

__all__ = ["TrideMiner", "ANCHOR_MODES"]

# "all": every image with a positive and a negative; "spc2": the first image of each same-class pair of an SPC-2
# batch (rows 2i, with row 2i + 1 its positive), as the released miner.
ANCHOR_MODES = ("all", "spc2")


class TrideMiner(SeededMiner):
    """Semi-hard triplets d(a,p) < d(a,n) < d(a,p) + eta with eta following the epoch schedule.

    ``schedule="paper"``: eta = margin (1 - (e / 2E)^2) (Eq. 32); ``"reference"``: margin (1 - e / 2E)^2 (the
    released miner). With ``anchors="all"`` every embedding with a positive and a negative is an anchor and each
    draw's positive is uniform among its positives; with ``anchors="spc2"`` the batch must be SPC-2 (rows 2i and
    2i + 1 of one class, as PML's ``MPerClassSampler(m=2)`` yields) and the anchors are the even rows, each with
    the next row as its positive: one triplet per pair (56 per 112 images), as the released code. For each anchor
    and each of ``triplets_per_anchor`` draws the negative is uniform among the negatives inside the band; when
    none is in the band, a uniformly random negative (the released code's fallback, counted in the
    ``num_fallback_negatives`` statistic). Vectorised over anchors.

    Args:
        margin: eta_0, the band width at epoch 0.
        schedule: "paper" or "reference".
        triplets_per_anchor: draws per anchor.
        anchors: "all" or "spc2" (see above).
        seed: seed of the miner's own generator (None: torch's global RNG). Its state is in ``state_dict()``.
        **kwargs: PML miner arguments (``distance``, ``collect_stats``). A similarity s (``is_inverted``) is mined
            on 1 - s (:func:`pml_tride.collapseness.dissimilarity`): the band is s(a, p) - eta < s(a, n) < s(a, p).
    """

    def __init__(
        self,
        margin: float = 0.2,
        schedule: str = "paper",
        triplets_per_anchor: int = 1,
        seed: Optional[int] = None,
        anchors: str = "all",
        **kwargs: Any,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        check_number("margin", margin, minimum=0, above=True)
        check_choice("schedule", schedule, SCHEDULES)
        check_number("triplets_per_anchor", triplets_per_anchor, minimum=1, integer=True)
        check_choice("anchors", anchors, ANCHOR_MODES)
        self.margin, self.schedule, self.triplets_per_anchor = margin, schedule, triplets_per_anchor
        self.anchors = anchors
        self.epoch, self.total_epochs = 0, 1
        self.add_to_recordable_attributes(list_of_names=["margin"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=["eta", "num_fallback_negatives", "pos_pair_dist", "neg_pair_dist"], is_stat=True
        )

    def set_epoch(self, epoch: int, total_epochs: int) -> None:
        """Set the 0-based epoch of the band schedule."""
        check_epoch(epoch, total_epochs)
        self.epoch, self.total_epochs = epoch, total_epochs

    @property
    def current_eta(self) -> float:
        return semi_hard_band(self.epoch, self.total_epochs, eta0=self.margin, schedule=self.schedule)

    def get_extra_state(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "total_epochs": self.total_epochs, **super().get_extra_state()}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        self.epoch, self.total_epochs = state["epoch"], state["total_epochs"]
        super().set_extra_state(state)

    @staticmethod
    def _spc2_anchors(labels: torch.Tensor, ref_labels: torch.Tensor) -> torch.Tensor:
        """The even rows of an SPC-2 batch; raises unless rows 2i and 2i + 1 share a label."""
        if ref_labels is not labels:
            raise ValueError("TrideMiner(anchors='spc2') mines within one SPC-2 batch; ref_emb is not supported")
        return spc2_anchor_rows(labels, "TrideMiner(anchors='spc2')")

    def mine(self, embeddings, labels, ref_emb, ref_labels) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        distances = self.distance(embeddings, ref_emb)
        same_label = labels[:, None] == ref_labels[None, :]
        positive_mask = same_label.clone()
        if ref_labels is labels:
            positive_mask.fill_diagonal_(False)
        negative_mask = ~same_label
        has_negative = negative_mask.any(dim=1)
        if self.anchors == "spc2":
            anchors = self._spc2_anchors(labels, ref_labels)
            anchors = anchors[has_negative[anchors]]
            fixed_positives: Optional[torch.Tensor] = anchors + 1
        else:
            anchors = torch.nonzero(positive_mask.any(dim=1) & has_negative).squeeze(1)
            fixed_positives = None
        eta = self.current_eta
        positive_mask, negative_mask = positive_mask[anchors], negative_mask[anchors]
        anchor_distances = dissimilarity(distances[anchors], self.distance)
        rows = torch.arange(len(anchors), device=distances.device)
        triplets, fallbacks = [], 0
        for _ in range(self.triplets_per_anchor):
            positives = self.uniform_choice(positive_mask) if fixed_positives is None else fixed_positives
            ap = anchor_distances[rows, positives][:, None]
            band = negative_mask & (anchor_distances > ap) & (anchor_distances < ap + eta)
            in_band = band.any(dim=1)
            negatives = self.uniform_choice(torch.where(in_band[:, None], band, negative_mask))
            fallbacks += int((~in_band).sum())
            triplets.append((anchors, positives, negatives))
        anchor_idx, positive_idx, negative_idx = (torch.cat(column) for column in zip(*triplets))
        if self.collect_stats:
            self.eta, self.num_fallback_negatives = eta, fallbacks
            if len(anchor_idx) > 0:
                self.pos_pair_dist = distances[anchor_idx, positive_idx].mean().item()
                self.neg_pair_dist = distances[anchor_idx, negative_idx].mean().item()
        return anchor_idx, positive_idx, negative_idx
