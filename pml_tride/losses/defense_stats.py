"""What a defense records: the statistics every defense fills on each call when ``collect_stats``
(:data:`BASE_STAT_NAMES`), the baseline diagnostics of its ``diagnosed_roles`` and its own, all named in
``stat_names`` (PML record-keeping, ``TrideTrainer``'s history)."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from ..collapseness import mean_pairwise_distance, separability
from .perturbation_set import AttackedBatch
from .triplet_diagnostics import record_triplet_diagnostics

__all__ = ["DefenseStats", "BASE_STAT_NAMES"]

# The statistics every defense records (when ``collect_stats``).
BASE_STAT_NAMES = ("pgd_steps", "num_perturbed", "max_perturbation", "embedding_shift", "separability",
                   "mean_distance", "pgd_forward_images", "pgd_backward_images")


class DefenseStats:
    """Mixin of :class:`~pml_tride.losses.AdversarialTripletLoss`: records its statistics (registered with
    :meth:`~pml_tride.losses.AdversarialInputLoss.register_stats`). Reads the loss's injected ``distance``
    (through ``pair_distances``) and ``diagnosed_roles``."""

    diagnosed_roles: Optional[Tuple[str, ...]]

    def record_clean_diagnostics(
        self, embeddings: torch.Tensor, ap_dists: torch.Tensor, an_dists: torch.Tensor
    ) -> None:
        """Separability and mean pairwise distance of the clean batch (Section 4.3), as stats."""
        with torch.no_grad():
            mean_distance = mean_pairwise_distance(embeddings, self.distance)
            self.mean_distance = mean_distance.item()
            self.separability = separability(ap_dists, an_dists, mean_distance).item()

    def record_stats(self, batch: AttackedBatch, adversarial_triplet: Sequence[torch.Tensor]) -> None:
        """Fill :data:`BASE_STAT_NAMES`, the baseline diagnostics of ``diagnosed_roles``, and the defense's own
        (:meth:`record_defense_stats`)."""
        embeddings, perturbation, result = batch.embeddings, batch.perturbation, batch.result
        with torch.no_grad():
            anchors, positives, negatives = (embeddings[rows] for rows in batch.triplets)
            clean = (self.pair_distances(anchors, positives), self.pair_distances(anchors, negatives))
            adversarial = (self.pair_distances(adversarial_triplet[0], adversarial_triplet[1]),
                           self.pair_distances(adversarial_triplet[0], adversarial_triplet[2]))
            self.record_clean_diagnostics(embeddings, *clean)
            self.pgd_steps = result.steps_taken
            self.num_perturbed = len(perturbation)
            self.max_perturbation = (
                result.adversarial - batch.inputs[perturbation.source_rows]
            ).abs().max().item()
            self.embedding_shift = self.pair_distances(
                batch.adversarial, embeddings[perturbation.source_rows]
            ).mean().item()
            if self.diagnosed_roles is not None:
                record_triplet_diagnostics(self, (anchors, positives, negatives), adversarial_triplet, clean,
                                           adversarial, self.diagnosed_roles)
            self.record_defense_stats(batch, clean, adversarial)

    def record_defense_stats(
        self, batch: AttackedBatch, clean: Tuple[torch.Tensor, torch.Tensor],
        adversarial: Tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        """The defense's own statistics (no-grad), given the (d(a, p), d(a, n)) distances of the clean and the
        adversarial triplets; nothing by default."""
