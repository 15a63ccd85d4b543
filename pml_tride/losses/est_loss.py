"""ESTLoss: Embedding-Shifted Triplet (Zhou et al., ECCV 2020), robrank's EST defense, as a PML loss."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from pytorch_metric_learning.miners import BaseMiner
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import nn

from ..validation import check_instance
from .adversarial_triplet_loss import AdversarialTripletLoss, AttackedBatch, Objective, PerturbationSet, Triplets
from .triplet_diagnostics import ROLES

__all__ = ["ESTLoss"]


class ESTLoss(AdversarialTripletLoss):
    """Embedding-Shifted Triplet: L_EST = L_T(a~, p~, n~) with x~ = phi(x + r*), r* = argmax_r d(phi(x + r), phi(x))
    (as restated by Zhou and Patel, CVPR 2022, arXiv:2203.01439; robrank defenses/est.py, attack
    ``AdvRank.embShift``).

    Every image a triplet uses (anchor, positive and negative) is perturbed to move its own embedding as far as
    possible from its clean embedding: the attack minimises -mean_j d(f(x'_j), f(x_j)) over the perturbed images,
    f(x_j) embedded once in eval mode. The model is then trained on the triplet loss of the adversarial
    embeddings of all three members.

    What is trained on (the re-mining decision):

    * ``miner=None`` (default, the PML drop-in): the caller's triplets (``indices_tuple``, mined on the clean
      embeddings) are kept; only their members are perturbed.
    * ``miner=<PML miner>`` (robrank's semantics, which re-mines spc2-random triplets on the adversarial
      embeddings, est.py:63-68): every image of the batch is perturbed, and the triplets are mined by ``miner`` on
      the (detached) adversarial embeddings with the batch labels; the caller's ``indices_tuple`` is then ignored.

    Args:
        model: maps images in ``input_range`` to embeddings; held by reference (see the base class).
        miner: re-mine on the adversarial embeddings (see above); needs ``perturb="unique"``.
        **kwargs: the shared arguments (see :class:`AdversarialTripletLoss`); defaults here: steps=32,
            progressive_alpha=False (robrank's constant step size); margin 0.2, eps 8/255, alpha 1/255 as robrank.
            ``perturb``: "unique" (one delta per image, robrank's EST) or "per_triplet" (one copy per triplet and
            role).
    """

    default_overrides = MappingProxyType({"steps": 32, "progressive_alpha": False})
    diagnosed_roles = ROLES

    def __init__(self, model: nn.Module, *, miner: Optional[BaseMiner] = None, **kwargs: Any) -> None:
        check_instance("miner", miner, BaseMiner, "a pytorch_metric_learning BaseMiner", optional=True)
        super().__init__(model, **kwargs)
        if miner is not None and self.perturb != "unique":
            raise ValueError(
                f"perturb must be 'unique' when a miner re-mines the adversarial batch (every image is perturbed "
                f"once), got perturb={self.perturb!r}"
            )
        self.miner = miner

    # ----------------------------------------------------------------- the adversarial objective
    def embedding_shift_loss(self, adversarial: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """-mean_j d(f(x'_j), f(x_j)): minimised, it maximises the embedding shift (robrank advrank_loss.py).

        With a similarity as the distance, d is the Euclidean distance of the embeddings as the similarity compares
        them (``F.pairwise_distance``, as robrank's ``embShift``): 1 - s is stationary at the clean embedding, where
        the attack starts, so its first step would have no gradient and the attack could not move."""
        if self.distance.is_inverted:
            return -F.pairwise_distance(self.normalized(adversarial), self.normalized(clean)).mean()
        return -self.pair_distances(adversarial, clean).mean()

    def _objective(self, inputs: torch.Tensor, perturbation: PerturbationSet) -> Objective:
        unique_rows, positions = torch.unique(perturbation.source_rows, return_inverse=True)
        clean = self.constant_embeddings(inputs[unique_rows])[positions]
        return lambda adversarial: self.embedding_shift_loss(adversarial, clean)

    def _perturb(self, embeddings, inputs, triplets, perturbation) -> AttackedBatch:
        return self.attacked_batch(embeddings, inputs, triplets, perturbation,
                                   lambda: self._objective(inputs, perturbation))

    # ----------------------------------------------------------------- one mini-batch
    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> Dict[str, Dict[str, Any]]:
        if self.miner is None:
            return super().compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if labels is None:
            raise ValueError("ESTLoss(miner=...) re-mines the adversarial batch and needs labels")
        inputs = self._resolve_inputs(embeddings).to(embeddings.device)
        perturbation = PerturbationSet((torch.arange(len(embeddings), device=embeddings.device),), "unique")
        batch = self._perturb(embeddings, inputs, None, perturbation)
        mined = self.miner(batch.adversarial.detach(), labels)
        triplets = lmu.convert_to_triplets(mined, labels, t_per_anchor=self.triplets_per_anchor)
        triplets = tuple(c_f.to_device(index, embeddings) for index in triplets)
        if len(triplets[0]) == 0:  # under DDP the backward still runs through this rank's training forward
            return self.zero_losses_through(batch.adversarial) if self._wrapped else self.zero_losses()
        batch = dataclasses.replace(batch, triplets=triplets)
        return self.adversarial_loss_dict(batch, tuple(batch.adversarial[rows] for rows in triplets))

    def compute_adversarial_loss(
        self, embeddings: torch.Tensor, inputs: torch.Tensor, triplets: Triplets
    ) -> Dict[str, Dict[str, Any]]:
        batch = self._perturb(embeddings, inputs, triplets, PerturbationSet(triplets, self.perturb))
        return self.adversarial_loss_dict(
            batch, tuple(batch.adversarial[rows] for rows in batch.perturbation.role_positions)
        )
