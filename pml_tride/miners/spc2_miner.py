"""SPC2Miner: base of the miners that take their anchors from SPC-2 batches, as robrank's ``spc2-*`` miners."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from ..collapseness import dissimilarity
from .seeded_miner import SeededMiner

__all__ = ["SPC2Miner", "spc2_anchor_rows"]


def spc2_anchor_rows(labels: torch.Tensor, miner_name: str) -> torch.Tensor:
    """The anchor rows of an SPC-2 batch: the even rows 2i, each followed by a row 2i + 1 of its class (the batch
    order of PML's ``MPerClassSampler(labels, m=2)``). Raises, naming ``miner_name``, unless the batch is even and
    every row 2i and row 2i + 1 share a label."""
    if len(labels) % 2:
        raise ValueError(f"{miner_name} needs an even batch of same-class pairs, got {len(labels)} rows")
    even = torch.arange(0, len(labels), 2, device=labels.device)
    mismatched = torch.nonzero(labels[even] != labels[even + 1]).squeeze(1)
    if len(mismatched) > 0:
        row = int(even[mismatched[0]])
        raise ValueError(
            f"{miner_name} needs an SPC-2 batch, rows 2i and 2i+1 of one class (e.g. PML's "
            f"MPerClassSampler(labels, m=2)); rows {row} and {row + 1} have labels "
            f"{int(labels[row])} and {int(labels[row + 1])}"
        )
    return even


class SPC2Miner(SeededMiner):
    """One triplet per same-class pair of an SPC-2 batch: anchor 2i (robrank's ``spc2-*`` miners).

    An anchor without any other-label row in the batch gets no triplet (robrank then draws any row, which can give
    a same-class "negative"). Subclasses choose the positive and the negative in :meth:`select`, drawing with
    :meth:`uniform_choice` from the miner's own generator.

    Args:
        seed: seed of the miner's own generator (None: torch's global RNG). Its state is in ``state_dict()``.
        **kwargs: PML miner arguments (``distance``, ``collect_stats``). A similarity (``is_inverted``) is compared
            as the dissimilarity 1 - s (:func:`pml_tride.collapseness.dissimilarity`): larger = closer.
    """

    def __init__(self, seed: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        self.add_to_recordable_attributes(list_of_names=["pos_pair_dist", "neg_pair_dist"], is_stat=True)

    def select(
        self, anchors: torch.Tensor, same_label: torch.Tensor, other_label: torch.Tensor, distances: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Positives and negatives (batch rows) for ``anchors`` (rows 2i that have a negative), given for each
        anchor the masks of the rows of its label (the anchor itself excluded) and of the other labels, and its
        distances to every row, all (len(anchors), batch)."""
        raise NotImplementedError

    def mine(self, embeddings, labels, ref_emb, ref_labels) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if ref_emb is not embeddings:
            raise ValueError(f"{type(self).__name__} mines within one SPC-2 batch; ref_emb is not supported")
        anchors = spc2_anchor_rows(labels, type(self).__name__)
        other_label = labels[anchors][:, None] != labels[None, :]
        has_negative = other_label.any(dim=1)
        anchors, other_label = anchors[has_negative], other_label[has_negative]
        rows = torch.arange(len(anchors), device=anchors.device)
        same_label = ~other_label
        same_label[rows, anchors] = False
        distances = self.distance(embeddings[anchors], embeddings)
        positives, negatives = self.select(anchors, same_label, other_label, dissimilarity(distances, self.distance))
        if self.collect_stats and len(anchors) > 0:
            self.pos_pair_dist = distances[rows, positives].mean().item()
            self.neg_pair_dist = distances[rows, negatives].mean().item()
        return anchors, positives, negatives
