"""CollapsenessReducer: the proximity-weighted mean distance d_w of CA-TRIDE (Eq. 6-7) as a PML reducer."""

from __future__ import annotations

from typing import Any, Optional

import torch
from pytorch_metric_learning.distances import BaseDistance
from pytorch_metric_learning.reducers import BaseReducer

from ..collapseness import (
    check_distance_shape,
    check_lam,
    check_weighting,
    dissimilarity,
    proximity_weighted_mean,
    weighted_collapseness,
    weighted_distance,
)
from ..validation import check_instance

__all__ = ["CollapsenessReducer"]


class CollapsenessReducer(BaseReducer):
    """Reduce pair distances to their proximity-weighted mean d_w (Eq. 6-7).

    For ``"pos_pair"``, ``"neg_pair"`` and ``"element"`` losses the values are taken to be pair distances and
    reduced with :func:`pml_tride.collapseness.weighted_distance`; ``weighted_mean`` does the same without
    PML's bookkeeping (``TrideLoss`` calls it inside its attack) and :meth:`collapseness` gives Eq. 5.

    ``"triplet"`` losses raise a ValueError: collapseness weights the anchor-positive and anchor-negative
    distances separately, each against its own minimum (Eq. 5-7), so one value per triplet cannot be reduced
    to C. Reduce the positive and negative pair distances, or call :func:`pml_tride.collapseness.collapseness`.

    Args:
        lam: attention factor lambda (Eq. 7); 0 gives the plain mean (hardness, Eq. 2).
        weighting: "paper" (Eq. 7, closer pairs weigh more) or "reference" (the released code's softmax).
        distance: the PML distance whose values are reduced (None: a distance). With a similarity
            (``is_inverted``, e.g. ``CosineSimilarity``) the values s are reduced as the dissimilarities 1 - s
            (:func:`pml_tride.collapseness.dissimilarity`), so d_w is that of 1 - s and C keeps its sign.
    """

    def __init__(
        self, lam: float = 10.0, weighting: str = "paper", distance: Optional[BaseDistance] = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        check_lam(lam)
        check_weighting(weighting)
        check_instance("distance", distance, BaseDistance, "a PML distance or similarity", optional=True)
        self.lam, self.weighting, self.distance = lam, weighting, distance
        self.add_to_recordable_attributes(list_of_names=["lam"], is_stat=False)
        self.add_to_recordable_attributes(name="weighted_distance", is_stat=True)

    def weighted_mean(self, values: torch.Tensor) -> torch.Tensor:
        """d_w of ``values`` (Eq. 6-7). Checks the shape only, not finiteness (that would read ``values`` back to
        the host; ``TrideLoss`` calls this in every attack step and the PGD engine checks the attack once)."""
        check_distance_shape(values, "values")
        return proximity_weighted_mean(dissimilarity(values, self.distance), self.lam, self.weighting)

    def collapseness(self, ap_dists: torch.Tensor, an_dists: torch.Tensor) -> torch.Tensor:
        """C = d_w(A, P) - d_w(A, N) (Eq. 5), shapes checked only (see :meth:`weighted_mean`)."""
        check_distance_shape(ap_dists, "ap_dists")
        check_distance_shape(an_dists, "an_dists")
        return weighted_collapseness(dissimilarity(ap_dists, self.distance), dissimilarity(an_dists, self.distance),
                                     self.lam, self.weighting)

    def _reduce(self, losses: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        if len(losses) == 0:
            return self.zero_loss(embeddings)
        reduced = weighted_distance(losses, self.lam, self.weighting, self.distance)
        if self.collect_stats:
            self.weighted_distance = reduced.item()
        return reduced

    def element_reduction(self, losses, loss_indices, embeddings, labels):
        return self._reduce(losses, embeddings)

    def pos_pair_reduction(self, losses, loss_indices, embeddings, labels):
        return self._reduce(losses, embeddings)

    def neg_pair_reduction(self, losses, loss_indices, embeddings, labels):
        return self._reduce(losses, embeddings)

    def triplet_reduction(self, losses, loss_indices, embeddings, labels):
        raise ValueError(
            "CollapsenessReducer cannot reduce 'triplet' losses: collapseness weights the anchor-positive and "
            "anchor-negative distances separately (Eq. 5-7), so a single value per triplet cannot be reduced to C. "
            "Reduce 'pos_pair' and 'neg_pair' distances, or use pml_tride.collapseness.collapseness(ap, an)"
        )
